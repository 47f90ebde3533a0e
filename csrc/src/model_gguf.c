/*
 * model_gguf.c - a Qwen3Model from a `qwen3` GGUF file: maps the qwen3.* metadata keys
 * onto the header, the tensors onto the weights, and builds the tokenizer from the
 * tokenizer.ggml.* lists. The container itself is gguf.c's; every name read from it is
 * in the table below.
 *
 * Weights: F32, F16 and BF16 matrices are used in place from the file map and run by the
 * unquantised kernels (kernels_float.h). Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K matrices are
 * used in place too, in their ggml blocks (kernels.h, Qwen3BlockMatrix), with int8
 * activations in groups of 32. So is Q4_0 (fp16 scale, 16 bytes of 4-bit values biased by
 * 8), which the x86 and ARM kernel tiers run with SIMD: a Q4_0 file stays at 4.5 bits per
 * weight in memory. Q8_0 (per 32 values: fp16 scale, 32 int8) is converted at load, without
 * loss, to the qwen3.c Q8 layout with group size 32 and fp32 scales, which every int8 kernel tier
 * runs, at the price of a copy (1.125 bytes per weight): for Q8_0 that is 6% more than the
 * file, and its tuned Q8 kernels decode about 1.5x faster per CPU second than the block
 * kernels do on Q8_0 blocks. Both forms give the same bits
 * (docs/numerics.md#ggml-block-weights). Other ggml types are refused, naming the tensor
 * and the type.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "error.h"
#include "gguf.h"
#include "kernels_float.h"
#include "model.h"
#include "tokenizer.h"

#if !defined(_WIN32)
#include <sys/mman.h>
#include <unistd.h>
#endif

/* ====================================================================================
 * The names this loader reads, in one place (docs/formats.md#gguf-metadata-keys and
 * docs/formats.md#gguf-tensor-names)
 * ================================================================================== */

typedef enum {
    KEY_ARCHITECTURE,    /* string, must be "qwen3" */
    KEY_DIM,             /* required */
    KEY_HIDDEN_DIM,      /* required */
    KEY_N_LAYERS,        /* required */
    KEY_N_HEADS,         /* required */
    KEY_N_KV_HEADS,      /* default: n_heads */
    KEY_HEAD_DIM,        /* default: dim / n_heads */
    KEY_VALUE_DIM,       /* default: head_dim; must equal it */
    KEY_ROPE_DIM,        /* default: head_dim; must equal it (no partial rotary) */
    KEY_CONTEXT_LENGTH,  /* required */
    KEY_ROPE_THETA,      /* default: QWEN3_ROPE_THETA */
    KEY_RMS_EPS,         /* default: QWEN3_RMS_EPS */
    KEY_TOKENIZER_MODEL, /* string, must be "gpt2" */
    KEY_TOKENS,          /* array of strings */
    KEY_MERGES,          /* array of strings "left right" */
    KEY_TOKEN_TYPES,     /* optional array of i32, one per token */
    KEY_COUNT
} Key;

static const char* const key_names[KEY_COUNT] = {
    [KEY_ARCHITECTURE] = "general.architecture",
    [KEY_DIM] = "qwen3.embedding_length",
    [KEY_HIDDEN_DIM] = "qwen3.feed_forward_length",
    [KEY_N_LAYERS] = "qwen3.block_count",
    [KEY_N_HEADS] = "qwen3.attention.head_count",
    [KEY_N_KV_HEADS] = "qwen3.attention.head_count_kv",
    [KEY_HEAD_DIM] = "qwen3.attention.key_length",
    [KEY_VALUE_DIM] = "qwen3.attention.value_length",
    [KEY_ROPE_DIM] = "qwen3.rope.dimension_count",
    [KEY_CONTEXT_LENGTH] = "qwen3.context_length",
    [KEY_ROPE_THETA] = "qwen3.rope.freq_base",
    [KEY_RMS_EPS] = "qwen3.attention.layer_norm_rms_epsilon",
    [KEY_TOKENIZER_MODEL] = "tokenizer.ggml.model",
    [KEY_TOKENS] = "tokenizer.ggml.tokens",
    [KEY_MERGES] = "tokenizer.ggml.merges",
    [KEY_TOKEN_TYPES] = "tokenizer.ggml.token_type",
};

/* Whole-model tensors. Shapes are (rows, cols), GGUF lists them innermost first. */
#define TENSOR_EMBED "token_embd.weight"       /* (vocab_size, dim); its rows give vocab_size */
#define TENSOR_FINAL_NORM "output_norm.weight" /* (dim) */
#define TENSOR_CLASSIFIER "output.weight"      /* (vocab_size, dim); absent when tied */

/* The tensors of layer l, "blk.<l>.<suffix>.weight", in the order they are loaded. */
typedef enum {
    LAYER_ATTN_NORM, /* (dim) */
    LAYER_FFN_NORM,  /* (dim) */
    LAYER_Q_NORM,    /* (head_dim) */
    LAYER_K_NORM,    /* (head_dim) */
    LAYER_Q,         /* (n_heads * head_dim, dim) */
    LAYER_K,         /* (n_kv_heads * head_dim, dim) */
    LAYER_V,         /* (n_kv_heads * head_dim, dim) */
    LAYER_OUTPUT,    /* (dim, n_heads * head_dim) */
    LAYER_GATE,      /* (hidden_dim, dim) */
    LAYER_DOWN,      /* (dim, hidden_dim) */
    LAYER_UP,        /* (hidden_dim, dim) */
    LAYER_TENSOR_COUNT
} LayerTensor;

/* Qwen3-MoE (arch "qwen3moe", llama.cpp's names from gguf-py/gguf/constants.py): every
 * "qwen3.*" key above is read as "qwen3moe.*", plus the expert keys; a block with a
 * ffn_gate_inp tensor is sparse and has the three 3-D expert tensors instead of
 * ffn_gate / ffn_down / ffn_up (docs/formats.md#qwen3-moe-gguf). */
#define ARCH_MOE "qwen3moe"
#define KEY_MOE_EXPERTS "qwen3moe.expert_count"
#define KEY_MOE_USED "qwen3moe.expert_used_count"
#define KEY_MOE_HIDDEN "qwen3moe.expert_feed_forward_length"
/* bool, optional: false when the k weights are not renormalised (HF norm_topk_prob
 * false); absent means true, as llama.cpp's qwen3moe always renormalises. */
#define KEY_MOE_NORM "qwen3moe.expert_weights_norm"
#define SUFFIX_MOE_ROUTER "ffn_gate_inp"     /* [dim, n_experts] F32 */
#define SUFFIX_MOE_GATE "ffn_gate_exps"      /* [dim, expert_hidden, n_experts] */
#define SUFFIX_MOE_UP "ffn_up_exps"          /* [dim, expert_hidden, n_experts] */
#define SUFFIX_MOE_DOWN "ffn_down_exps"      /* [expert_hidden, dim, n_experts] */

static const char* const layer_suffixes[LAYER_TENSOR_COUNT] = {
    [LAYER_ATTN_NORM] = "attn_norm", [LAYER_FFN_NORM] = "ffn_norm", [LAYER_Q_NORM] = "attn_q_norm",
    [LAYER_K_NORM] = "attn_k_norm",  [LAYER_Q] = "attn_q",          [LAYER_K] = "attn_k",
    [LAYER_V] = "attn_v",            [LAYER_OUTPUT] = "attn_output", [LAYER_GATE] = "ffn_gate",
    [LAYER_DOWN] = "ffn_down",       [LAYER_UP] = "ffn_up",
};

/* ====================================================================================
 * Loader
 * ================================================================================== */

struct Qwen3GgufModel {
    void** allocs; /* (n_allocs) converted weights and copies, qwen3_aligned_alloc'd */
    size_t n_allocs;
    size_t cap_allocs;
};

void qwen3_gguf_model_free(Qwen3GgufModel* g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_allocs; i++) qwen3_aligned_free(g->allocs[i]);
    free(g->allocs);
    free(g);
}

typedef struct {
    Qwen3Model* m;
    Qwen3Gguf g;
    const char* path;
    int any_q8; /* some matrix runs on the int8 path */
    int moe;    /* arch qwen3moe: keys under "qwen3moe." */
} Loader;

/* A key's name in this file: "qwen3.x" becomes "qwen3moe.x" in a Qwen3-MoE file. */
static const char* key_name(const Loader* L, Key id, char* buf, size_t cap) {
    const char* key = key_names[id];
    if (!L->moe || strncmp(key, "qwen3.", 6) != 0) return key;
    snprintf(buf, cap, "%s.%s", ARCH_MOE, key + 6);
    return buf;
}

static void* owned_alloc(Loader* L, uint64_t bytes, const char* what) {
    Qwen3GgufModel* gm = L->m->gguf;
    if (gm->n_allocs == gm->cap_allocs) {
        const size_t cap = gm->cap_allocs ? gm->cap_allocs * 2 : 64;
        void** grown = (void**)realloc(gm->allocs, cap * sizeof *grown);
        if (!grown) return NULL;
        gm->allocs = grown;
        gm->cap_allocs = cap;
    }
    void* p = bytes <= (uint64_t)SIZE_MAX ? qwen3_aligned_alloc((size_t)bytes) : NULL;
    if (!p) {
        qwen3_error_set("out of memory allocating %llu bytes for %s of %s", (unsigned long long)bytes, what,
                        L->path);
        return NULL;
    }
    gm->allocs[gm->n_allocs++] = p;
    return p;
}

/* An integer key in [min, max]; `def` when absent and not required. */
static int32_t key_uint_named(Loader* L, const char* key, int required, uint32_t def, uint32_t min,
                              uint32_t max, uint32_t* out) {
    const Qwen3GgufKv* kv = qwen3_gguf_find_kv(&L->g, key);
    if (!kv) {
        if (required) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata lacks '%s'", L->path, key);
        *out = def;
        return QWEN3_OK;
    }
    int64_t v;
    if (qwen3_gguf_kv_int(&L->g, kv, &v) != QWEN3_OK) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' is a%s %s, expected an integer", L->path,
                          key, kv->type == QWEN3_GGUF_ARRAY || kv->type == QWEN3_GGUF_INT8 ? "n" : "",
                          qwen3_gguf_value_type_name(kv->type));
    }
    if (v < (int64_t)min || v > (int64_t)max) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' = %lld is outside [%u, %u]", L->path, key,
                          (long long)v, min, max);
    }
    *out = (uint32_t)v;
    return QWEN3_OK;
}

static int32_t key_uint(Loader* L, Key id, int required, uint32_t def, uint32_t min, uint32_t max,
                        uint32_t* out) {
    char buf[96];
    return key_uint_named(L, key_name(L, id, buf, sizeof buf), required, def, min, max, out);
}

/* A positive finite float key; `def` when absent. */
static int32_t key_float(Loader* L, Key id, float def, float* out) {
    char buf[96];
    const char* key = key_name(L, id, buf, sizeof buf);
    const Qwen3GgufKv* kv = qwen3_gguf_find_kv(&L->g, key);
    if (!kv) {
        *out = def;
        return QWEN3_OK;
    }
    double v;
    if (qwen3_gguf_kv_float(&L->g, kv, &v) != QWEN3_OK) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' is a %s, expected a float", L->path, key,
                          qwen3_gguf_value_type_name(kv->type));
    }
    if (!(v > 0.0) || !isfinite(v) || v > 3.0e38) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' = %g must be positive and finite", L->path,
                          key, v);
    }
    *out = (float)v;
    return QWEN3_OK;
}

/* A string key (bytes in the map). */
static int32_t key_string(Loader* L, Key id, const uint8_t** s, uint32_t* len) {
    const char* key = key_names[id];
    const Qwen3GgufKv* kv = qwen3_gguf_find_kv(&L->g, key);
    if (!kv) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata lacks '%s'", L->path, key);
    if (qwen3_gguf_kv_string(&L->g, kv, s, len) != QWEN3_OK) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' is a %s, expected a string", L->path, key,
                          qwen3_gguf_value_type_name(kv->type));
    }
    return QWEN3_OK;
}

/* The tensor `name` with exactly the dims (innermost first; trailing dims must be 1). */
static int32_t find_shaped(Loader* L, const char* name, uint32_t n_dims, uint64_t d0, uint64_t d1,
                           const Qwen3GgufTensor** out) {
    const Qwen3GgufTensor* t = qwen3_gguf_find_tensor(&L->g, name);
    if (!t) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has no tensor '%s'", L->path, name);
    const uint64_t want[QWEN3_GGUF_MAX_DIMS] = {d0, n_dims > 1 ? d1 : 1, 1, 1};
    for (uint32_t d = 0; d < QWEN3_GGUF_MAX_DIMS; d++) {
        if (t->dims[d] != want[d]) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: GGUF tensor '%s' has shape [%llu, %llu, %llu, %llu] (innermost first), "
                              "expected [%llu, %llu]",
                              L->path, name, (unsigned long long)t->dims[0], (unsigned long long)t->dims[1],
                              (unsigned long long)t->dims[2], (unsigned long long)t->dims[3],
                              (unsigned long long)d0, (unsigned long long)want[1]);
        }
    }
    *out = t;
    return QWEN3_OK;
}

static int32_t cannot_run(Loader* L, const Qwen3GgufTensor* t, const char* name) {
    return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                      "%s: GGUF tensor '%s' has ggml type %u (%s), which this engine cannot run (it runs "
                      QWEN3_GGML_RUNNABLE_TYPES ")",
                      L->path, name, t->type, qwen3_ggml_type_name(t->type));
}

/* A norm weight of n values as fp32: a view when F32 and aligned, else a converted copy. */
static int32_t load_vector(Loader* L, const char* name, uint32_t n, const float** out) {
    const Qwen3GgufTensor* t;
    int32_t rc = find_shaped(L, name, 1, n, 1, &t);
    if (rc) return rc;
    const uint8_t* src = L->g.data + t->offset;
    if (t->type == QWEN3_GGML_F32 && ((uintptr_t)src & 3u) == 0) {
        *out = (const float*)(const void*)src;
        return QWEN3_OK;
    }
    if (t->type != QWEN3_GGML_F32 && t->type != QWEN3_GGML_F16 && t->type != QWEN3_GGML_BF16) {
        return cannot_run(L, t, name);
    }
    float* dst = (float*)owned_alloc(L, (uint64_t)n * 4, name);
    if (!dst) return QWEN3_ERR_OUT_OF_MEMORY;
    for (uint32_t i = 0; i < n; i++) {
        if (t->type == QWEN3_GGML_F32) {
            dst[i] = qwen3_read_f32le(src + 4 * (size_t)i);
        } else if (t->type == QWEN3_GGML_F16) {
            dst[i] = qwen3_f16_to_f32(qwen3_read_u16le(src + 2 * (size_t)i));
        } else {
            dst[i] = qwen3_bf16_to_f32(qwen3_read_u16le(src + 2 * (size_t)i));
        }
    }
    *out = dst;
    return QWEN3_OK;
}

/* The map's pages of a tensor that was converted are never read again: hand them back, so
 * the process holds the converted copy and not both (0.6B Q8_0: 1.33 GB resident -> about
 * 0.7 GB). A read-only private file map would re-read a page touched after all; the
 * anonymous copy of qwen3_file_map_to_huge_pages would read zeros there, so nothing may:
 * every pointer into such a tensor is replaced by one into its converted copy. */
static void release_pages(const uint8_t* p, uint64_t n) {
#if !defined(_WIN32)
    const long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0 || (ps & (ps - 1)) != 0) return;
    const uintptr_t page = (uintptr_t)ps;
    const uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a) (void)madvise((void*)a, b - a, MADV_DONTNEED);
#else
    (void)p;
    (void)n;
#endif
}

/* Q4_0 in place: the x86 and ARM block kernels have SIMD for it (see the top). */
#define Q4_0_WEIGHT QWEN3_WEIGHT_BLOCKS

/* The engine's weight type for a tensor's ggml type (BLOCKS for the block types of
 * kernels.h; Q8 for Q8_0, and Q4_0 where it is converted), or NOT_RUNNABLE. */
#define NOT_RUNNABLE UINT32_MAX
static uint32_t weight_type_of(const Qwen3GgufTensor* t) {
    switch (t ? t->type : QWEN3_GGML_F32) {
        case QWEN3_GGML_F32: return QWEN3_WEIGHT_F32;
        case QWEN3_GGML_F16: return QWEN3_WEIGHT_F16;
        case QWEN3_GGML_BF16: return QWEN3_WEIGHT_BF16;
        case QWEN3_GGML_Q8_0: return QWEN3_WEIGHT_Q8;
        case QWEN3_GGML_Q4_0: return Q4_0_WEIGHT;
        case QWEN3_GGML_Q4_1:
        case QWEN3_GGML_Q5_0:
        case QWEN3_GGML_Q5_1:
        case QWEN3_GGML_Q4_K:
        case QWEN3_GGML_Q5_K:
        case QWEN3_GGML_Q6_K: return QWEN3_WEIGHT_BLOCKS;
        default: return NOT_RUNNABLE;
    }
}

static int32_t convert_matrix(Loader* L, const char* name, const Qwen3GgufTensor* t, const uint8_t* src,
                              uint64_t bytes, uint32_t wtype, uint32_t rows, uint32_t cols, Qwen3Matrix* out);

/* A (rows, cols) matrix: float types and the block types of kernels.h in place (float
 * types copied only when misaligned for their element), Q8_0 converted to the Q8
 * layout with group 32 (see the top). */
static int32_t load_matrix(Loader* L, const char* name, uint32_t rows, uint32_t cols, Qwen3Matrix* out) {
    const Qwen3GgufTensor* t = qwen3_gguf_find_tensor(&L->g, name);
    /* the type first: its error says more than a shape's */
    const uint32_t wtype = weight_type_of(t);
    if (wtype == NOT_RUNNABLE) return cannot_run(L, t, name);
    int32_t rc = find_shaped(L, name, 2, cols, rows, &t);
    if (rc) return rc;
    return convert_matrix(L, name, t, L->g.data + t->offset, t->bytes, wtype, rows, cols, out);
}

/* The (rows, cols) matrix whose `bytes` bytes of type t->type start at src. */
static int32_t convert_matrix(Loader* L, const char* name, const Qwen3GgufTensor* t, const uint8_t* src,
                              uint64_t bytes, uint32_t wtype, uint32_t rows, uint32_t cols, Qwen3Matrix* out) {
    const uint64_t n = (uint64_t)rows * cols;
    if (wtype == QWEN3_WEIGHT_BLOCKS) {
        /* the parser checked that cols is a whole number of blocks and the bytes fit */
        const Qwen3BlockMatrix bm = {.data = src,
                                     .row_bytes = (size_t)(cols / qwen3_block_values(t->type)) *
                                                  qwen3_block_bytes(t->type),
                                     .type = t->type,
                                     .rows = rows,
                                     .cols = cols};
        *out = qwen3_matrix_blocks(bm);
        L->any_q8 = 1;
        return QWEN3_OK;
    }
    if (wtype != QWEN3_WEIGHT_Q8) {
        const uint32_t es = qwen3_weight_type_bytes(wtype);
        const void* data = src;
        if (((uintptr_t)src & (es - 1)) != 0) {
            void* copy = owned_alloc(L, bytes, name);
            if (!copy) return QWEN3_ERR_OUT_OF_MEMORY;
            memcpy(copy, src, (size_t)bytes);
            data = copy;
        }
        *out = qwen3_matrix_float(wtype, data, rows, cols);
        return QWEN3_OK;
    }
    /* cols is a multiple of 32 (the block check in the parser) */
    const uint64_t blocks = n / 32;
    int8_t* q = (int8_t*)owned_alloc(L, n, name);
    float* s = q ? (float*)owned_alloc(L, blocks * 4, name) : NULL;
    if (!s) return QWEN3_ERR_OUT_OF_MEMORY;
    if (t->type == QWEN3_GGML_Q8_0) {
        for (uint64_t b = 0; b < blocks; b++) {
            const uint8_t* blk = src + b * 34;
            s[b] = qwen3_f16_to_f32(qwen3_read_u16le(blk));
            memcpy(q + b * 32, blk + 2, 32);
        }
    } else {
        /* Q4_0: byte i holds value i in its low nibble and value i + 16 in its high one */
        for (uint64_t b = 0; b < blocks; b++) {
            const uint8_t* blk = src + b * 18;
            s[b] = qwen3_f16_to_f32(qwen3_read_u16le(blk));
            int8_t* dst = q + b * 32;
            for (int i = 0; i < 16; i++) {
                dst[i] = (int8_t)((blk[2 + i] & 0x0F) - 8);
                dst[i + 16] = (int8_t)((blk[2 + i] >> 4) - 8);
            }
        }
    }
    release_pages(src, bytes);
    const Qwen3Q8Matrix q8 = {.q = q, .s = s, .rows = rows, .cols = cols, .group_size = 32};
    *out = qwen3_matrix_q8(q8);
    L->any_q8 = 1;
    return QWEN3_OK;
}

static int32_t load_hparams(Loader* L) {
    const uint8_t* arch;
    uint32_t arch_len;
    int32_t rc = key_string(L, KEY_ARCHITECTURE, &arch, &arch_len);
    if (rc) return rc;
    L->moe = qwen3_gguf_bytes_equal(arch, arch_len, ARCH_MOE);
    if (!L->moe && !qwen3_gguf_bytes_equal(arch, arch_len, "qwen3")) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: GGUF general.architecture is '%s'; this engine runs only 'qwen3' (dense Qwen3) "
                          "and '" ARCH_MOE "' (Qwen3-MoE)",
                          L->path, qwen3_gguf_quote(arch, arch_len).s);
    }
    Qwen3Header* h = &L->m->header;
    memset(h, 0, sizeof *h);
    h->format = QWEN3_FORMAT_GGUF;
    if (!rc) rc = key_uint(L, KEY_DIM, 1, 0, 1, QWEN3_MAX_DIM, &h->dim);
    if (!rc) rc = key_uint(L, KEY_HIDDEN_DIM, 1, 0, 1, QWEN3_MAX_DIM, &h->hidden_dim);
    if (!rc) rc = key_uint(L, KEY_N_LAYERS, 1, 0, 1, QWEN3_MAX_LAYERS, &h->n_layers);
    if (!rc) rc = key_uint(L, KEY_N_HEADS, 1, 0, 1, QWEN3_MAX_HEADS, &h->n_heads);
    if (!rc) {
        rc = key_uint(L, KEY_N_KV_HEADS, 0, h->n_heads, 1, QWEN3_MAX_HEADS, &h->n_kv_heads);
    }
    if (!rc) {
        rc = key_uint(L, KEY_HEAD_DIM, 0, h->dim / h->n_heads, 1, QWEN3_MAX_HEAD_DIM,
                      &h->head_dim);
    }
    uint32_t v_len = 0, rope_dim = 0;
    if (!rc) rc = key_uint(L, KEY_VALUE_DIM, 0, h->head_dim, 1, QWEN3_MAX_HEAD_DIM, &v_len);
    if (!rc) rc = key_uint(L, KEY_ROPE_DIM, 0, h->head_dim, 1, QWEN3_MAX_HEAD_DIM, &rope_dim);
    if (!rc) rc = key_uint(L, KEY_CONTEXT_LENGTH, 1, 0, 1, QWEN3_MAX_SEQ_LEN, &h->seq_len);
    if (!rc) rc = key_float(L, KEY_ROPE_THETA, QWEN3_ROPE_THETA, &L->m->rope_theta);
    if (!rc) rc = key_float(L, KEY_RMS_EPS, QWEN3_RMS_EPS, &L->m->rms_eps);
    if (rc) return rc;
    if (v_len != h->head_dim) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "%s: GGUF value_length %u differs from key_length %u", L->path,
                          v_len, h->head_dim);
    }
    if (rope_dim != h->head_dim) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: GGUF rope.dimension_count %u differs from key_length %u (Qwen3 rotates whole "
                          "heads; partial rotary is not supported)",
                          L->path, rope_dim, h->head_dim);
    }
    if (h->n_heads % h->n_kv_heads != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF head_count %u is not a multiple of head_count_kv %u",
                          L->path, h->n_heads, h->n_kv_heads);
    }
    if (h->head_dim % 2 != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF key_length %u must be even for rotate-half RoPE", L->path,
                          h->head_dim);
    }
    if ((uint64_t)h->n_heads * h->head_dim > QWEN3_MAX_DIM) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF head_count * key_length = %llu exceeds the limit of %u",
                          L->path, (unsigned long long)h->n_heads * h->head_dim, QWEN3_MAX_DIM);
    }
    if (L->moe) {
        /* after the dense keys' checks, in the TS reader's order (gguf_model.ts readMoeKeys) */
        Qwen3MoeShape* moe = &L->m->moe;
        int32_t rc2 = key_uint_named(L, KEY_MOE_EXPERTS, 1, 0, 1, QWEN3_MAX_EXPERTS, &moe->n_experts);
        if (!rc2) rc2 = key_uint_named(L, KEY_MOE_USED, 1, 0, 1, moe->n_experts, &moe->n_used);
        if (!rc2) rc2 = key_uint_named(L, KEY_MOE_HIDDEN, 1, 0, 1, QWEN3_MAX_DIM, &moe->hidden_dim);
        if (rc2) return rc2;
        const Qwen3GgufKv* norm = qwen3_gguf_find_kv(&L->g, KEY_MOE_NORM);
        moe->norm_weights = 1;
        if (norm && norm->type != QWEN3_GGUF_BOOL) {
            return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' is a%s %s, expected a bool", L->path,
                              KEY_MOE_NORM, norm->type == QWEN3_GGUF_ARRAY || norm->type == QWEN3_GGUF_INT8 ? "n" : "",
                              qwen3_gguf_value_type_name(norm->type));
        }
        if (norm) moe->norm_weights = L->g.data[norm->offset] != 0;
        int any_sparse = 0;
        for (uint32_t l = 0; l < h->n_layers && !any_sparse; l++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%u.%s.weight", l, SUFFIX_MOE_ROUTER);
            any_sparse = qwen3_gguf_find_tensor(&L->g, name) != NULL;
        }
        if (!any_sparse) {
            return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF arch " ARCH_MOE " has no block with a %s tensor", L->path,
                              SUFFIX_MOE_ROUTER);
        }
    }
    const Qwen3GgufTensor* embd = qwen3_gguf_find_tensor(&L->g, TENSOR_EMBED);
    if (!embd) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has no tensor '%s'", L->path, TENSOR_EMBED);
    if (embd->dims[1] < 1 || embd->dims[1] > QWEN3_MAX_VOCAB) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF %s has %llu rows (vocabulary limit %u)", L->path,
                          TENSOR_EMBED, (unsigned long long)embd->dims[1], QWEN3_MAX_VOCAB);
    }
    h->vocab_size = (uint32_t)embd->dims[1];
    h->shared_classifier = qwen3_gguf_find_tensor(&L->g, TENSOR_CLASSIFIER) == NULL;
    h->file_size = L->m->map.size;
    return QWEN3_OK;
}

/* One 3-D expert tensor [cols, rows, n_experts] as n_experts (rows, cols) matrices, each
 * the e-th slice of the data. */
static int32_t load_experts(Loader* L, uint32_t l, const char* suffix, uint32_t rows, uint32_t cols,
                            Qwen3Matrix** out) {
    const uint32_t ne = L->m->moe.n_experts;
    char name[96];
    snprintf(name, sizeof name, "blk.%u.%s.weight", l, suffix);
    const Qwen3GgufTensor* t = qwen3_gguf_find_tensor(&L->g, name);
    if (!t) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has no tensor '%s'", L->path, name);
    const uint32_t wtype = weight_type_of(t);
    if (wtype == NOT_RUNNABLE) return cannot_run(L, t, name);
    if (t->dims[0] != cols || t->dims[1] != rows || t->dims[2] != ne || t->dims[3] != 1) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: GGUF tensor '%s' has shape [%llu, %llu, %llu, %llu] (innermost first), "
                          "expected [%u, %u, %u]",
                          L->path, name, (unsigned long long)t->dims[0], (unsigned long long)t->dims[1],
                          (unsigned long long)t->dims[2], (unsigned long long)t->dims[3], cols, rows, ne);
    }
    Qwen3Matrix* mats = (Qwen3Matrix*)owned_alloc(L, (uint64_t)ne * sizeof *mats, name);
    if (!mats) return QWEN3_ERR_OUT_OF_MEMORY;
    const uint64_t per = t->bytes / ne; /* whole blocks: cols is a multiple of the block */
    for (uint32_t e = 0; e < ne; e++) {
        const uint8_t* src = L->g.data + t->offset + e * per;
        int32_t rc = convert_matrix(L, name, t, src, per, wtype, rows, cols, &mats[e]);
        if (rc) return rc;
    }
    *out = mats;
    return QWEN3_OK;
}

/* Sparse block l: the F32 router and the three expert tensors. */
static int32_t load_moe_layer(Loader* L, uint32_t l, Qwen3LayerWeights* lw) {
    const Qwen3MoeShape* s = &L->m->moe;
    const uint32_t dim = L->m->header.dim;
    char name[96];
    snprintf(name, sizeof name, "blk.%u.%s.weight", l, SUFFIX_MOE_ROUTER);
    Qwen3MoeLayer* moe = (Qwen3MoeLayer*)owned_alloc(L, sizeof *moe, name);
    if (!moe) return QWEN3_ERR_OUT_OF_MEMORY;
    const Qwen3GgufTensor* t;
    int32_t rc = find_shaped(L, name, 2, dim, s->n_experts, &t);
    if (rc) return rc;
    if (t->type != QWEN3_GGML_F32) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "%s: GGUF tensor '%s' has ggml type %u (%s); the router must be F32",
                          L->path, name, t->type, qwen3_ggml_type_name(t->type));
    }
    const uint8_t* src = L->g.data + t->offset;
    if (((uintptr_t)src & 3u) == 0) {
        moe->router = (const float*)(const void*)src;
    } else {
        float* copy = (float*)owned_alloc(L, t->bytes, name);
        if (!copy) return QWEN3_ERR_OUT_OF_MEMORY;
        memcpy(copy, src, (size_t)t->bytes);
        moe->router = copy;
    }
    rc = load_experts(L, l, SUFFIX_MOE_GATE, s->hidden_dim, dim, &moe->gate);
    if (!rc) rc = load_experts(L, l, SUFFIX_MOE_UP, s->hidden_dim, dim, &moe->up);
    if (!rc) rc = load_experts(L, l, SUFFIX_MOE_DOWN, dim, s->hidden_dim, &moe->down);
    lw->moe = moe;
    return rc;
}

static int32_t load_weights(Loader* L) {
    Qwen3Model* m = L->m;
    Qwen3Header* h = &m->header;
    Qwen3Weights* w = &m->weights;
    const uint32_t dim = h->dim, hd = h->head_dim, q_dim = h->n_heads * hd, kv_dim = h->n_kv_heads * hd;
    w->layers = (Qwen3LayerWeights*)calloc(h->n_layers, sizeof *w->layers);
    if (!w->layers) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for %u layer tables", h->n_layers);
    int32_t rc = load_matrix(L, TENSOR_EMBED, h->vocab_size, dim, &w->embed);
    if (!rc) rc = load_vector(L, TENSOR_FINAL_NORM, dim, &w->final_norm);
    if (!rc && !h->shared_classifier) {
        rc = load_matrix(L, TENSOR_CLASSIFIER, h->vocab_size, dim, &w->classifier);
    } else if (!rc) {
        w->classifier = w->embed;
    }
    for (uint32_t l = 0; l < h->n_layers && !rc; l++) {
        Qwen3LayerWeights* lw = &w->layers[l];
        char name[96];
#define NAME(t) (snprintf(name, sizeof name, "blk.%u.%s.weight", l, layer_suffixes[t]), name)
        rc = load_vector(L, NAME(LAYER_ATTN_NORM), dim, &lw->attn_norm);
        if (!rc) rc = load_vector(L, NAME(LAYER_FFN_NORM), dim, &lw->ffn_norm);
        if (!rc) rc = load_vector(L, NAME(LAYER_Q_NORM), hd, &lw->q_norm);
        if (!rc) rc = load_vector(L, NAME(LAYER_K_NORM), hd, &lw->k_norm);
        const struct {
            LayerTensor t;
            uint32_t rows, cols;
            Qwen3Matrix* dst;
        } mats[7] = {
            {LAYER_Q, q_dim, dim, &lw->wq},
            {LAYER_K, kv_dim, dim, &lw->wk},
            {LAYER_V, kv_dim, dim, &lw->wv},
            {LAYER_OUTPUT, dim, q_dim, &lw->wo},
            {LAYER_GATE, h->hidden_dim, dim, &lw->w1},
            {LAYER_DOWN, dim, h->hidden_dim, &lw->w2},
            {LAYER_UP, h->hidden_dim, dim, &lw->w3},
        };
        snprintf(name, sizeof name, "blk.%u.%s.weight", l, SUFFIX_MOE_ROUTER);
        const int sparse = L->moe && qwen3_gguf_find_tensor(&L->g, name) != NULL;
        for (int i = 0; i < (sparse ? 4 : 7) && !rc; i++) {
            rc = load_matrix(L, NAME(mats[i].t), mats[i].rows, mats[i].cols, mats[i].dst);
        }
        if (!rc && sparse) rc = load_moe_layer(L, l, lw);
#undef NAME
    }
    if (rc) return rc;
    if (L->any_q8) {
        /* every activation is quantised per 32 values when any matrix takes int8 input */
        const uint32_t widths[4] = {dim, h->hidden_dim, q_dim, L->moe ? m->moe.hidden_dim : dim};
        for (int i = 0; i < 4; i++) {
            if (widths[i] % 32 != 0) {
                return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                                  "%s: GGUF has quantised weights but a width of %u, not a multiple of 32",
                                  L->path, widths[i]);
            }
        }
        h->group_size = 32;
    }
    return QWEN3_OK;
}

/* The tokenizer from tokenizer.ggml.{tokens, token_type, merges} (exact merges;
 * docs/formats.md#gguf-tokenizer). */
static int32_t load_gguf_tokenizer(Loader* L) {
    const uint8_t* model;
    uint32_t model_len;
    int32_t rc = key_string(L, KEY_TOKENIZER_MODEL, &model, &model_len);
    if (rc) return rc;
    if (!qwen3_gguf_bytes_equal(model, model_len, "gpt2")) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: GGUF tokenizer.ggml.model is '%s'; only 'gpt2' (byte-level BPE, as Qwen3 uses) is "
                          "supported",
                          L->path, qwen3_gguf_quote(model, model_len).s);
    }
    const Qwen3GgufKv* tok = qwen3_gguf_find_kv(&L->g, key_names[KEY_TOKENS]);
    const Qwen3GgufKv* mer = qwen3_gguf_find_kv(&L->g, key_names[KEY_MERGES]);
    const Qwen3GgufKv* typ = qwen3_gguf_find_kv(&L->g, key_names[KEY_TOKEN_TYPES]);
    const char* bad = NULL;
    const char* want = NULL;
    if (!tok || tok->type != QWEN3_GGUF_ARRAY || tok->elem_type != QWEN3_GGUF_STRING) {
        bad = key_names[KEY_TOKENS];
        want = "an array of strings";
    } else if (!mer || mer->type != QWEN3_GGUF_ARRAY || mer->elem_type != QWEN3_GGUF_STRING) {
        bad = key_names[KEY_MERGES];
        want = "an array of strings";
    } else if (typ && (typ->type != QWEN3_GGUF_ARRAY ||
                       (typ->elem_type != QWEN3_GGUF_INT32 && typ->elem_type != QWEN3_GGUF_UINT32) ||
                       typ->count != tok->count)) {
        bad = key_names[KEY_TOKEN_TYPES];
        want = "an array of one i32 per token";
    }
    if (bad) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF lacks a valid %s (%s)", L->path, bad, want);
    if (tok->count == 0 || tok->count > L->m->header.vocab_size) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has %llu tokens; the model has %u embedding rows", L->path,
                          (unsigned long long)tok->count, L->m->header.vocab_size);
    }
    if (mer->count > UINT32_MAX) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has too many merges", L->path);
    const uint32_t n_tok = (uint32_t)tok->count, n_mer = (uint32_t)mer->count;
    /* both counts were checked against the bytes of the file while parsing */
    const char** toks = (const char**)malloc((size_t)n_tok * sizeof *toks);
    uint32_t* tok_lens = (uint32_t*)malloc((size_t)n_tok * sizeof *tok_lens);
    const char** mers = (const char**)malloc(((size_t)n_mer + 1) * sizeof *mers);
    uint32_t* mer_lens = (uint32_t*)malloc(((size_t)n_mer + 1) * sizeof *mer_lens);
    int32_t* types = typ ? (int32_t*)malloc((size_t)n_tok * sizeof *types) : NULL;
    if (!toks || !tok_lens || !mers || !mer_lens || (typ && !types)) {
        rc = qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for %u tokens and %u merges", n_tok, n_mer);
    } else {
        uint64_t off = tok->offset;
        for (uint32_t i = 0; i < n_tok; i++) {
            const uint8_t* s;
            off = qwen3_gguf_string_at(&L->g, off, &s, &tok_lens[i]);
            toks[i] = (const char*)s;
        }
        off = mer->offset;
        for (uint32_t i = 0; i < n_mer; i++) {
            const uint8_t* s;
            off = qwen3_gguf_string_at(&L->g, off, &s, &mer_lens[i]);
            mers[i] = (const char*)s;
        }
        for (uint32_t i = 0; typ && i < n_tok; i++) types[i] = (int32_t)qwen3_gguf_array_u32(&L->g, typ, i);
        L->m->tokenizer = qwen3_tokenizer_from_lists(toks, tok_lens, n_tok, types, mers, mer_lens, n_mer);
        if (!L->m->tokenizer) {
            char why[1024];
            snprintf(why, sizeof why, "%s", qwen3_get_last_error());
            rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: %s", L->path, why);
        }
    }
    free(toks);
    free(tok_lens);
    free(mers);
    free(mer_lens);
    free(types);
    return rc;
}

int32_t qwen3_model_read_gguf(Qwen3Model* m) {
    m->gguf = (Qwen3GgufModel*)calloc(1, sizeof *m->gguf);
    if (!m->gguf) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory loading %s", m->path);
    Loader L;
    memset(&L, 0, sizeof L);
    L.m = m;
    L.path = m->path;
    int32_t rc = qwen3_gguf_init(&L.g, m->map.data, m->map.size, m->path);
    if (rc == QWEN3_OK) rc = load_hparams(&L);
    if (rc == QWEN3_OK) rc = load_weights(&L);
    if (rc == QWEN3_OK) rc = load_gguf_tokenizer(&L);
    qwen3_gguf_deinit(&L.g);
    return rc;
}
