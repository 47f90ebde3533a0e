/* model_checkpoint.c - reading a qwen3.c (v1) or qwen3-rs checkpoint
 * (docs/formats.md#checkpoint-format): the 256-byte header, validated against the file's
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

/* The exact file size a valid header implies; 0 when it would overflow 64 bits. */
static uint64_t expected_file_size(const Qwen3Header* h) {
    const uint64_t L = h->n_layers, dim = h->dim, hidden = h->hidden_dim, gs = h->group_size;
    const uint64_t q_rows = (uint64_t)h->n_heads * h->head_dim;
    const uint64_t kv_rows = (uint64_t)h->n_kv_heads * h->head_dim;
    uint64_t total = QWEN3_HEADER_BYTES, t;
    /* fp32: attn_norm, ffn_norm (L x dim), final_norm (dim), q_norm, k_norm (L x head_dim) */
    uint64_t floats = 2 * L * dim + dim + 2 * L * h->head_dim; /* each factor < 2^24 */
    if (!qwen3_mul_u64_ok(floats, 4, &t) || !qwen3_add_u64_ok(total, t, &total)) return 0;
    uint64_t per_layer = 0; /* wq, wk and wv, wo, w1 and w3, w2 */
    if (!add_q8(&per_layer, 1, q_rows, dim, gs) || !add_q8(&per_layer, 2, kv_rows, dim, gs) ||
        !add_q8(&per_layer, 1, dim, q_rows, gs) || !add_q8(&per_layer, 2, hidden, dim, gs) ||
        !add_q8(&per_layer, 1, dim, hidden, gs)) {
        return 0;
    }
    if (!qwen3_mul_u64_ok(per_layer, L, &t) || !qwen3_add_u64_ok(total, t, &total)) return 0;
    const uint64_t tables = h->shared_classifier ? 1 : 2; /* embedding (+ separate classifier) */
    if (!add_q8(&total, tables, h->vocab_size, dim, gs)) return 0;
    return total;
}

static const char* format_name(uint32_t format) {
    return format == QWEN3_FORMAT_QWEN3RS ? "qwen3-rs" : "qwen3.c";
}

/* Reads the ten i32 fields at `base` as `format` and validates them, including the file
 * size. Returns QWEN3_OK or an error status with the message set. */
static int32_t parse_layout(const uint8_t* data, uint64_t size, const char* path, uint32_t format,
                            Qwen3Header* out) {
    const char* layout = format_name(format);
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
                                  "%s: header field shared_classifier = %d must be 0 or 1 (%s "
                                  "layout)",
                                  path, as_int, layout);
            }
            continue;
        }
        if (as_int <= 0) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: header field %s = %d must be positive (%s layout)", path,
                              names[i], as_int, layout);
        }
        if (v[i] > limits[i]) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: header field %s = %u exceeds the limit of %u (%s layout)", path,
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
    };
    const uint64_t q_dim = (uint64_t)h.n_heads * h.head_dim;
    if (h.n_heads % h.n_kv_heads != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: n_heads %u is not a multiple of n_kv_heads %u (%s layout)", path,
                          h.n_heads, h.n_kv_heads, layout);
    }
    if (h.head_dim % 2 != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: head_dim %u must be even for rotate-half RoPE (%s layout)", path,
                          h.head_dim, layout);
    }
    if (q_dim > QWEN3_MAX_DIM) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: n_heads * head_dim = %llu exceeds the limit of %u (%s layout)", path,
                          (unsigned long long)q_dim, QWEN3_MAX_DIM, layout);
    }
    const struct {
        const char* name;
        uint64_t value;
    } divided[3] = {{"dim", h.dim}, {"hidden_dim", h.hidden_dim}, {"n_heads * head_dim", q_dim}};
    for (int i = 0; i < 3; i++) {
        if (divided[i].value % h.group_size != 0) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: group_size %u does not divide %s = %llu (%s layout)", path,
                              h.group_size, divided[i].name, (unsigned long long)divided[i].value,
                              layout);
        }
    }
    if (h.dim % 4 != 0) {
        /* every tensor has dim as a factor: with dim % 4 == 0 each fp32 scale array
         * starts 4-byte aligned inside the map */
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: dim %u is not a multiple of 4, so the fp32 scales would be "
                          "misaligned (%s layout)",
                          path, h.dim, layout);
    }
    h.file_size = expected_file_size(&h);
    if (h.file_size == 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: the tensor sizes the header implies overflow 64 bits (%s layout)",
                          path, layout);
    }
    if (h.file_size != size) {
        return qwen3_fail(
            QWEN3_ERR_FORMAT,
            "%s: file size is %llu bytes but the header implies %llu (%s layout: dim %u, "
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
    if (version != QWEN3_VERSION) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: header field version = %d, expected %d", path,
                          version, QWEN3_VERSION);
    }
    /* qwen3-rs inserts a small architecture_id (1 or 2) where qwen3.c has dim; try the
     * layout that value suggests first and the other one when its checks fail, reporting
     * the first one's error (0 is read as a qwen3.c dim: its message is the clearer). */
    uint32_t v8 = qwen3_read_u32le(data + 8);
    uint32_t first = v8 == 1 || v8 == 2 ? QWEN3_FORMAT_QWEN3RS : QWEN3_FORMAT_QWEN3C;
    uint32_t second = first == QWEN3_FORMAT_QWEN3RS ? QWEN3_FORMAT_QWEN3C : QWEN3_FORMAT_QWEN3RS;
    int32_t rc = parse_layout(data, size, path, first, out);
    if (rc == QWEN3_OK) return rc;
    char first_error[1024];
    snprintf(first_error, sizeof first_error, "%s", qwen3_get_last_error());
    if (parse_layout(data, size, path, second, out) == QWEN3_OK) return QWEN3_OK;
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
    for (uint32_t l = 0; l < L; l++) w->layers[l].w1 = qwen3_matrix_q8(take_q8(&c, h->hidden_dim, dim));
    for (uint32_t l = 0; l < L; l++) w->layers[l].w2 = qwen3_matrix_q8(take_q8(&c, dim, h->hidden_dim));
    for (uint32_t l = 0; l < L; l++) w->layers[l].w3 = qwen3_matrix_q8(take_q8(&c, h->hidden_dim, dim));
    w->classifier = h->shared_classifier ? w->embed : qwen3_matrix_q8(take_q8(&c, h->vocab_size, dim));
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
