/*
 * fuzz_model_header.c - the checkpoint loader (qwen3_model_load) given arbitrary bytes
 * as model.bin, next to a valid byte-level .tokenizer. A file the loader accepts is then
 * run: a context, a prefill, sampling and a decode step over whatever weights it holds
 * (NaN, infinities, denormals), since a file that passes the header checks reaches the
 * forward pass.
 *
 * Invariants beyond "no crash": a rejection sets an error that names the file (unless
 * memory ran out) and quotes no raw control byte; an accepted file reports its header.
 * Seeds: csrc/fuzz/corpus/fuzz_model_header/ (tiny valid checkpoints in both layouts).
 */
#include "fuzz_common.h"

static int mh_ready;

static void mh_setup(void) {
    if (mh_ready) return;
    uint8_t tok[4096];
    size_t n = fuzz_byte_tokenizer(tok, 13);
    char path[600];
    fuzz_write(path, sizeof path, "model.bin.tokenizer", tok, n);
    mh_ready = 1;
}

/* Runs a loaded model a little, with token ids taken from the input. */
static void mh_run(Qwen3Model* m, const uint8_t* data, size_t size) {
    const Qwen3ModelConfig* c = qwen3_model_get_config(m);
    Qwen3ModelInfo info;
    if (!c || qwen3_model_get_info(m, &info) != QWEN3_OK) FUZZ_FAIL("no config for a loaded model");
    if (c->max_seq_len == 0 || c->max_seq_len > 16) FUZZ_FAIL("max_seq_len %u ignores ctx_length 16", c->max_seq_len);
    if (qwen3_model_set_threads(m, 1) != QWEN3_OK) FUZZ_FAIL("set_threads(1) failed");
    Qwen3Context* ctx = qwen3_context_new(m, 8);
    if (!ctx) {
        fuzz_check_error("qwen3_context_new");
        return;
    }
    const uint32_t len = qwen3_context_length(ctx);
    if (len < 8) {
        /* The file's seq_len caps the context below the 8 asked for: the engine must refuse
         * what does not fit (nothing done) and run what does. */
        int32_t zeros[8] = {0};
        if (qwen3_context_prefill(ctx, zeros, len + 1) != QWEN3_ERR_CONTEXT_FULL)
            FUZZ_FAIL("prefill of %u tokens into a context of %u was not refused", len + 1, len);
        if (qwen3_context_position(ctx) != 0) FUZZ_FAIL("a refused prefill moved the position");
        if (qwen3_context_prefill(ctx, zeros, len) != QWEN3_OK)
            FUZZ_FAIL("prefill of %u tokens into a context of %u failed: %s", len, len, qwen3_get_last_error());
        qwen3_context_free(ctx);
        return;
    }
    int32_t tokens[3];
    for (int i = 0; i < 3; i++) {
        uint32_t b = size > (size_t)(300 + i) ? data[300 + i] : (uint32_t)i;
        tokens[i] = (int32_t)((b * 7919u + (uint32_t)i) % c->vocab_size);
    }
    if (qwen3_context_prefill(ctx, tokens, 3) != QWEN3_OK) FUZZ_FAIL("prefill of 3 tokens failed: %s", qwen3_get_last_error());
    if (!qwen3_context_logits(ctx)) FUZZ_FAIL("no logits after a prefill");
    Qwen3SamplerConfig sc = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 5, .min_p = 0.05f,
                             .presence_penalty = 0.5f, .seed = 7};
    if (qwen3_context_set_sampler(ctx, &sc) != QWEN3_OK) FUZZ_FAIL("set_sampler failed");
    int32_t next = qwen3_context_sample(ctx);
    if (next < 0 || (uint32_t)next >= c->vocab_size) FUZZ_FAIL("sampled token %d outside [0, %u)", next, c->vocab_size);
    next = qwen3_context_decode(ctx, next);
    if (next < 0 || (uint32_t)next >= c->vocab_size) FUZZ_FAIL("decoded token %d outside [0, %u)", next, c->vocab_size);
    sc.temperature = 0.0f;
    qwen3_context_set_sampler(ctx, &sc);
    next = qwen3_context_decode(ctx, next);
    if (next < 0 || (uint32_t)next >= c->vocab_size) FUZZ_FAIL("greedy token %d outside [0, %u)", next, c->vocab_size);
    if (qwen3_context_position(ctx) != 5) FUZZ_FAIL("position %u after 5 tokens", qwen3_context_position(ctx));
    if (qwen3_context_rewind(ctx, 1) != QWEN3_OK) FUZZ_FAIL("rewind to 1 failed");
    /* 8 positions hold 1 + 7 more; the eighth must be refused as context-full. */
    int32_t seven[7] = {0, 1, 2, 3, 4, 5, 6};
    if (qwen3_context_prefill(ctx, seven, 7) != QWEN3_OK) FUZZ_FAIL("prefill to the end failed");
    if (qwen3_context_decode(ctx, 0) != QWEN3_ERR_CONTEXT_FULL) FUZZ_FAIL("a full context accepted a token");
    qwen3_context_free(ctx);
    int32_t ids[16];
    if (qwen3_tokenize(m, "ab cd<|im_end|>", 15, QWEN3_TOKENIZE_SPECIAL, ids, 16) < 0) FUZZ_FAIL("tokenize failed");
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    mh_setup();
    char path[600];
    fuzz_write(path, sizeof path, "model.bin", data, size);
    Qwen3Model* m = qwen3_model_load(path, 16);
    if (!m) {
        fuzz_check_error("qwen3_model_load");
        const char* err = qwen3_get_last_error();
        if (!strstr(err, path) && strncmp(err, "out of memory", 13) != 0)
            FUZZ_FAIL("the load error does not name the file: \"%s\"", err);
        return 0;
    }
    mh_run(m, data, size);
    qwen3_model_free(m);
    return 0;
}
