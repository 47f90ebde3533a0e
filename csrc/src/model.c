/* model.c - a loaded model from start to end: the file map, the reader for its format
 * (model_checkpoint.c or model_gguf.c), the tokenizer side files, the chat templates
 * (chat_template.c), the thread pool and the lock; and freeing it all. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "error.h"
#include "gguf.h"
#include "platform.h"
#include "transformer.h"

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

/* Whether the file holds a mixture of experts, from a first look at its header or GGUF
 * metadata (errors are left to the load proper). A decode step reads a few of its
 * experts, so its file stays mapped: a copy would read every expert at load and hold them
 * all, where the map reads only the chosen ones. */
static int is_mixture(const Qwen3FileMap* map, const char* path) {
    int moe = 0;
    if (qwen3_gguf_is_gguf(map->data, map->size)) {
        Qwen3Gguf g;
        if (qwen3_gguf_init(&g, map->data, map->size, path) == QWEN3_OK) {
            const Qwen3GgufKv* arch = qwen3_gguf_find_kv(&g, "general.architecture");
            const uint8_t* s;
            uint32_t len;
            moe = arch && qwen3_gguf_kv_string(&g, arch, &s, &len) == QWEN3_OK &&
                  qwen3_gguf_bytes_equal(s, len, "qwen3moe");
            qwen3_gguf_deinit(&g);
        }
    } else {
        Qwen3Header h;
        moe = qwen3_header_parse(map->data, map->size, path, &h) == QWEN3_OK && h.moe.n_experts > 0;
    }
    qwen3_error_clear();
    return moe;
}

Qwen3Model* qwen3_model_new(const char* path, uint32_t ctx_length) {
    Qwen3Model* m = (Qwen3Model*)calloc(1, sizeof *m);
    if (!m) {
        qwen3_error_set("out of memory allocating a model (%zu bytes)", sizeof *m);
        return NULL;
    }
    int32_t rc = QWEN3_OK;
    m->path = qwen3_string_copy(path);
    if (!m->path) rc = qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory copying a path");
    if (rc == QWEN3_OK) rc = qwen3_file_map_init(&m->map, path);
    /* weights are read in place for good: onto huge pages first where that pays */
    if (rc == QWEN3_OK && !is_mixture(&m->map, path)) (void)qwen3_file_map_to_huge_pages(&m->map);
    m->rms_eps = QWEN3_RMS_EPS; /* the .bin layouts do not store them; GGUF may */
    m->rope_theta = QWEN3_ROPE_THETA;
    if (rc == QWEN3_OK && qwen3_gguf_is_gguf(m->map.data, m->map.size)) {
        rc = qwen3_model_read_gguf(m); /* header, weights and tokenizer from the metadata */
    } else {
        if (rc == QWEN3_OK) rc = qwen3_model_read_checkpoint(m);
        if (rc == QWEN3_OK) rc = load_tokenizer(m);
    }
    if (rc == QWEN3_OK) rc = qwen3_templates_load(m->path, m->templates);
    if (rc == QWEN3_OK) {
        m->lock = qwen3_mutex_new();
        if (!m->lock) rc = QWEN3_ERR_OUT_OF_MEMORY;
    }
    if (rc == QWEN3_OK) rc = qwen3_model_resize_pool(m, 0);
    if (rc != QWEN3_OK) {
        qwen3_model_free(m);
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

QWEN3_API void qwen3_model_free(Qwen3Model* m) {
    if (!m) return;
    if (m->pool) qwen3_pool_free(m->pool);
    qwen3_batch_scratch_free(m->batch);
    qwen3_mutex_free(m->lock);
    for (uint32_t k = 0; k < QWEN3_TEMPLATE_COUNT; k++) free(m->templates[k]);
    if (m->tokenizer) qwen3_tokenizer_free(m->tokenizer);
    free(m->weights.layers);
    free(m->checkpoint_moe);
    free(m->checkpoint_experts);
    qwen3_gguf_model_free(m->gguf);
    qwen3_file_map_deinit(&m->map);
    free(m->path);
    free(m);
}
