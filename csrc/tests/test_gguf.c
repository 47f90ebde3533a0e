/* test_gguf.c - GGUF models through the public API (csrc/src/gguf.c):
 *
 *   - Q8_0 and Q4_0 GGUFs hold exactly the int8 values and scales of a qwen3.c model.bin
 *     with group size 32: the two files give the same logits bit for bit;
 *   - F32, F16 and BF16 GGUFs of weights representable in all three give the same logits
 *     bit for bit, and match a double-precision forward pass written here from
 *     docs/numerics.md#forward-pass (the unquantised path: no activation quantisation);
 *   - metadata: hyper-parameters, rope theta and rms eps from the file, the tokenizer from
 *     tokenizer.ggml.{tokens, token_type, merges} (merges applied, control tokens split);
 *   - bad files (truncated anywhere, huge counts and lengths, bad offsets and alignment,
 *     unknown and unsupported tensor types, missing tensors, wrong shapes, foreign
 *     architecture or tokenizer, duplicates, random byte flips) give NULL and a message
 *     naming the problem, never a crash.
 * The GGUF writer below is this test's own, independent of the TypeScript one. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_float.h"
#include "model.h"
#include "qwen3_inference.h"
#include "test_util.h"

/* ====================================================================================
 * A tiny GGUF writer
 * ================================================================================== */

enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q8_0 = 8, T_Q3_K = 11, T_BF16 = 30 };
enum { V_U32 = 4, V_I32 = 5, V_F32 = 6, V_STRING = 8, V_ARRAY = 9 };

typedef struct {
    char key[64];
    uint32_t type;       /* V_U32, V_F32, V_STRING, V_ARRAY */
    uint32_t elem;       /* arrays: V_STRING or V_I32 */
    uint32_t u;          /* V_U32 */
    float f;             /* V_F32 */
    char s[256];         /* V_STRING */
    char** strs;         /* string arrays (count entries) */
    const int32_t* ints; /* i32 arrays */
    uint64_t count;
} Kv;

typedef struct {
    char name[64];
    uint32_t n_dims;
    uint64_t dims[5]; /* one past GGUF's 4 so the "five dims" case can be written */
    uint32_t type;
    uint8_t* data; /* owned */
    uint64_t bytes;
} Tn;

typedef struct {
    Kv kv[48];
    int n_kv;
    Tn t[64];
    int n_t;
    uint32_t alignment;
} Gguf;

typedef struct {
    uint8_t* p;
    size_t n, cap;
} Buf;

static void put(Buf* b, const void* d, size_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = (uint8_t*)realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(Buf* b, uint32_t v) {
    uint8_t x[4];
    tu_put_u32(x, v);
    put(b, x, 4);
}
static void put_u64(Buf* b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_str(Buf* b, const char* s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static Kv* add_kv(Gguf* g, const char* key, uint32_t type) {
    Kv* kv = &g->kv[g->n_kv++];
    memset(kv, 0, sizeof *kv);
    snprintf(kv->key, sizeof kv->key, "%s", key);
    kv->type = type;
    return kv;
}
static void kv_u32(Gguf* g, const char* key, uint32_t v) { add_kv(g, key, V_U32)->u = v; }
static void kv_f32(Gguf* g, const char* key, float v) { add_kv(g, key, V_F32)->f = v; }
static void kv_str(Gguf* g, const char* key, const char* v) {
    snprintf(add_kv(g, key, V_STRING)->s, 256, "%s", v);
}

static Kv* find_kv(Gguf* g, const char* key) {
    for (int i = 0; i < g->n_kv; i++) {
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    }
    return NULL;
}
static Tn* find_t(Gguf* g, const char* name) {
    for (int i = 0; i < g->n_t; i++) {
        if (strcmp(g->t[i].name, name) == 0) return &g->t[i];
    }
    return NULL;
}

static uint8_t* serialize(const Gguf* g, size_t* len) {
    Buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, (uint64_t)g->n_t);
    put_u64(&b, (uint64_t)g->n_kv);
    for (int i = 0; i < g->n_kv; i++) {
        const Kv* kv = &g->kv[i];
        put_str(&b, kv->key);
        put_u32(&b, kv->type);
        if (kv->type == V_U32) put_u32(&b, kv->u);
        if (kv->type == V_F32) put(&b, &kv->f, 4);
        if (kv->type == V_STRING) put_str(&b, kv->s);
        if (kv->type == V_ARRAY) {
            put_u32(&b, kv->elem);
            put_u64(&b, kv->count);
            for (uint64_t j = 0; j < kv->count; j++) {
                if (kv->elem == V_STRING) put_str(&b, kv->strs[j]);
                else put_u32(&b, (uint32_t)kv->ints[j]);
            }
        }
    }
    uint64_t offset = 0;
    const uint32_t a = g->alignment ? g->alignment : 32;
    for (int i = 0; i < g->n_t; i++) {
        const Tn* t = &g->t[i];
        put_str(&b, t->name);
        put_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&b, t->dims[d]);
        put_u32(&b, t->type);
        put_u64(&b, offset);
        offset = (offset + t->bytes + a - 1) / a * a;
    }
    const uint8_t zeros[64] = {0};
    while (b.n % a) put(&b, zeros, 1);
    for (int i = 0; i < g->n_t; i++) {
        const size_t start = b.n;
        put(&b, g->t[i].data, g->t[i].bytes);
        while ((b.n - start) % a) put(&b, zeros, 1);
    }
    *len = b.n;
    return b.p;
}

static void gguf_deinit(Gguf* g) {
    for (int i = 0; i < g->n_t; i++) free(g->t[i].data);
    g->n_t = 0;
}

/* ====================================================================================
 * The model: float truth, and its encodings
 * ================================================================================== */

typedef struct {
    uint32_t dim, hidden, layers, heads, kv_heads, head_dim, vocab, seq_len, tied;
    float theta, eps;
} Shape;

static Shape small_shape(void) {
    Shape s = {64, 96, 2, 4, 2, 32, 300, 128, 1, 1e6f, 1e-6f};
    return s;
}

/* The weights as fp32 truth. Matrices are (rows, cols) row-major; when `q8` the truth is
 * q * scale for int8 q and fp16-exact scales per 32 values (q in [-8, 7] when `q4`). */
typedef struct {
    Shape s;
    float* embed;   /* (vocab, dim) */
    float* output;  /* (vocab, dim) or NULL when tied */
    float* final_norm;
    struct {
        float *attn_norm, *ffn_norm, *q_norm, *k_norm;
        float *wq, *wk, *wv, *wo, *w1, *w2, *w3;
    } l[4];
    /* the int8 form of every matrix, for the Q8 encodings (NULL for float models) */
    int8_t* q[64];
    float* qs[64];
    int n_q;
} Model;

static uint16_t f32_to_f16_exact(float v) {
    /* only called on values that are exact fp16 normals or zero */
    uint32_t u;
    memcpy(&u, &v, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    if ((u & 0x7FFFFFFFu) == 0) return (uint16_t)sign;
    const int32_t exp = (int32_t)((u >> 23) & 0xFF) - 127 + 15;
    return (uint16_t)(sign | (uint32_t)exp << 10 | ((u >> 13) & 0x3FF));
}

typedef enum { MAT_FLOAT, MAT_Q8, MAT_Q4 } MatKind;

/* A matrix of truth values; for Q8/Q4 also records its ints and scales in m->q / m->qs. */
static float* make_matrix(Model* m, uint32_t rows, uint32_t cols, MatKind kind, uint64_t* rng) {
    const size_t n = (size_t)rows * cols;
    float* w = (float*)malloc(n * sizeof(float));
    if (kind == MAT_FLOAT) {
        /* k * 2^-10 with |k| <= 127: exact in fp32, fp16 and bf16 alike */
        for (size_t i = 0; i < n; i++) w[i] = (float)((int)(tu_next(rng) % 255) - 127) * (1.0f / 1024.0f);
        return w;
    }
    int8_t* q = (int8_t*)malloc(n);
    float* sc = (float*)malloc(n / 32 * sizeof(float));
    for (size_t g = 0; g < n / 32; g++) {
        /* (1 + j/16) * 2^-10 * (q4 ? 16 : 1): fp16-exact scales */
        sc[g] = (1.0f + (float)(tu_next(rng) % 16) / 16.0f) * (1.0f / 1024.0f) * (kind == MAT_Q4 ? 16.0f : 1.0f);
        for (int i = 0; i < 32; i++) {
            const int v = kind == MAT_Q4 ? (int)(tu_next(rng) % 16) - 8 : (int)(tu_next(rng) % 255) - 127;
            q[g * 32 + i] = (int8_t)v;
            w[g * 32 + i] = (float)v * sc[g];
        }
    }
    m->q[m->n_q] = q;
    m->qs[m->n_q] = sc;
    m->n_q++;
    return w;
}

static float* make_norm(uint32_t n, uint64_t* rng) {
    float* w = (float*)malloc(n * sizeof(float));
    for (uint32_t i = 0; i < n; i++) w[i] = 1.0f + (float)((int)(tu_next(rng) % 51) - 25) / 128.0f;
    return w;
}

/* Matrices are created in this order; m->q[i] follows it. */
static void model_init(Model* m, Shape s, MatKind kind, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->s = s;
    uint64_t rng = seed;
    const uint32_t qd = s.heads * s.head_dim, kvd = s.kv_heads * s.head_dim;
    m->embed = make_matrix(m, s.vocab, s.dim, kind, &rng);
    if (!s.tied) m->output = make_matrix(m, s.vocab, s.dim, kind, &rng);
    m->final_norm = make_norm(s.dim, &rng);
    for (uint32_t l = 0; l < s.layers; l++) {
        m->l[l].attn_norm = make_norm(s.dim, &rng);
        m->l[l].ffn_norm = make_norm(s.dim, &rng);
        m->l[l].q_norm = make_norm(s.head_dim, &rng);
        m->l[l].k_norm = make_norm(s.head_dim, &rng);
        m->l[l].wq = make_matrix(m, qd, s.dim, kind, &rng);
        m->l[l].wk = make_matrix(m, kvd, s.dim, kind, &rng);
        m->l[l].wv = make_matrix(m, kvd, s.dim, kind, &rng);
        m->l[l].wo = make_matrix(m, s.dim, qd, kind, &rng);
        m->l[l].w1 = make_matrix(m, s.hidden, s.dim, kind, &rng);
        m->l[l].w2 = make_matrix(m, s.dim, s.hidden, kind, &rng);
        m->l[l].w3 = make_matrix(m, s.hidden, s.dim, kind, &rng);
    }
}

static void model_deinit(Model* m) {
    free(m->embed);
    free(m->output);
    free(m->final_norm);
    for (uint32_t l = 0; l < m->s.layers; l++) {
        float* ps[11] = {m->l[l].attn_norm, m->l[l].ffn_norm, m->l[l].q_norm, m->l[l].k_norm, m->l[l].wq,
                         m->l[l].wk,        m->l[l].wv,       m->l[l].wo,     m->l[l].w1,     m->l[l].w2,
                         m->l[l].w3};
        for (int i = 0; i < 11; i++) free(ps[i]);
    }
    for (int i = 0; i < m->n_q; i++) {
        free(m->q[i]);
        free(m->qs[i]);
    }
}

/* ---- the tokenizer: the 256 GPT-2 byte symbols, 4 merges, 3 control tokens ---- */

#define N_TOKENS 263

static int gpt2_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); }

static char** make_token_strings(int32_t* types) {
    char** t = (char**)calloc(N_TOKENS, sizeof *t);
    int n = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t cp;
        if (gpt2_printable(b)) {
            cp = (uint32_t)b;
        } else {
            cp = 256u + (uint32_t)n;
            n++;
        }
        char* s = (char*)calloc(4, 1);
        if (cp < 0x80) {
            s[0] = (char)cp;
        } else {
            s[0] = (char)(0xC0 | (cp >> 6));
            s[1] = (char)(0x80 | (cp & 0x3F));
        }
        t[b] = s;
        types[b] = 1;
    }
    const char* extra[7] = {"he", "ll", "hell", "hello", "<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 7; i++) {
        t[256 + i] = (char*)malloc(strlen(extra[i]) + 1);
        strcpy(t[256 + i], extra[i]);
        types[256 + i] = i < 4 ? 1 : 3;
    }
    return t;
}

static char* merge_list[4] = {"h e", "l l", "he ll", "hell o"};

/* One matrix in `wtype`; Q8_0 / Q4_0 use the model's ints and scales number `qi`. */
static void encode_matrix(Tn* t, const Model* m, const float* w, uint32_t rows, uint32_t cols, uint32_t wtype,
                          int qi) {
    const uint64_t n = (uint64_t)rows * cols;
    t->n_dims = 2;
    t->dims[0] = cols;
    t->dims[1] = rows;
    t->type = wtype;
    if (wtype == T_F32) {
        t->bytes = n * 4;
        t->data = (uint8_t*)malloc(t->bytes);
        memcpy(t->data, w, t->bytes);
    } else if (wtype == T_F16 || wtype == T_BF16) {
        t->bytes = n * 2;
        t->data = (uint8_t*)malloc(t->bytes);
        for (uint64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &w[i], 4);
            const uint16_t h = wtype == T_F16 ? f32_to_f16_exact(w[i]) : (uint16_t)(u >> 16);
            t->data[2 * i] = (uint8_t)h;
            t->data[2 * i + 1] = (uint8_t)(h >> 8);
        }
    } else if (wtype == T_Q8_0 || wtype == T_Q4_0) {
        const uint32_t bb = wtype == T_Q8_0 ? 34 : 18;
        t->bytes = n / 32 * bb;
        t->data = (uint8_t*)malloc(t->bytes);
        for (uint64_t b = 0; b < n / 32; b++) {
            uint8_t* blk = t->data + b * bb;
            const uint16_t h = f32_to_f16_exact(m->qs[qi][b]);
            blk[0] = (uint8_t)h;
            blk[1] = (uint8_t)(h >> 8);
            const int8_t* q = m->q[qi] + b * 32;
            if (wtype == T_Q8_0) {
                memcpy(blk + 2, q, 32);
            } else {
                for (int i = 0; i < 16; i++) blk[2 + i] = (uint8_t)((q[i] + 8) | (q[i + 16] + 8) << 4);
            }
        }
    } else { /* a type the engine cannot run, sized by its block: Q3_K = 110 bytes per 256 */
        t->bytes = n / 256 * 110;
        t->data = (uint8_t*)calloc(t->bytes ? t->bytes : 1, 1);
    }
}

/* The whole GGUF for a model: `wtype` for every matrix (F32/F16/BF16/Q8_0/Q4_0). */
static void gguf_init(Gguf* g, const Model* m, uint32_t wtype, char** tokens, const int32_t* types) {
    memset(g, 0, sizeof *g);
    const Shape s = m->s;
    kv_str(g, "general.architecture", "qwen3");
    kv_str(g, "general.name", "test");
    kv_u32(g, "qwen3.embedding_length", s.dim);
    kv_u32(g, "qwen3.feed_forward_length", s.hidden);
    kv_u32(g, "qwen3.block_count", s.layers);
    kv_u32(g, "qwen3.attention.head_count", s.heads);
    kv_u32(g, "qwen3.attention.head_count_kv", s.kv_heads);
    kv_u32(g, "qwen3.attention.key_length", s.head_dim);
    kv_u32(g, "qwen3.attention.value_length", s.head_dim);
    kv_u32(g, "qwen3.rope.dimension_count", s.head_dim);
    kv_u32(g, "qwen3.context_length", s.seq_len);
    kv_f32(g, "qwen3.rope.freq_base", s.theta);
    kv_f32(g, "qwen3.attention.layer_norm_rms_epsilon", s.eps);
    kv_str(g, "tokenizer.ggml.model", "gpt2");
    kv_str(g, "tokenizer.ggml.pre", "qwen2");
    Kv* kv = add_kv(g, "tokenizer.ggml.tokens", V_ARRAY);
    kv->elem = V_STRING;
    kv->strs = tokens;
    kv->count = N_TOKENS;
    kv = add_kv(g, "tokenizer.ggml.token_type", V_ARRAY);
    kv->elem = V_I32;
    kv->ints = types;
    kv->count = N_TOKENS;
    kv = add_kv(g, "tokenizer.ggml.merges", V_ARRAY);
    kv->elem = V_STRING;
    kv->strs = merge_list;
    kv->count = 4;
    kv_u32(g, "tokenizer.ggml.eos_token_id", 262);
    kv_str(g, "tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}");

    int qi = 0;
    const uint32_t qd = s.heads * s.head_dim, kvd = s.kv_heads * s.head_dim;
#define ADD_VEC(NAME, PTR, N)                                             \
    do {                                                                  \
        Tn* t = &g->t[g->n_t++];                                          \
        snprintf(t->name, sizeof t->name, "%s", NAME);                    \
        t->n_dims = 1;                                                    \
        t->dims[0] = (N);                                                 \
        t->type = T_F32;                                                  \
        t->bytes = (uint64_t)(N) * 4;                                     \
        t->data = (uint8_t*)malloc(t->bytes);                             \
        memcpy(t->data, (PTR), t->bytes);                                 \
    } while (0)
#define ADD_MAT(NAME, PTR, ROWS, COLS)                                    \
    do {                                                                  \
        Tn* t = &g->t[g->n_t++];                                          \
        snprintf(t->name, sizeof t->name, "%s", NAME);                    \
        encode_matrix(t, m, (PTR), (ROWS), (COLS), wtype, qi++);          \
    } while (0)
    ADD_MAT("token_embd.weight", m->embed, s.vocab, s.dim);
    if (!s.tied) ADD_MAT("output.weight", m->output, s.vocab, s.dim);
    ADD_VEC("output_norm.weight", m->final_norm, s.dim);
    char name[64];
    for (uint32_t l = 0; l < s.layers; l++) {
#define N(suffix) (snprintf(name, sizeof name, "blk.%u." suffix ".weight", l), name)
        ADD_VEC(N("attn_norm"), m->l[l].attn_norm, s.dim);
        ADD_VEC(N("ffn_norm"), m->l[l].ffn_norm, s.dim);
        ADD_VEC(N("attn_q_norm"), m->l[l].q_norm, s.head_dim);
        ADD_VEC(N("attn_k_norm"), m->l[l].k_norm, s.head_dim);
        ADD_MAT(N("attn_q"), m->l[l].wq, qd, s.dim);
        ADD_MAT(N("attn_k"), m->l[l].wk, kvd, s.dim);
        ADD_MAT(N("attn_v"), m->l[l].wv, kvd, s.dim);
        ADD_MAT(N("attn_output"), m->l[l].wo, s.dim, qd);
        ADD_MAT(N("ffn_gate"), m->l[l].w1, s.hidden, s.dim);
        ADD_MAT(N("ffn_down"), m->l[l].w2, s.dim, s.hidden);
        ADD_MAT(N("ffn_up"), m->l[l].w3, s.hidden, s.dim);
#undef N
    }
#undef ADD_VEC
#undef ADD_MAT
}

/* The same ints and scales as a qwen3.c model.bin with group size 32. */
static int write_bin(const char* path, const Model* m) {
    const Shape s = m->s;
    TuSpec spec = tu_small_spec();
    spec.dim = s.dim;
    spec.hidden_dim = s.hidden;
    spec.n_layers = s.layers;
    spec.n_heads = s.heads;
    spec.n_kv_heads = s.kv_heads;
    spec.vocab_size = s.vocab;
    spec.seq_len = s.seq_len;
    spec.head_dim = s.head_dim;
    spec.shared_classifier = s.tied;
    spec.group_size = 32;
    FILE* f = fopen(path, "wb");
    if (!f) return 0;
    uint8_t header[256];
    tu_header(&spec, header);
    int ok = fwrite(header, 1, 256, f) == 256;
    for (uint32_t l = 0; l < s.layers; l++) ok = ok && fwrite(m->l[l].attn_norm, 4, s.dim, f) == s.dim;
    for (uint32_t l = 0; l < s.layers; l++) ok = ok && fwrite(m->l[l].ffn_norm, 4, s.dim, f) == s.dim;
    ok = ok && fwrite(m->final_norm, 4, s.dim, f) == s.dim;
    for (uint32_t l = 0; l < s.layers; l++) ok = ok && fwrite(m->l[l].q_norm, 4, s.head_dim, f) == s.head_dim;
    for (uint32_t l = 0; l < s.layers; l++) ok = ok && fwrite(m->l[l].k_norm, 4, s.head_dim, f) == s.head_dim;
    const uint32_t qd = s.heads * s.head_dim, kvd = s.kv_heads * s.head_dim;
    const uint32_t rows[7] = {qd, kvd, kvd, s.dim, s.hidden, s.dim, s.hidden};
    const uint32_t cols[7] = {s.dim, s.dim, s.dim, qd, s.dim, s.hidden, s.dim};
    const int base = s.tied ? 1 : 2;
    /* model_init order per layer: q k v o gate down up = the file's w1 w2 w3 order */
    ok = ok && fwrite(m->q[0], 1, (size_t)s.vocab * s.dim, f) == (size_t)s.vocab * s.dim;
    ok = ok && fwrite(m->qs[0], 4, (size_t)s.vocab * s.dim / 32, f) == (size_t)s.vocab * s.dim / 32;
    for (int k = 0; k < 7; k++) {
        for (uint32_t l = 0; l < s.layers; l++) {
            const int i = base + (int)l * 7 + k;
            const size_t n = (size_t)rows[k] * cols[k];
            ok = ok && fwrite(m->q[i], 1, n, f) == n && fwrite(m->qs[i], 4, n / 32, f) == n / 32;
        }
    }
    if (!s.tied) {
        const size_t n = (size_t)s.vocab * s.dim;
        ok = ok && fwrite(m->q[1], 1, n, f) == n && fwrite(m->qs[1], 4, n / 32, f) == n / 32;
    }
    ok = fclose(f) == 0 && ok;
    char tok[1100];
    snprintf(tok, sizeof tok, "%s.tokenizer", path);
    return ok && tu_write_byte_tokenizer(tok);
}

/* ====================================================================================
 * A double-precision forward pass (docs/numerics.md#forward-pass), unquantised
 * ================================================================================== */

static void matvec_d(double* out, const float* w, const double* x, uint32_t rows, uint32_t cols) {
    for (uint32_t r = 0; r < rows; r++) {
        double acc = 0.0;
        for (uint32_t c = 0; c < cols; c++) acc += (double)w[(size_t)r * cols + c] * x[c];
        out[r] = acc;
    }
}

static void rmsnorm_d(double* out, const double* x, const float* w, uint32_t n, double eps) {
    double ss = 0.0;
    for (uint32_t i = 0; i < n; i++) ss += x[i] * x[i];
    const double s = 1.0 / sqrt(ss / n + eps);
    for (uint32_t i = 0; i < n; i++) out[i] = x[i] * s * w[i];
}

/* Logits after each token of `tokens`: out[t * vocab ...]. */
static void reference_forward(const Model* m, const int32_t* tokens, uint32_t n, double* out) {
    const Shape s = m->s;
    const uint32_t hd = s.head_dim, qd = s.heads * hd, kvd = s.kv_heads * hd, half = hd / 2;
    double* kc = (double*)calloc((size_t)s.layers * n * kvd, sizeof(double));
    double* vc = (double*)calloc((size_t)s.layers * n * kvd, sizeof(double));
    double *x = calloc(s.dim, 8), *h = calloc(s.dim, 8), *q = calloc(qd, 8), *att = calloc(qd, 8);
    double *o = calloc(s.dim, 8), *g = calloc(s.hidden, 8), *u = calloc(s.hidden, 8), *sc = calloc(n, 8);
    for (uint32_t t = 0; t < n; t++) {
        for (uint32_t i = 0; i < s.dim; i++) x[i] = m->embed[(size_t)tokens[t] * s.dim + i];
        for (uint32_t l = 0; l < s.layers; l++) {
            double* k = kc + ((size_t)l * n + t) * kvd;
            double* v = vc + ((size_t)l * n + t) * kvd;
            rmsnorm_d(h, x, m->l[l].attn_norm, s.dim, s.eps);
            matvec_d(q, m->l[l].wq, h, qd, s.dim);
            matvec_d(k, m->l[l].wk, h, kvd, s.dim);
            matvec_d(v, m->l[l].wv, h, kvd, s.dim);
            for (uint32_t hh = 0; hh < s.heads; hh++) rmsnorm_d(q + hh * hd, q + hh * hd, m->l[l].q_norm, hd, s.eps);
            for (uint32_t hh = 0; hh < s.kv_heads; hh++) rmsnorm_d(k + hh * hd, k + hh * hd, m->l[l].k_norm, hd, s.eps);
            for (uint32_t i = 0; i < half; i++) {
                const double ang = t * pow((double)s.theta, -(double)i / half);
                const double c = cos(ang), sn = sin(ang);
                for (uint32_t hh = 0; hh < s.heads; hh++) {
                    double* p = q + hh * hd;
                    const double a = p[i], b = p[i + half];
                    p[i] = a * c - b * sn;
                    p[i + half] = a * sn + b * c;
                }
                for (uint32_t hh = 0; hh < s.kv_heads; hh++) {
                    double* p = k + hh * hd;
                    const double a = p[i], b = p[i + half];
                    p[i] = a * c - b * sn;
                    p[i + half] = a * sn + b * c;
                }
            }
            for (uint32_t hh = 0; hh < s.heads; hh++) {
                const uint32_t kvh = hh / (s.heads / s.kv_heads);
                double mx = -1e300, sum = 0.0;
                for (uint32_t p = 0; p <= t; p++) {
                    const double* kp = kc + ((size_t)l * n + p) * kvd + kvh * hd;
                    double d = 0.0;
                    for (uint32_t i = 0; i < hd; i++) d += q[hh * hd + i] * kp[i];
                    sc[p] = d / sqrt((double)hd);
                    if (sc[p] > mx) mx = sc[p];
                }
                for (uint32_t p = 0; p <= t; p++) sum += (sc[p] = exp(sc[p] - mx));
                for (uint32_t i = 0; i < hd; i++) att[hh * hd + i] = 0.0;
                for (uint32_t p = 0; p <= t; p++) {
                    const double* vp = vc + ((size_t)l * n + p) * kvd + kvh * hd;
                    for (uint32_t i = 0; i < hd; i++) att[hh * hd + i] += sc[p] / sum * vp[i];
                }
            }
            matvec_d(o, m->l[l].wo, att, s.dim, qd);
            for (uint32_t i = 0; i < s.dim; i++) x[i] += o[i];
            rmsnorm_d(h, x, m->l[l].ffn_norm, s.dim, s.eps);
            matvec_d(g, m->l[l].w1, h, s.hidden, s.dim);
            matvec_d(u, m->l[l].w3, h, s.hidden, s.dim);
            for (uint32_t i = 0; i < s.hidden; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            matvec_d(o, m->l[l].w2, g, s.dim, s.hidden);
            for (uint32_t i = 0; i < s.dim; i++) x[i] += o[i];
        }
        rmsnorm_d(h, x, m->final_norm, s.dim, s.eps);
        matvec_d(out + (size_t)t * s.vocab, s.tied ? m->embed : m->output, h, s.vocab, s.dim);
    }
    free(kc); free(vc); free(x); free(h); free(q); free(att); free(o); free(g); free(u); free(sc);
}

/* ====================================================================================
 * Tests
 * ================================================================================== */

static char dir[512];
static char** tokens;
static int32_t token_types[N_TOKENS];
static const int32_t prompt[6] = {104, 256, 259, 7, 33, 299};
#define N_PROMPT 6

static int write_gguf_file(const char* path, const Gguf* g) {
    size_t len;
    uint8_t* bytes = serialize(g, &len);
    int ok = tu_write_file(path, bytes, len);
    free(bytes);
    return ok;
}

/* Logits after each prompt token (N_PROMPT x vocab), one token per prefill; NULL when the
 * model does not load (error printed). */
static float* run_logits(const char* path, uint32_t vocab) {
    Qwen3Model* model = qwen3_model_load(path, 0);
    if (!model) {
        fprintf(stderr, "load %s: %s\n", path, qwen3_get_last_error());
        return NULL;
    }
    Qwen3Context* ctx = qwen3_context_new(model, 0);
    float* out = (float*)malloc((size_t)N_PROMPT * vocab * sizeof(float));
    for (int t = 0; ctx && t < N_PROMPT; t++) {
        if (qwen3_context_prefill(ctx, &prompt[t], 1) != QWEN3_OK) {
            fprintf(stderr, "prefill: %s\n", qwen3_get_last_error());
            break;
        }
        memcpy(out + (size_t)t * vocab, qwen3_context_logits(ctx), vocab * sizeof(float));
    }
    qwen3_context_free(ctx);
    qwen3_model_free(model);
    return out;
}

static void moe_from_dense(Gguf* g, const Shape* s);

/* `big`: a shape whose files pass 4 MiB, so on Linux both are read into huge pages
 * (platform.h: qwen3_file_map_to_huge_pages) and a Q8_0 file's converted tensors are handed
 * back from that copy: the logits must not change. */
static void test_quantised_equals_bin_shape(uint32_t wtype, int tied, int big) {
    Shape s = small_shape();
    s.tied = (uint32_t)tied;
    if (big) {
        s.dim = 512, s.hidden = 1536, s.layers = 4, s.heads = 8, s.kv_heads = 4, s.head_dim = 64;
    }
    Model m;
    model_init(&m, s, wtype == T_Q4_0 ? MAT_Q4 : MAT_Q8, 11 + (uint64_t)wtype + (uint64_t)tied);
    char bin[600], gg[600];
    snprintf(bin, sizeof bin, "%s/q.bin", dir);
    snprintf(gg, sizeof gg, "%s/q.gguf", dir);
    Gguf g;
    gguf_init(&g, &m, wtype, tokens, token_types);
    CHECK(write_bin(bin, &m) && write_gguf_file(gg, &g), "writing the files");
    float* a = run_logits(bin, s.vocab);
    float* b = run_logits(gg, s.vocab);
    CHECK(a && b, "both load");
    if (a && b) {
        CHECK(memcmp(a, b, (size_t)N_PROMPT * s.vocab * sizeof(float)) == 0,
              "%s GGUF (tied %d) logits differ from the model.bin with the same ints", wtype == T_Q8_0 ? "Q8_0" : "Q4_0",
              tied);
    }
    Qwen3Model* model = qwen3_model_load(gg, 0);
    if (model) {
        Qwen3ModelInfo info;
        qwen3_model_get_info(model, &info);
        CHECK(info.format == QWEN3_FORMAT_GGUF && info.group_size == 32 && info.shared_classifier == (uint32_t)tied,
              "info: format %u group %u shared %u", info.format, info.group_size, info.shared_classifier);
        /* Q4_0 runs in place (a view of the file's blocks, no copy); Q8_0 is converted */
        const Qwen3Matrix* wq = &model->weights.layers[0].wq;
        const uint32_t want = wtype == T_Q4_0 ? QWEN3_WEIGHT_BLOCKS : QWEN3_WEIGHT_Q8;
        CHECK(wq->type == want, "%s attn_q: weight type %u, want %u", wtype == T_Q8_0 ? "Q8_0" : "Q4_0", wq->type, want);
        if (wq->type == QWEN3_WEIGHT_BLOCKS) {
            const uint8_t* base = (const uint8_t*)model->map.data;
            CHECK(wq->blocks.data >= base && wq->blocks.data < base + model->map.size, "Q4_0 attn_q is not in the file map");
        }
        if (big) {
            printf("%s GGUF of %.1f MB (tied %d): %s\n", wtype == T_Q8_0 ? "Q8_0" : "Q4_0", (double)model->map.size / 1e6,
                   tied, model->map.copy_size ? "read into huge pages, logits equal the .bin's" : "left in the file map here");
        }
        qwen3_model_free(model);
    }
    if (big && wtype == T_Q8_0 && tied) {
        /* the same file as a mixture of experts stays mapped (model.c: is_mixture) */
        moe_from_dense(&g, &s);
        CHECK(write_gguf_file(gg, &g), "writing the moe file");
        Qwen3Model* moe = qwen3_model_load(gg, 0);
        CHECK(moe != NULL, "load the moe file: %s", qwen3_get_last_error());
        if (moe) {
            CHECK(moe->map.copy_size == 0 && moe->moe.n_experts == 2, "a qwen3moe GGUF was copied (experts %u)",
                  moe->moe.n_experts);
            qwen3_model_free(moe);
        }
    }
    free(a);
    free(b);
    gguf_deinit(&g);
    model_deinit(&m);
}

static void test_quantised_equals_bin(uint32_t wtype, int tied) { test_quantised_equals_bin_shape(wtype, tied, 0); }

/* The model as arch qwen3moe with two experts per block, one used per token: expert 0 is
 * the dense feed-forward, expert 1 all zero bytes (its output 0), the router all zeros.
 * Both experts are then equally probable, the tie goes to expert 0 with weight 0.5 / 0.5 =
 * 1, and 0 + 1 * y = y: the logits must be the dense model's bit for bit, token by token
 * and from one prefill of the whole prompt (grouped by expert). The routing among
 * several experts is checked against transformers in tests/moe_test.ts. */
static void moe_from_dense(Gguf* g, const Shape* s) {
    for (int i = 0; i < g->n_kv; i++) {
        Kv* kv = &g->kv[i];
        if (strncmp(kv->key, "qwen3.", 6) == 0) {
            char key[64];
            snprintf(key, sizeof key, "qwen3moe.%s", kv->key + 6);
            snprintf(kv->key, sizeof kv->key, "%s", key);
        }
        if (strcmp(kv->key, "general.architecture") == 0) snprintf(kv->s, sizeof kv->s, "qwen3moe");
    }
    kv_u32(g, "qwen3moe.expert_count", 2);
    kv_u32(g, "qwen3moe.expert_used_count", 1);
    kv_u32(g, "qwen3moe.expert_feed_forward_length", s->hidden);
    const int n_t = g->n_t;
    for (int i = 0; i < n_t; i++) {
        Tn* t = &g->t[i];
        const char* ffn = strstr(t->name, ".ffn_");
        if (!ffn || strstr(t->name, "ffn_norm")) continue;
        uint32_t l = 0;
        sscanf(t->name, "blk.%u.", &l);
        char suffix[32];
        snprintf(suffix, sizeof suffix, "%s", ffn + 5); /* "gate.weight" ... */
        *strchr(suffix, '.') = '\0';
        snprintf(t->name, sizeof t->name, "blk.%u.ffn_%s_exps.weight", l, suffix);
        uint8_t* both = (uint8_t*)calloc(2 * t->bytes, 1);
        memcpy(both, t->data, t->bytes);
        free(t->data);
        t->data = both;
        t->bytes *= 2;
        t->n_dims = 3;
        t->dims[2] = 2;
        if (strcmp(suffix, "gate") == 0) {
            Tn* r = &g->t[g->n_t++];
            snprintf(r->name, sizeof r->name, "blk.%u.ffn_gate_inp.weight", l);
            r->n_dims = 2;
            r->dims[0] = s->dim;
            r->dims[1] = 2;
            r->type = T_F32;
            r->bytes = (uint64_t)s->dim * 2 * 4;
            r->data = (uint8_t*)calloc(r->bytes, 1);
        }
    }
}

/* The last prompt token's logits after one prefill of the whole prompt (vocab floats). */
static float* prefill_logits(const char* path, uint32_t vocab) {
    Qwen3Model* model = qwen3_model_load(path, 0);
    if (!model) return NULL;
    Qwen3Context* ctx = qwen3_context_new(model, 0);
    float* out = (float*)malloc(vocab * sizeof(float));
    if (ctx && qwen3_context_prefill(ctx, prompt, N_PROMPT) == QWEN3_OK) {
        memcpy(out, qwen3_context_logits(ctx), vocab * sizeof(float));
    } else {
        free(out);
        out = NULL;
    }
    qwen3_context_free(ctx);
    qwen3_model_free(model);
    return out;
}

static void test_moe_one_expert(uint32_t wtype) {
    Shape s = small_shape();
    Model m;
    model_init(&m, s, wtype == T_F32 ? MAT_FLOAT : MAT_Q8, 23 + (uint64_t)wtype);
    char dense[600], moe[600];
    snprintf(dense, sizeof dense, "%s/dense.gguf", dir);
    snprintf(moe, sizeof moe, "%s/moe.gguf", dir);
    Gguf g;
    gguf_init(&g, &m, wtype, tokens, token_types);
    CHECK(write_gguf_file(dense, &g), "writing the dense file");
    moe_from_dense(&g, &s);
    CHECK(write_gguf_file(moe, &g), "writing the moe file");
    float* a = run_logits(dense, s.vocab);
    float* b = run_logits(moe, s.vocab);
    float* c = prefill_logits(moe, s.vocab);
    CHECK(a && b && c, "both load and run");
    if (a && b && c) {
        CHECK(memcmp(a, b, (size_t)N_PROMPT * s.vocab * sizeof(float)) == 0,
              "type %u: qwen3moe with the dense block as expert 0 differs from the dense model", wtype);
        CHECK(memcmp(a + (size_t)(N_PROMPT - 1) * s.vocab, c, s.vocab * sizeof(float)) == 0,
              "type %u: qwen3moe prefill differs from the dense model", wtype);
    }
    Qwen3Model* model = qwen3_model_load(moe, 0);
    if (model) {
        uint32_t shape[3];
        uint8_t sparse[2];
        CHECK(qwen3_model_get_moe(model, shape, sparse) == QWEN3_OK && shape[0] == 2 && shape[1] == 1 &&
                  shape[2] == s.hidden && sparse[0] == 1 && sparse[1] == 1,
              "moe shape %u %u %u, sparse %u %u", shape[0], shape[1], shape[2], sparse[0], sparse[1]);
        qwen3_model_free(model);
    }
    free(a);
    free(b);
    free(c);
    gguf_deinit(&g);
    model_deinit(&m);
}

static void test_float_types(int tied) {
    Shape s = small_shape();
    s.tied = (uint32_t)tied;
    s.theta = 10000.0f; /* read from the file: the reference uses it too */
    s.eps = 1e-5f;
    Model m;
    model_init(&m, s, MAT_FLOAT, 5 + (uint64_t)tied);
    double* ref = (double*)malloc((size_t)N_PROMPT * s.vocab * sizeof(double));
    reference_forward(&m, prompt, N_PROMPT, ref);
    const uint32_t types[3] = {T_F32, T_F16, T_BF16};
    float* first = NULL;
    for (int i = 0; i < 3; i++) {
        Gguf g;
        gguf_init(&g, &m, types[i], tokens, token_types);
        char path[600];
        snprintf(path, sizeof path, "%s/f%d.gguf", dir, i);
        CHECK(write_gguf_file(path, &g), "write");
        gguf_deinit(&g);
        float* got = run_logits(path, s.vocab);
        CHECK(got != NULL, "type %u loads", types[i]);
        if (!got) continue;
        double worst = 0.0, scale = 0.0;
        for (size_t j = 0; j < (size_t)N_PROMPT * s.vocab; j++) {
            worst = fmax(worst, fabs(got[j] - ref[j]));
            scale = fmax(scale, fabs(ref[j]));
        }
        CHECK(worst <= 1e-4 * scale, "type %u (tied %d): max |logit - double reference| = %.3g (max |logit| %.3g)",
              types[i], tied, worst, scale);
        if (i == 0) fprintf(stderr, "  unquantised vs double reference: max diff %.3g of max |logit| %.3g\n", worst, scale);
        if (!first) {
            first = got;
        } else {
            CHECK(memcmp(first, got, (size_t)N_PROMPT * s.vocab * sizeof(float)) == 0,
                  "type %u logits differ from F32's on the same values", types[i]);
            free(got);
        }
        Qwen3Model* model = qwen3_model_load(path, 0);
        if (model) {
            Qwen3ModelInfo info;
            qwen3_model_get_info(model, &info);
            const Qwen3ModelConfig* c = qwen3_model_get_config(model);
            CHECK(info.group_size == 0 && info.format == QWEN3_FORMAT_GGUF, "unquantised info: group %u", info.group_size);
            CHECK(c->rope_theta == 10000.0f && info.rms_eps == 1e-5f, "theta %g eps %g from the file", c->rope_theta,
                  info.rms_eps);
            CHECK(c->dim == s.dim && c->hidden_dim == s.hidden && c->n_layers == s.layers && c->n_heads == s.heads &&
                      c->n_kv_heads == s.kv_heads && c->vocab_size == s.vocab && c->max_seq_len == s.seq_len &&
                      info.head_dim == s.head_dim,
                  "hyper-parameters from the metadata");
            qwen3_model_free(model);
        }
    }
    free(first);
    free(ref);
    model_deinit(&m);
}

static void test_tokenizer(void) {
    Model m;
    model_init(&m, small_shape(), MAT_FLOAT, 3);
    Gguf g;
    gguf_init(&g, &m, T_BF16, tokens, token_types);
    char path[600];
    snprintf(path, sizeof path, "%s/tok.gguf", dir);
    CHECK(write_gguf_file(path, &g), "write");
    gguf_deinit(&g);
    model_deinit(&m);
    Qwen3Model* model = qwen3_model_load(path, 0);
    CHECK(model != NULL, "load: %s", qwen3_get_last_error());
    if (!model) return;
    int32_t ids[16];
    int32_t n = qwen3_tokenize(model, "hello hel", 9, 0, ids, 16);
    /* "hello" merges fully; " hel" is the piece " hel": ' ' then "he" then "l" */
    CHECK(n == 4 && ids[0] == 259 && ids[1] == 32 && ids[2] == 256 && ids[3] == 108, "hello hel -> %d ids [%d %d %d %d]",
          n, ids[0], ids[1], ids[2], ids[3]);
    n = qwen3_tokenize(model, "<|im_end|>", 10, QWEN3_TOKENIZE_SPECIAL, ids, 16);
    CHECK(n == 1 && ids[0] == 262, "control token: %d ids, first %d", n, ids[0]);
    Qwen3ModelInfo info;
    qwen3_model_get_info(model, &info);
    CHECK(info.exact_tokenizer == 1 && info.n_tokens == N_TOKENS && info.im_end_id == 262 && info.eos_id == 260,
          "tokenizer info: exact %u n %u im_end %d eos %d", info.exact_tokenizer, info.n_tokens, info.im_end_id,
          info.eos_id);
    uint32_t len = 0;
    const char* b = qwen3_token_bytes(model, 0, &len);
    CHECK(b && len == 1 && (unsigned char)b[0] == 0, "token 0 is the byte 0x00 (GPT-2 symbol decoded)");
    CHECK(strstr(qwen3_model_get_template(model, 0), "<|im_start|>user") != NULL, "stock template");
    qwen3_model_free(model);
}

/* ---- bad files ---- */

typedef void (*Mutate)(Gguf* g);

static void m_arch(Gguf* g) { snprintf(find_kv(g, "general.architecture")->s, 256, "llama"); }
static void m_tok_model(Gguf* g) { snprintf(find_kv(g, "tokenizer.ggml.model")->s, 256, "llama"); }
static void m_missing(Gguf* g) { snprintf(find_t(g, "blk.1.ffn_up.weight")->name, 64, "blk.1.ffn_upp.weight"); }
static void m_shape(Gguf* g) {
    Tn* t = find_t(g, "blk.0.attn_q.weight");
    const uint64_t d = t->dims[0];
    t->dims[0] = t->dims[1];
    t->dims[1] = d;
}
static void m_unknown_type(Gguf* g) { find_t(g, "blk.0.attn_v.weight")->type = 99; }
static void m_q3k(Gguf* g) {
    Tn* t = find_t(g, "blk.0.ffn_down.weight"); /* (dim 64, hidden 96): 6144 values = 24 Q3_K blocks */
    free(t->data);
    t->dims[0] = 256;
    t->dims[1] = 24;
    t->type = T_Q3_K;
    t->bytes = 24 * 110;
    t->data = (uint8_t*)calloc(t->bytes, 1);
}
static void m_dup(Gguf* g) { snprintf(find_t(g, "blk.1.attn_q.weight")->name, 64, "blk.0.attn_q.weight"); }
static void m_dup_key(Gguf* g) { snprintf(find_kv(g, "general.name")->key, 64, "general.architecture"); }
static void m_no_dim(Gguf* g) { snprintf(find_kv(g, "qwen3.embedding_length")->key, 64, "qwen3.embedding_lengthX"); }
static void m_heads(Gguf* g) { find_kv(g, "qwen3.attention.head_count_kv")->u = 3; }
static void m_dim_str(Gguf* g) {
    Kv* kv = find_kv(g, "qwen3.block_count");
    kv->type = V_STRING;
    snprintf(kv->s, 256, "2");
}
static void m_types_count(Gguf* g) { find_kv(g, "tokenizer.ggml.token_type")->count = N_TOKENS - 1; }
static void m_align(Gguf* g) { kv_u32(g, "general.alignment", 48); }
static void m_zero_dim(Gguf* g) { find_t(g, "output_norm.weight")->dims[0] = 0; }
static void m_big_dim(Gguf* g) { find_t(g, "output_norm.weight")->dims[0] = (1ull << 30) + 1; }
static void m_dims5(Gguf* g) {
    Tn* t = find_t(g, "output_norm.weight");
    t->n_dims = 5;
    t->dims[4] = 1;
}
static void m_vocab(Gguf* g) { find_kv(g, "qwen3.context_length")->u = 0; }
static void m_rows(Gguf* g) { find_t(g, "blk.0.attn_norm.weight")->type = T_Q8_0; }
static void m_rope_dim(Gguf* g) { find_kv(g, "qwen3.rope.dimension_count")->u = 16; }

typedef struct {
    const char* what;
    Mutate mutate;
    const char* needle;
} BadCase;

static void expect_fail(const char* path, const char* what, const char* needle) {
    Qwen3Model* model = qwen3_model_load(path, 0);
    CHECK(model == NULL, "%s: loaded", what);
    if (model) {
        qwen3_model_free(model);
        return;
    }
    const char* err = qwen3_get_last_error();
    CHECK(strstr(err, needle) != NULL && strstr(err, path) != NULL, "%s: error \"%s\" lacks \"%s\" or the path", what,
          err, needle);
}

static void test_bad_files(void) {
    Model m;
    model_init(&m, small_shape(), MAT_FLOAT, 9);
    char path[600];
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    static const BadCase cases[] = {
        {"foreign architecture", m_arch, "'llama'; this engine runs only 'qwen3'"},
        {"foreign tokenizer", m_tok_model, "tokenizer.ggml.model is 'llama'"},
        {"missing tensor", m_missing, "no tensor 'blk.1.ffn_up.weight'"},
        {"wrong shape", m_shape, "'blk.0.attn_q.weight' has shape [128, 64, 1, 1]"},
        {"unknown type", m_unknown_type, "'blk.0.attn_v.weight' has ggml type 99, unknown"},
        {"unsupported type", m_q3k, "'blk.0.ffn_down.weight' has ggml type 11 (Q3_K), which this engine cannot run"},
        {"duplicate tensor", m_dup, "tensor 'blk.0.attn_q.weight' appears twice"},
        {"duplicate key", m_dup_key, "metadata key 'general.architecture' appears twice"},
        {"missing key", m_no_dim, "lacks 'qwen3.embedding_length'"},
        {"heads", m_heads, "head_count 4 is not a multiple of head_count_kv 3"},
        {"key type", m_dim_str, "'qwen3.block_count' is a string, expected an integer"},
        {"token types", m_types_count, "tokenizer.ggml.token_type"},
        {"alignment", m_align, "general.alignment is not a power of two"},
        {"zero dim", m_zero_dim, "'output_norm.weight' dim 0 is 0"},
        {"huge dim", m_big_dim, "tensor dimension 1073741825"},
        {"five dims", m_dims5, "'output_norm.weight' has 5 dims"},
        {"context length", m_vocab, "'qwen3.context_length' = 0 is outside"},
        {"quantised norm", m_rows, "'blk.0.attn_norm.weight' has ggml type 8 (Q8_0)"},
        {"partial rotary", m_rope_dim, "rope.dimension_count 16 differs from key_length 32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Gguf g;
        gguf_init(&g, &m, T_F16, tokens, token_types);
        cases[i].mutate(&g);
        CHECK(write_gguf_file(path, &g), "write");
        gguf_deinit(&g);
        expect_fail(path, cases[i].what, cases[i].needle);
    }

    /* byte-level damage to a valid file */
    Gguf g;
    gguf_init(&g, &m, T_Q8_0 == 8 ? T_F16 : T_F16, tokens, token_types);
    size_t len;
    uint8_t* good = serialize(&g, &len);
    gguf_deinit(&g);
    uint8_t* bad = (uint8_t*)malloc(len);
    /* the counts at bytes 8 and 16, a string length (the first key's) and an array count */
    const struct {
        size_t at;
        uint64_t value;
        const char* needle;
    } patches[] = {
        {8, 1ull << 40, "tensor count 1099511627776"},
        {16, 1ull << 20, "more than its"},
        {24, 1ull << 40, "metadata key #0 1099511627776"},
        {4, 1, "version 1"},
        {4, 7, "version 7 is not supported"},
        {0, 0x46554748, "not a qwen3.c / qwen3-rs checkpoint"},
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        memcpy(bad, good, len);
        if (patches[i].at < 8) tu_put_u32(bad + patches[i].at, (uint32_t)patches[i].value);
        else {
            tu_put_u32(bad + patches[i].at, (uint32_t)patches[i].value);
            tu_put_u32(bad + patches[i].at + 4, (uint32_t)(patches[i].value >> 32));
        }
        CHECK(tu_write_file(path, bad, len), "write");
        expect_fail(path, patches[i].needle, patches[i].needle);
    }
    /* GGUF v2 has the same layout as v3 (64-bit counts): it loads */
    memcpy(bad, good, len);
    tu_put_u32(bad + 4, 2);
    CHECK(tu_write_file(path, bad, len), "write");
    {
        Qwen3Model* v2 = qwen3_model_load(path, 0);
        CHECK(v2 != NULL, "GGUF v2: %s", qwen3_get_last_error());
        qwen3_model_free(v2);
    }
    /* the tokens array count: find "tokenizer.ggml.tokens" and patch the u64 after the
     * value type and element type */
    for (size_t i = 0; i + 21 < len; i++) {
        if (memcmp(good + i, "tokenizer.ggml.tokens", 21) == 0) {
            memcpy(bad, good, len);
            tu_put_u32(bad + i + 21 + 8, 0x7FFFFFF);
            CHECK(tu_write_file(path, bad, len), "write");
            expect_fail(path, "array count", "exceeds the limit 67108864");
            tu_put_u32(bad + i + 21 + 8, 0x3FFFFFF);
            CHECK(tu_write_file(path, bad, len), "write");
            expect_fail(path, "array count", "claims 67108863 strings");
            break;
        }
    }
    /* tensor offsets: the last tensor info's offset is the 8 bytes before the padding */
    {
        Gguf g2;
        gguf_init(&g2, &m, T_F16, tokens, token_types);
        size_t l2;
        uint8_t* b2 = serialize(&g2, &l2);
        const Tn* last = &g2.t[g2.n_t - 1];
        /* locate the last info: its name followed by n_dims 2 */
        for (size_t i = 0; i + strlen(last->name) < l2; i++) {
            if (memcmp(b2 + i, last->name, strlen(last->name)) == 0 && b2[i + strlen(last->name)] == 2) {
                const size_t off_at = i + strlen(last->name) + 4 + 8 * 2 + 4;
                tu_put_u32(b2 + off_at, 0x7FFFFFE0u); /* aligned but far past the end */
                CHECK(tu_write_file(path, b2, l2), "write");
                expect_fail(path, "offset past the end", "ends past the end of the file");
                tu_put_u32(b2 + off_at, 3); /* unaligned */
                CHECK(tu_write_file(path, b2, l2), "write");
                expect_fail(path, "unaligned offset", "is not a multiple of the alignment 32");
                break;
            }
        }
        free(b2);
        gguf_deinit(&g2);
    }
    /* truncated at many lengths: never loads, never crashes */
    int loaded = 0, tried = 0;
    for (size_t cut = 0; cut < len; cut += cut < 4096 ? 3 : 997) {
        CHECK(tu_write_file(path, good, cut), "write");
        Qwen3Model* model = qwen3_model_load(path, 0);
        tried++;
        if (model) {
            loaded++;
            qwen3_model_free(model);
        } else if (!strstr(qwen3_get_last_error(), path)) {
            CHECK(0, "truncated at %zu: error without the path: %s", cut, qwen3_get_last_error());
        }
    }
    CHECK(loaded == 0, "%d of %d truncated files loaded", loaded, tried);
    /* random byte flips: load and, if it loads, run a token; only crashes would fail */
    uint64_t rng = 77;
    int flips_loaded = 0;
    for (int i = 0; i < 400; i++) {
        memcpy(bad, good, len);
        const int n = 1 + (int)(tu_next(&rng) % 4);
        for (int k = 0; k < n; k++) {
            /* mostly the header, where the structure is */
            const size_t at = (size_t)(tu_next(&rng) % (i % 4 == 0 ? len : (len < 8192 ? len : 8192)));
            bad[at] = (uint8_t)tu_next(&rng);
        }
        CHECK(tu_write_file(path, bad, len), "write");
        Qwen3Model* model = qwen3_model_load(path, 0);
        if (model) {
            flips_loaded++;
            Qwen3Context* ctx = qwen3_context_new(model, 8);
            const int32_t t = 5;
            if (ctx) qwen3_context_prefill(ctx, &t, 1);
            qwen3_context_free(ctx);
            qwen3_model_free(model);
        }
    }
    fprintf(stderr, "  %d truncations refused; %d of 400 byte-flipped files still loaded (weights damaged only)\n",
            tried, flips_loaded);
    free(bad);
    free(good);
    model_deinit(&m);
}

int main(void) {
    if (!tu_make_temp_dir(dir, sizeof dir)) {
        fprintf(stderr, "cannot make a temp dir\n");
        return 1;
    }
    tokens = make_token_strings(token_types);
    test_quantised_equals_bin(T_Q8_0, 1);
    test_quantised_equals_bin(T_Q8_0, 0);
    test_quantised_equals_bin(T_Q4_0, 1);
    test_quantised_equals_bin_shape(T_Q8_0, 1, 1);
    test_quantised_equals_bin_shape(T_Q8_0, 0, 1);
    test_quantised_equals_bin_shape(T_Q4_0, 0, 1);
    test_float_types(1);
    test_float_types(0);
    test_moe_one_expert(T_Q8_0);
    test_moe_one_expert(T_F32);
    test_tokenizer();
    test_bad_files();
    for (int i = 0; i < N_TOKENS; i++) free(tokens[i]);
    free(tokens);
    tu_remove_dir(dir);
    return tu_finish("test_gguf");
}
