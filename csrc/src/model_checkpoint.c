/* model_checkpoint.c - reading a qwen3.c (v1) or qwen3-rs checkpoint
 * (docs/formats.md#checkpoint-format), or a Qwen3-MoE one (version 2,
 * docs/formats.md#qwen3-moe-checkpoint): the 256-byte header, validated against the file's
 * size, and the weights as views into the file map, walked in file order
 * (docs/formats.md#checkpoint-body). The tokenizer and templates are side files, which
 * model.c loads. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "bytes.h"
#include "error.h"
#include "model.h"

/* ====================================================================================
 * Header
 * ================================================================================== */

/* *total += count Q8 tensors of (rows, cols): rows*cols int8 values each, then
 * rows*cols/group_size fp32 scales. 0 when that overflows 64 bits. */
static int add_q8(uint64_t* total, uint64_t count, uint64_t rows, uint64_t cols, uint64_t group_size) {
    uint64_t n, scales, bytes;
    return qwen3_mul_u64_ok(rows, cols, &n) && qwen3_mul_u64_ok(n / group_size, 4, &scales) &&
           qwen3_add_u64_ok(n, scales, &bytes) && qwen3_mul_u64_ok(bytes, count, &bytes) &&
           qwen3_add_u64_ok(*total, bytes, total);
}

/* Whether block l of a version 2 checkpoint is sparse (always 0 for version 1). */
static int block_is_sparse(const Qwen3Header* h, uint32_t l) {
    return h->moe.n_experts != 0 && ((h->sparse[l >> 3] >> (l & 7)) & 1u);
}

/* The exact file size a valid header implies; 0 when it would overflow 64 bits. */
static uint64_t expected_file_size(const Qwen3Header* h) {
    const uint64_t L = h->n_layers, dim = h->dim, hidden = h->hidden_dim, gs = h->group_size;
    const uint64_t q_rows = (uint64_t)h->n_heads * h->head_dim;
    const uint64_t kv_rows = (uint64_t)h->n_kv_heads * h->head_dim;
    uint64_t total = QWEN3_HEADER_BYTES, t;
    /* fp32: attn_norm, ffn_norm (L x dim), final_norm (dim), q_norm, k_norm (L x head_dim) */
    uint64_t floats = 2 * L * dim + dim + 2 * L * h->head_dim; /* each factor < 2^24 */
    if (!qwen3_mul_u64_ok(floats, 4, &t) || !qwen3_add_u64_ok(total, t, &total)) return 0;
    uint64_t per_layer = 0; /* wq, wk and wv, wo */
    if (!add_q8(&per_layer, 1, q_rows, dim, gs) || !add_q8(&per_layer, 2, kv_rows, dim, gs) ||
        !add_q8(&per_layer, 1, dim, q_rows, gs)) {
        return 0;
    }
    uint64_t ffn = 0; /* w1 and w3, w2: dense blocks only */
    if (!add_q8(&ffn, 2, hidden, dim, gs) || !add_q8(&ffn, 1, dim, hidden, gs)) return 0;
    uint64_t n_sparse = 0;
    for (uint32_t l = 0; l < h->n_layers; l++) n_sparse += (uint64_t)block_is_sparse(h, l);
    if (!qwen3_mul_u64_ok(per_layer, L, &t) || !qwen3_add_u64_ok(total, t, &total)) return 0;
    if (!qwen3_mul_u64_ok(ffn, L - n_sparse, &t) || !qwen3_add_u64_ok(total, t, &total)) return 0;
    const uint64_t tables = h->shared_classifier ? 1 : 2; /* embedding (+ separate classifier) */
    if (!add_q8(&total, tables, h->vocab_size, dim, gs)) return 0;
    if (n_sparse) {
        /* per sparse block: the fp32 router (n_experts, dim), then per expert gate and up
         * (expert_hidden, dim) and down (dim, expert_hidden) */
        const uint64_t ne = h->moe.n_experts, eh = h->moe.hidden_dim;
        uint64_t block = 0, expert = 0;
        if (!qwen3_mul_u64_ok(ne * dim, 4, &block)) return 0;
        if (!add_q8(&expert, 2, eh, dim, gs) || !add_q8(&expert, 1, dim, eh, gs)) return 0;
        if (!qwen3_mul_u64_ok(expert, ne, &t) || !qwen3_add_u64_ok(block, t, &block)) return 0;
        if (!qwen3_mul_u64_ok(block, n_sparse, &t) || !qwen3_add_u64_ok(total, t, &total)) return 0;
    }
    return total;
}

/* The layout's name as messages give it (the TypeScript reader's words). */
static const char* layout_name(uint32_t format, uint32_t version) {
    if (version == QWEN3_VERSION_MOE) return "qwen3.c layout, version 2 (Qwen3-MoE)";
    return format == QWEN3_FORMAT_QWEN3RS ? "qwen3-rs layout" : "qwen3.c layout";
}

/* The mixture's fields of a version 2 header (bytes 48..255), each checked, into h->moe and
 * h->sparse. Returns QWEN3_OK or QWEN3_ERR_FORMAT with the message set. */
static int32_t parse_moe_fields(const uint8_t* data, const char* path, const char* layout, Qwen3Header* h) {
    static const char* const names[3] = {"n_experts", "n_experts_used", "expert_hidden_dim"};
    uint32_t v[3];
    for (int i = 0; i < 3; i++) {
        const int32_t x = (int32_t)qwen3_read_u32le(data + 48 + 4 * i);
        const uint32_t max = i == 0 ? QWEN3_MAX_EXPERTS : i == 1 ? v[0] : QWEN3_MAX_DIM;
        if (x <= 0 || (uint32_t)x > max) {
            return qwen3_fail(QWEN3_ERR_FORMAT, "%s: header field %s = %d is not in 1..%u (%s)", path, names[i], x,
                              max, layout);
        }
        v[i] = (uint32_t)x;
    }
    const int32_t norm = (int32_t)qwen3_read_u32le(data + 60);
    if (norm != 0 && norm != 1) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: header field norm_topk_prob = %d must be 0 or 1 (%s)", path, norm,
                          layout);
    }
    if (v[2] % h->group_size != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: group_size %u does not divide expert_hidden_dim = %u (%s)", path,
                          h->group_size, v[2], layout);
    }
    for (uint32_t at = QWEN3_MOE_HEADER_RESERVED; at < QWEN3_MOE_HEADER_SPARSE; at++) {
        if (data[at] != 0) {
            return qwen3_fail(QWEN3_ERR_FORMAT, "%s: header byte %u is %u, must be 0 (reserved) (%s)", path, at,
                              data[at], layout);
        }
    }
    if (h->n_layers > QWEN3_MOE_MAX_LAYERS) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: header field n_layers = %u exceeds the limit of %u (%s)", path,
                          h->n_layers, QWEN3_MOE_MAX_LAYERS, layout);
    }
    memcpy(h->sparse, data + QWEN3_MOE_HEADER_SPARSE, sizeof h->sparse);
    uint32_t n_sparse = 0;
    for (uint32_t l = 0; l < QWEN3_MOE_MAX_LAYERS; l++) {
        const uint32_t bit = (h->sparse[l >> 3] >> (l & 7)) & 1u;
        if (l < h->n_layers) {
            n_sparse += bit;
        } else if (bit) {
            return qwen3_fail(QWEN3_ERR_FORMAT, "%s: sparse-block bit %u is set but the model has %u blocks (%s)",
                              path, l, h->n_layers, layout);
        }
    }
    if (n_sparse == 0) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: no block is marked sparse (%s)", path, layout);
    h->moe = (Qwen3MoeShape){.n_experts = v[0], .n_used = v[1], .hidden_dim = v[2], .norm_weights = (uint32_t)norm};
    return QWEN3_OK;
}

/* Reads the ten i32 fields at `base` as `format` and validates them (and, for version 2,
 * the mixture's fields), including the file size. Returns QWEN3_OK or an error status
 * with the message set. */
static int32_t parse_layout(const uint8_t* data, uint64_t size, const char* path, uint32_t format,
                            uint32_t version, Qwen3Header* out) {
    const char* layout = layout_name(format, version);
    const uint32_t base = format == QWEN3_FORMAT_QWEN3RS ? 12 : 8;
    if (format == QWEN3_FORMAT_QWEN3RS) {
        uint32_t arch = qwen3_read_u32le(data + 8);
        if (arch == 2) {
            return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                              "%s: architecture_id 2 (LlamaForCausalLM, qwen3-rs layout) is not "
                              "supported; only 1 (Qwen3ForCausalLM)",
                              path);
        }
        if (arch != 1) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: architecture_id %u at byte 8 is not 1 (Qwen3ForCausalLM) "
                              "(qwen3-rs layout)",
                              path, arch);
        }
    }
    static const char* const names[10] = {"dim",      "hidden_dim", "n_layers",
                                          "n_heads",  "n_kv_heads", "vocab_size",
                                          "seq_len",  "head_dim",   "shared_classifier",
                                          "group_size"};
    static const uint32_t limits[10] = {QWEN3_MAX_DIM,   QWEN3_MAX_DIM,     QWEN3_MAX_LAYERS,
                                        QWEN3_MAX_HEADS, QWEN3_MAX_HEADS,   QWEN3_MAX_VOCAB,
                                        QWEN3_MAX_SEQ_LEN, QWEN3_MAX_HEAD_DIM, 1,
                                        QWEN3_MAX_DIM};
    uint32_t v[10];
    for (int i = 0; i < 10; i++) {
        v[i] = qwen3_read_u32le(data + base + 4 * i);
        int32_t as_int = (int32_t)v[i];
        if (i == 8) {
            if (v[i] > 1) {
                return qwen3_fail(QWEN3_ERR_FORMAT,
                                  "%s: header field shared_classifier = %d must be 0 or 1 (%s)",
                                  path, as_int, layout);
            }
            continue;
        }
        if (as_int <= 0) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: header field %s = %d must be positive (%s)", path,
                              names[i], as_int, layout);
        }
        if (v[i] > limits[i]) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: header field %s = %u exceeds the limit of %u (%s)", path,
                              names[i], v[i], limits[i], layout);
        }
    }
    Qwen3Header h = {
        .format = format,
        .dim = v[0],
        .hidden_dim = v[1],
        .n_layers = v[2],
        .n_heads = v[3],
        .n_kv_heads = v[4],
        .vocab_size = v[5],
        .seq_len = v[6],
        .head_dim = v[7],
        .shared_classifier = v[8],
        .group_size = v[9],
        .version = version,
    };
    const uint64_t q_dim = (uint64_t)h.n_heads * h.head_dim;
    if (h.n_heads % h.n_kv_heads != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: n_heads %u is not a multiple of n_kv_heads %u (%s)", path,
                          h.n_heads, h.n_kv_heads, layout);
    }
    if (h.head_dim % 2 != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: head_dim %u must be even for rotate-half RoPE (%s)", path,
                          h.head_dim, layout);
    }
    if (q_dim > QWEN3_MAX_DIM) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: n_heads * head_dim = %llu exceeds the limit of %u (%s)", path,
                          (unsigned long long)q_dim, QWEN3_MAX_DIM, layout);
    }
    const struct {
        const char* name;
        uint64_t value;
    } divided[3] = {{"dim", h.dim}, {"hidden_dim", h.hidden_dim}, {"n_heads * head_dim", q_dim}};
    for (int i = 0; i < 3; i++) {
        if (divided[i].value % h.group_size != 0) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: group_size %u does not divide %s = %llu (%s)", path,
                              h.group_size, divided[i].name, (unsigned long long)divided[i].value,
                              layout);
        }
    }
    if (h.dim % 4 != 0) {
        /* every tensor has dim as a factor: with dim % 4 == 0 each fp32 scale array
         * starts 4-byte aligned inside the map */
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: dim %u is not a multiple of 4, so the fp32 scales would be "
                          "misaligned (%s)",
                          path, h.dim, layout);
    }
    if (version == QWEN3_VERSION_MOE) {
        int32_t rc = parse_moe_fields(data, path, layout, &h);
        if (rc != QWEN3_OK) return rc;
    }
    h.file_size = expected_file_size(&h);
    if (h.file_size == 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: the tensor sizes the header implies overflow 64 bits (%s)",
                          path, layout);
    }
    if (h.file_size != size) {
        return qwen3_fail(
            QWEN3_ERR_FORMAT,
            "%s: file size is %llu bytes but the header implies %llu (%s: dim %u, "
            "hidden_dim %u, n_layers %u, n_heads %u, n_kv_heads %u, vocab_size %u, head_dim %u, "
            "shared_classifier %u, group_size %u): the file is %s",
            path, (unsigned long long)size, (unsigned long long)h.file_size, layout, h.dim,
            h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.head_dim,
            h.shared_classifier, h.group_size,
            size < h.file_size ? "truncated" : "longer than its header says (corrupt or foreign)");
    }
    *out = h;
    return QWEN3_OK;
}

int32_t qwen3_header_parse(const uint8_t* data, uint64_t size, const char* path,
                           Qwen3Header* out) {
    memset(out, 0, sizeof *out);
    if (size < QWEN3_HEADER_BYTES || !data) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: file is %llu bytes, shorter than the %u-byte checkpoint header "
                          "(truncated or not a Qwen3 checkpoint)",
                          path, (unsigned long long)size, QWEN3_HEADER_BYTES);
    }
    uint32_t magic = qwen3_read_u32le(data);
    if (magic != QWEN3_MAGIC) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: magic is 0x%08X, expected 0x%08X (\"1cja\"): not a qwen3.c / "
                          "qwen3-rs checkpoint",
                          path, magic, QWEN3_MAGIC);
    }
    int32_t version = (int32_t)qwen3_read_u32le(data + 4);
    if (version == QWEN3_VERSION_MOE) {
        /* Qwen3-MoE: the qwen3.c layout only (docs/formats.md#qwen3-moe-checkpoint) */
        int32_t rc = parse_layout(data, size, path, QWEN3_FORMAT_QWEN3C, QWEN3_VERSION_MOE, out);
        if (rc != QWEN3_OK) memset(out, 0, sizeof *out);
        return rc;
    }
    if (version != QWEN3_VERSION) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: header field version = %d, expected %d (dense) or %d (Qwen3-MoE)",
                          path, version, QWEN3_VERSION, QWEN3_VERSION_MOE);
    }
    /* qwen3-rs inserts a small architecture_id (1 or 2) where qwen3.c has dim; try the
     * layout that value suggests first and the other one when its checks fail, reporting
     * the first one's error (0 is read as a qwen3.c dim: its message is the clearer). */
    uint32_t v8 = qwen3_read_u32le(data + 8);
    uint32_t first = v8 == 1 || v8 == 2 ? QWEN3_FORMAT_QWEN3RS : QWEN3_FORMAT_QWEN3C;
    uint32_t second = first == QWEN3_FORMAT_QWEN3RS ? QWEN3_FORMAT_QWEN3C : QWEN3_FORMAT_QWEN3RS;
    int32_t rc = parse_layout(data, size, path, first, QWEN3_VERSION, out);
    if (rc == QWEN3_OK) return rc;
    char first_error[1024];
    snprintf(first_error, sizeof first_error, "%s", qwen3_get_last_error());
    if (parse_layout(data, size, path, second, QWEN3_VERSION, out) == QWEN3_OK) return QWEN3_OK;
    memset(out, 0, sizeof *out);
    qwen3_error_set("%s", first_error);
    return rc;
}

/* ====================================================================================
 * Weights
 * ================================================================================== */

/* Walks the body in file order, handing out views. The header check already proved the
 * file is exactly this long. */
typedef struct {
    const uint8_t* base;
    uint64_t offset;
    uint32_t group_size;
} BodyCursor;

static const float* take_f32(BodyCursor* c, uint64_t n) {
    const float* p = (const float*)(const void*)(c->base + c->offset);
    c->offset += n * 4;
    return p;
}

static Qwen3Q8Matrix take_q8(BodyCursor* c, uint32_t rows, uint32_t cols) {
    Qwen3Q8Matrix m;
    uint64_t n = (uint64_t)rows * cols;
    m.q = (const int8_t*)(c->base + c->offset);
    c->offset += n;
    m.s = (const float*)(const void*)(c->base + c->offset);
    c->offset += n / c->group_size * 4;
    m.rows = rows;
    m.cols = cols;
    m.group_size = c->group_size;
    return m;
}

/* The experts section of a version 2 checkpoint: per sparse block, its fp32 router
 * (n_experts, dim), then per expert its gate, up (expert_hidden, dim) and down
 * (dim, expert_hidden) Q8 matrices. The block and matrix tables are allocated (owned by
 * the model); the weights stay views into the map. */
static int32_t map_experts(Qwen3Model* m, BodyCursor* c) {
    const Qwen3Header* h = &m->header;
    const uint32_t L = h->n_layers, dim = h->dim, ne = h->moe.n_experts, eh = h->moe.hidden_dim;
    uint32_t n_sparse = 0;
    for (uint32_t l = 0; l < L; l++) n_sparse += (uint32_t)block_is_sparse(h, l);
    m->moe = h->moe;
    /* sized by the sparse blocks, whose weights the file-size check proved are there */
    m->checkpoint_moe = (Qwen3MoeLayer*)calloc(n_sparse, sizeof *m->checkpoint_moe);
    m->checkpoint_experts = (Qwen3Matrix*)calloc((size_t)n_sparse * 3 * ne, sizeof *m->checkpoint_experts);
    if (!m->checkpoint_moe || !m->checkpoint_experts) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for the expert tables of %u blocks x %u experts",
                          n_sparse, ne);
    }
    for (uint32_t l = 0, i = 0; l < L; l++) {
        if (!block_is_sparse(h, l)) continue;
        Qwen3MoeLayer* moe = &m->checkpoint_moe[i];
        Qwen3Matrix* mats = m->checkpoint_experts + (size_t)i * 3 * ne; /* gate, up, down tables */
        i++;
        moe->router = take_f32(c, (uint64_t)ne * dim);
        moe->gate = mats;
        moe->up = mats + ne;
        moe->down = mats + 2 * (size_t)ne;
        for (uint32_t e = 0; e < ne; e++) {
            moe->gate[e] = qwen3_matrix_q8(take_q8(c, eh, dim));
            moe->up[e] = qwen3_matrix_q8(take_q8(c, eh, dim));
            moe->down[e] = qwen3_matrix_q8(take_q8(c, dim, eh));
        }
        m->weights.layers[l].moe = moe;
    }
    return QWEN3_OK;
}

static int32_t map_weights(Qwen3Model* m) {
    const Qwen3Header* h = &m->header;
    Qwen3Weights* w = &m->weights;
    const uint32_t L = h->n_layers, dim = h->dim, hd = h->head_dim;
    const uint32_t q_rows = h->n_heads * hd, kv_rows = h->n_kv_heads * hd;
    size_t bytes = (size_t)L * sizeof(Qwen3LayerWeights);
    w->layers = (Qwen3LayerWeights*)calloc(L, sizeof(Qwen3LayerWeights));
    if (!w->layers) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for %zu bytes of layer tables",
                          bytes);
    }
    BodyCursor c = {m->map.data, QWEN3_HEADER_BYTES, h->group_size};
    const float* attn_norm = take_f32(&c, (uint64_t)L * dim);
    const float* ffn_norm = take_f32(&c, (uint64_t)L * dim);
    w->final_norm = take_f32(&c, dim);
    const float* q_norm = take_f32(&c, (uint64_t)L * hd);
    const float* k_norm = take_f32(&c, (uint64_t)L * hd);
    for (uint32_t l = 0; l < L; l++) {
        Qwen3LayerWeights* lw = &w->layers[l];
        lw->attn_norm = attn_norm + (size_t)l * dim;
        lw->ffn_norm = ffn_norm + (size_t)l * dim;
        lw->q_norm = q_norm + (size_t)l * hd;
        lw->k_norm = k_norm + (size_t)l * hd;
    }
    w->embed = qwen3_matrix_q8(take_q8(&c, h->vocab_size, dim));
    for (uint32_t l = 0; l < L; l++) w->layers[l].wq = qwen3_matrix_q8(take_q8(&c, q_rows, dim));
    for (uint32_t l = 0; l < L; l++) w->layers[l].wk = qwen3_matrix_q8(take_q8(&c, kv_rows, dim));
    for (uint32_t l = 0; l < L; l++) w->layers[l].wv = qwen3_matrix_q8(take_q8(&c, kv_rows, dim));
    for (uint32_t l = 0; l < L; l++) w->layers[l].wo = qwen3_matrix_q8(take_q8(&c, dim, q_rows));
    /* a sparse block has no dense feed-forward: its w1..w3 stay zeroed, unused */
    for (uint32_t l = 0; l < L; l++) {
        if (!block_is_sparse(h, l)) w->layers[l].w1 = qwen3_matrix_q8(take_q8(&c, h->hidden_dim, dim));
    }
    for (uint32_t l = 0; l < L; l++) {
        if (!block_is_sparse(h, l)) w->layers[l].w2 = qwen3_matrix_q8(take_q8(&c, dim, h->hidden_dim));
    }
    for (uint32_t l = 0; l < L; l++) {
        if (!block_is_sparse(h, l)) w->layers[l].w3 = qwen3_matrix_q8(take_q8(&c, h->hidden_dim, dim));
    }
    w->classifier = h->shared_classifier ? w->embed : qwen3_matrix_q8(take_q8(&c, h->vocab_size, dim));
    if (h->moe.n_experts) {
        int32_t rc = map_experts(m, &c);
        if (rc != QWEN3_OK) return rc;
    }
    if (c.offset != h->file_size) {
        /* the size formula and this walk must describe the same layout */
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: internal layout mismatch: weights end at byte %llu, file is %llu",
                          m->path, (unsigned long long)c.offset,
                          (unsigned long long)h->file_size);
    }
    return QWEN3_OK;
}

int32_t qwen3_model_read_checkpoint(Qwen3Model* m) {
    int32_t rc = qwen3_header_parse(m->map.data, m->map.size, m->path, &m->header);
    if (rc == QWEN3_OK) rc = map_weights(m);
    return rc;
}
