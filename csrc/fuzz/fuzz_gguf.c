/*
 * fuzz_gguf.c - the GGUF reader and loader given arbitrary bytes: qwen3_gguf_init on the
 * bytes in memory (metadata, tensor table, offsets), then qwen3_model_load on the same
 * bytes written as model.gguf, which turns an accepted qwen3 GGUF into a model
 * (hyper-parameters, Q8_0 / Q4_0 conversion, F32 / F16 / BF16 views, the tokenizer from
 * the metadata lists) and is run a little like fuzz_model_header does.
 *
 * Invariants: every tensor of an accepted table lies inside the file; a rejection sets an
 * error that names the file and quotes no raw control byte.
 * Seeds: csrc/fuzz/corpus/fuzz_gguf/ (small qwen3 GGUF files from the TS converter).
 */
#include "fuzz_common.h"

#include "gguf.h"

static void gg_check_table(const Qwen3Gguf* g, uint64_t size) {
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const Qwen3GgufTensor* t = &g->tensors[i];
        if (t->offset > size || t->bytes > size - t->offset)
            FUZZ_FAIL("tensor %llu [%llu, +%llu) runs past the %llu-byte file", (unsigned long long)i,
                      (unsigned long long)t->offset, (unsigned long long)t->bytes, (unsigned long long)size);
        if (t->n_dims == 0 || t->n_dims > QWEN3_GGUF_MAX_DIMS) FUZZ_FAIL("tensor %llu has %u dims", (unsigned long long)i, t->n_dims);
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (g->kv[i].offset > size) FUZZ_FAIL("metadata %llu starts past the file", (unsigned long long)i);
    }
    qwen3_gguf_find_kv(g, "general.architecture");
    qwen3_gguf_find_tensor(g, "token_embd.weight");
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Qwen3Gguf g;
    if (qwen3_gguf_init(&g, data, size, "fuzz.gguf") == QWEN3_OK) {
        gg_check_table(&g, size);
        qwen3_gguf_deinit(&g);
    } else {
        fuzz_check_error("qwen3_gguf_init");
    }
    if (!qwen3_gguf_is_gguf(data, size)) return 0; /* the checkpoint harness covers the rest */
    char path[600];
    fuzz_write(path, sizeof path, "fuzz_model.gguf", data, size);
    Qwen3Model* m = qwen3_model_load(path, 16);
    if (!m) {
        fuzz_check_error("qwen3_model_load (GGUF)");
        const char* err = qwen3_get_last_error();
        if (!strstr(err, path) && strncmp(err, "out of memory", 13) != 0)
            FUZZ_FAIL("the load error does not name the file: \"%s\"", err);
        return 0;
    }
    const Qwen3ModelConfig* c = qwen3_model_get_config(m);
    qwen3_model_set_threads(m, 1);
    Qwen3Context* ctx = qwen3_context_new(m, 8);
    if (ctx) {
        int32_t tokens[2] = {0, (int32_t)(c->vocab_size - 1)};
        if (qwen3_context_prefill(ctx, tokens, 2) != QWEN3_OK) FUZZ_FAIL("prefill failed: %s", qwen3_get_last_error());
        Qwen3SamplerConfig sc = {.temperature = 0.9f, .top_p = 0.8f, .seed = 3};
        qwen3_context_set_sampler(ctx, &sc);
        int32_t next = qwen3_context_decode(ctx, 1);
        if (next < 0 || (uint32_t)next >= c->vocab_size) FUZZ_FAIL("decoded token %d outside [0, %u)", next, c->vocab_size);
        qwen3_context_free(ctx);
    } else {
        fuzz_check_error("qwen3_context_new");
    }
    int32_t ids[32];
    if (qwen3_tokenize(m, "hello <|im_end|> world", 22, QWEN3_TOKENIZE_SPECIAL, ids, 32) < 0)
        fuzz_check_error("qwen3_tokenize");
    qwen3_model_free(m);
    return 0;
}
