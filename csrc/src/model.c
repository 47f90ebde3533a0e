/* model.c - loading a checkpoint: header validation, weight views into the file map,
 * tokenizer side files, chat templates (chat_template.c), the thread pool. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "error.h"
#include "gguf.h"

/* ====================================================================================
 * Header
 * ================================================================================== */

static uint32_t read_u32(const uint8_t* p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Checked 64-bit arithmetic: a header with huge fields must fail, not wrap around. */
static int mul_ok(uint64_t a, uint64_t b, uint64_t* out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static int add_ok(uint64_t a, uint64_t b, uint64_t* out) {
    if (b > UINT64_MAX - a) return 0;
    *out = a + b;
    return 1;
}

/* Bytes of one Q8 tensor: rows*cols int8 values, then rows*cols/group_size fp32 scales. */
static int q8_bytes(uint64_t rows, uint64_t cols, uint64_t group_size, uint64_t* out) {
    uint64_t n, scales;
    if (!mul_ok(rows, cols, &n)) return 0;
    if (!mul_ok(n / group_size, 4, &scales)) return 0;
    return add_ok(n, scales, out);
}

/* The exact file size a valid header implies; 0 when it would overflow 64 bits. */
static uint64_t expected_file_size(const Qwen3Header* h) {
    const uint64_t L = h->n_layers, dim = h->dim, hidden = h->hidden_dim, gs = h->group_size;
    const uint64_t q_rows = (uint64_t)h->n_heads * h->head_dim;
    const uint64_t kv_rows = (uint64_t)h->n_kv_heads * h->head_dim;
    uint64_t total = QWEN3_HEADER_BYTES, t, u;
    /* fp32: attn_norm, ffn_norm (L x dim), final_norm (dim), q_norm, k_norm (L x head_dim) */
    uint64_t floats = 2 * L * dim + dim + 2 * L * h->head_dim; /* each factor < 2^24 */
    if (!mul_ok(floats, 4, &t) || !add_ok(total, t, &total)) return 0;
    uint64_t per_layer = 0;
    if (!q8_bytes(q_rows, dim, gs, &t) || !add_ok(per_layer, t, &per_layer)) return 0;
    if (!q8_bytes(kv_rows, dim, gs, &t) || !mul_ok(t, 2, &u) || !add_ok(per_layer, u, &per_layer))
        return 0;
    if (!q8_bytes(dim, q_rows, gs, &t) || !add_ok(per_layer, t, &per_layer)) return 0;
    if (!q8_bytes(hidden, dim, gs, &t) || !mul_ok(t, 2, &u) || !add_ok(per_layer, u, &per_layer))
        return 0;
    if (!q8_bytes(dim, hidden, gs, &t) || !add_ok(per_layer, t, &per_layer)) return 0;
    if (!mul_ok(per_layer, L, &t) || !add_ok(total, t, &total)) return 0;
    uint64_t tables = h->shared_classifier ? 1 : 2; /* embedding (+ separate classifier) */
    if (!q8_bytes(h->vocab_size, dim, gs, &t) || !mul_ok(t, tables, &u) || !add_ok(total, u, &total))
        return 0;
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
        uint32_t arch = read_u32(data + 8);
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
        v[i] = read_u32(data + base + 4 * i);
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
    uint32_t magic = read_u32(data);
    if (magic != QWEN3_MAGIC) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: magic is 0x%08X, expected 0x%08X (\"1cja\"): not a qwen3.c / "
                          "qwen3-rs checkpoint",
                          path, magic, QWEN3_MAGIC);
    }
    int32_t version = (int32_t)read_u32(data + 4);
    if (version != QWEN3_VERSION) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: header field version = %d, expected %d", path,
                          version, QWEN3_VERSION);
    }
    /* qwen3-rs inserts a small architecture_id (1 or 2) where qwen3.c has dim; try the
     * layout that value suggests first and the other one when its checks fail, reporting
     * the first one's error (0 is read as a qwen3.c dim: its message is the clearer). */
    uint32_t v8 = read_u32(data + 8);
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
 * Tokenizer
 * ================================================================================== */

/* The tokenizer side files, in the order they are looked for. The one named after the
 * model comes first so that two models can share a folder; a Hugging Face tokenizer.json
 * beats the qwen3.c .tokenizer, whose merge ranks are recovered from float scores. */
enum { TOKENIZER_CANDIDATES = 3 };

static int32_t load_tokenizer(Qwen3Model* m) {
    char* paths[TOKENIZER_CANDIDATES] = {
        qwen3_path_append(m->path, ".tokenizer.json"),
        qwen3_path_sibling(m->path, "tokenizer.json"),
        qwen3_path_append(m->path, ".tokenizer"),
    };
    const int is_json[TOKENIZER_CANDIDATES] = {1, 1, 0};
    int32_t rc = QWEN3_OK;
    int found = -1;
    for (int i = 0; i < TOKENIZER_CANDIDATES && rc == QWEN3_OK; i++) {
        if (!paths[i]) {
            rc = qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory building tokenizer paths");
        }
    }
    /* only an absent file lets the search go on: one that is there but unusable is the
     * tokenizer someone meant, and silently taking the next one would hide why */
    for (int i = 0; i < TOKENIZER_CANDIDATES && rc == QWEN3_OK && found < 0; i++) {
        int32_t present = qwen3_file_probe(paths[i]);
        if (present < 0) rc = present;
        if (present > 0) found = i;
    }
    if (rc == QWEN3_OK && found < 0) {
        rc = qwen3_fail(QWEN3_ERR_IO, "%s: no tokenizer found: none of %s, %s, %s exists",
                        m->path, paths[0], paths[1], paths[2]);
    }
    if (rc == QWEN3_OK) {
        m->tokenizer = is_json[found] ? qwen3_tokenizer_load_json(paths[found])
                                      : qwen3_tokenizer_load_bin(paths[found]);
        /* the loaders set the message but return no status: FORMAT, their usual failure */
        if (!m->tokenizer) rc = QWEN3_ERR_FORMAT;
    }
    if (rc == QWEN3_OK) {
        uint32_t n = qwen3_tokenizer_size(m->tokenizer);
        if (n > m->header.vocab_size) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT,
                            "%s: the tokenizer %s has %u tokens, more than the model's "
                            "vocab_size %u",
                            m->path, paths[found], n, m->header.vocab_size);
        }
    }
    for (int i = 0; i < TOKENIZER_CANDIDATES; i++) free(paths[i]);
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

/* ====================================================================================
 * Model
 * ================================================================================== */

uint32_t qwen3_default_threads(void) {
    uint32_t n = qwen3_cpu_count();
    if (n < 1) n = 1;
    if (n > 64) n = 64;
    return n;
}

int32_t qwen3_model_resize_pool(Qwen3Model* model, uint32_t n_threads) {
    if (n_threads == 0) n_threads = qwen3_default_threads();
    if (n_threads > 1024) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "n_threads %u exceeds the limit of 1024",
                          n_threads);
    }
    qwen3_mutex_lock(model->lock);
    int32_t rc = QWEN3_OK;
    if (!model->pool || qwen3_pool_threads(model->pool) != n_threads) {
        Qwen3ThreadPool* pool = qwen3_pool_new(n_threads);
        if (!pool) {
            rc = QWEN3_ERR_OUT_OF_MEMORY; /* the pool set the message */
        } else {
            if (model->pool) qwen3_pool_free(model->pool);
            model->pool = pool;
        }
    }
    qwen3_mutex_unlock(model->lock);
    return rc;
}

static int32_t find_special(const Qwen3Model* m, const char* text) {
    return qwen3_tokenizer_find(m->tokenizer, text);
}

Qwen3Model* qwen3_model_open(const char* path, uint32_t ctx_length) {
    Qwen3Model* m = (Qwen3Model*)calloc(1, sizeof *m);
    if (!m) {
        qwen3_error_set("out of memory allocating a model (%zu bytes)", sizeof *m);
        return NULL;
    }
    int32_t rc = QWEN3_OK;
    m->path = qwen3_string_copy(path);
    if (!m->path) rc = qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory copying a path");
    if (rc == QWEN3_OK) rc = qwen3_file_map(path, &m->map);
    m->rms_eps = QWEN3_RMS_EPS; /* the .bin layouts do not store them; GGUF may */
    m->rope_theta = QWEN3_ROPE_THETA;
    if (rc == QWEN3_OK && qwen3_gguf_is_gguf(m->map.data, m->map.size)) {
        rc = qwen3_gguf_load_model(m); /* header, weights and tokenizer from the metadata */
    } else {
        if (rc == QWEN3_OK) rc = qwen3_header_parse(m->map.data, m->map.size, path, &m->header);
        if (rc == QWEN3_OK) rc = map_weights(m);
        if (rc == QWEN3_OK) rc = load_tokenizer(m);
    }
    if (rc == QWEN3_OK) rc = qwen3_templates_load(m->path, m->templates);
    if (rc == QWEN3_OK) {
        m->lock = qwen3_mutex_new();
        if (!m->lock) rc = QWEN3_ERR_OUT_OF_MEMORY;
    }
    if (rc == QWEN3_OK) rc = qwen3_model_resize_pool(m, 0);
    if (rc != QWEN3_OK) {
        qwen3_model_close(m);
        return NULL;
    }
    const Qwen3Header* h = &m->header;
    uint32_t ctx = ctx_length == 0 || ctx_length > h->seq_len ? h->seq_len : ctx_length;
    m->config = (Qwen3ModelConfig){
        .vocab_size = h->vocab_size,
        .dim = h->dim,
        .hidden_dim = h->hidden_dim,
        .n_layers = h->n_layers,
        .n_heads = h->n_heads,
        .n_kv_heads = h->n_kv_heads,
        .max_seq_len = ctx,
        .rope_theta = m->rope_theta,
    };
    m->info = (Qwen3ModelInfo){
        .format = h->format,
        .head_dim = h->head_dim,
        .group_size = h->group_size,
        .file_seq_len = h->seq_len,
        .shared_classifier = h->shared_classifier,
        .n_tokens = qwen3_tokenizer_size(m->tokenizer),
        .bos_id = -1, /* Qwen3 prepends nothing */
        .eos_id = find_special(m, "<|endoftext|>"),
        .im_start_id = find_special(m, "<|im_start|>"),
        .im_end_id = find_special(m, "<|im_end|>"),
        .think_id = find_special(m, "<think>"),
        .end_think_id = find_special(m, "</think>"),
        .rms_eps = m->rms_eps,
        .exact_tokenizer = qwen3_tokenizer_is_exact(m->tokenizer) ? 1u : 0u,
        .file_size = m->map.size,
    };
    return m;
}

void qwen3_model_close(Qwen3Model* m) {
    if (!m) return;
    if (m->pool) qwen3_pool_free(m->pool);
    qwen3_mutex_free(m->lock);
    for (uint32_t k = 0; k < QWEN3_TEMPLATE_COUNT; k++) free(m->templates[k]);
    if (m->tokenizer) qwen3_tokenizer_free(m->tokenizer);
    free(m->weights.layers);
    qwen3_gguf_model_free(m->gguf);
    qwen3_file_unmap(&m->map);
    free(m->path);
    free(m);
}
