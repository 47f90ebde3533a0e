/*
 * leak_cycle.c - load / use / free cycles through the public API, for valgrind's leak
 * checker and for the resident-set growth over many cycles. Built and run by
 * tools/sanitize.ts (not a zig-built test: under valgrind it takes a while, and the
 * numbers are what matters):
 *
 *   leak_cycle MODEL.bin CYCLES              every API path once per cycle
 *   leak_cycle MODEL.bin CYCLES MAX_GROWTH_KB   also: VmRSS after CYCLES cycles (after a
 *                                            warm-up of CYCLES / 10) may grow at most
 *                                            MAX_GROWTH_KB (Linux)
 *
 * One cycle: a failed load of a missing and of a truncated file; a load; config, info,
 * templates, thread counts; two contexts with their own samplers, tokenizing with and
 * without special tokens, prefill, decode steps, a rewind, a context filled to the end;
 * the qwen3.c-compatible generate and chat loops (stdout to the null device, stdin
 * empty); every context and the model freed. Exit 0 when every step did what the API promises.
 *
 * The resident set is read after malloc_trim(0) where glibc has it: glibc keeps freed heap
 * memory for reuse, up to twice its dynamic mmap threshold (which rises to the largest block
 * freed so far: the 11 MB tokenizer.json read) at the top of the heap, so without a trim the
 * count depended on heap layout - the same run grew 0.2 MB or 23 MB depending on the length
 * of the model's path. After a trim only memory still in use (a leak) stays resident.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__GLIBC__)
#include <malloc.h> /* malloc_trim */
#endif

#include "qwen3_inference.h"

#define FAIL(...)                                    \
    do {                                             \
        fprintf(stderr, "leak_cycle: " __VA_ARGS__); \
        fputc('\n', stderr);                         \
        return 0;                                    \
    } while (0)

static long rss_kb(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    FILE* f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static int use_context(Qwen3Model* m, Qwen3Context* ctx, const char* text, uint64_t seed) {
    int32_t ids[256];
    int32_t n = qwen3_tokenize(m, text, (uint32_t)strlen(text), QWEN3_TOKENIZE_SPECIAL, ids, 256);
    if (n <= 0 || n > 256) FAIL("tokenize gave %d: %s", n, qwen3_get_last_error());
    int32_t plain = qwen3_tokenize(m, text, (uint32_t)strlen(text), 0, NULL, 0);
    if (plain < n) FAIL("plain tokenize gave %d", plain);
    Qwen3SamplerConfig sc = {.temperature = 0.7f, .top_p = 0.9f, .top_k = 40, .min_p = 0.05f,
                             .presence_penalty = 0.3f, .seed = seed};
    if (qwen3_context_set_sampler(ctx, &sc) != QWEN3_OK) FAIL("set_sampler: %s", qwen3_get_last_error());
    if (qwen3_context_prefill(ctx, ids, (uint32_t)n) != QWEN3_OK) FAIL("prefill: %s", qwen3_get_last_error());
    int32_t next = qwen3_context_sample(ctx);
    for (int i = 0; i < 4 && next >= 0; i++) {
        uint32_t len = 0;
        qwen3_token_bytes(m, next, &len);
        next = qwen3_context_decode(ctx, next);
    }
    if (next < 0) FAIL("decode: %s", qwen3_get_last_error());
    return 1;
}

static int one_cycle(const char* path, const char* truncated) {
    if (qwen3_model_load("/nonexistent/qwen3/model.bin", 0)) FAIL("a missing file loaded");
    if (qwen3_model_load(truncated, 0)) FAIL("a truncated file loaded");

    Qwen3Model* m = qwen3_model_load(path, 0);
    if (!m) FAIL("load %s: %s", path, qwen3_get_last_error());
    const Qwen3ModelConfig* c = qwen3_model_get_config(m);
    Qwen3ModelInfo info;
    if (!c || qwen3_model_get_info(m, &info) != QWEN3_OK) FAIL("config/info");
    for (uint32_t k = 0; k < 4; k++) {
        if (!qwen3_model_get_template(m, k)) FAIL("template %u", k);
    }
    if (qwen3_model_set_threads(m, 2) != QWEN3_OK || qwen3_model_get_threads(m) != 2) FAIL("2 threads");

    Qwen3Context* a = qwen3_context_new(m, 64);
    Qwen3Context* b = qwen3_context_new(m, 0);
    if (!a || !b) FAIL("context_new: %s", qwen3_get_last_error());
    if (!use_context(m, a, "Hello <|im_end|> world", 1)) return 0;
    if (!use_context(m, b, "The quick brown fox", 2)) return 0;
    if (qwen3_context_rewind(a, 2) != QWEN3_OK) FAIL("rewind");
    int32_t fill[64];
    for (int i = 0; i < 64; i++) fill[i] = i;
    if (qwen3_context_prefill(a, fill, 62) != QWEN3_OK) FAIL("fill: %s", qwen3_get_last_error());
    if (qwen3_context_decode(a, 1) != QWEN3_ERR_CONTEXT_FULL) FAIL("a full context accepted a token");
    qwen3_context_free(a);
    qwen3_context_free(b);

    if (qwen3_model_set_threads(m, 1) != QWEN3_OK) FAIL("1 thread");
    Qwen3Config cfg = {.checkpoint_path = path, .temperature = 0.8f, .topp = 0.9f, .ctx_length = 48,
                       .mode = "generate", .prompt = "Once upon a time", .seed = 3};
    if (qwen3_inference_generate_ex(m, &cfg, NULL, 3) != QWEN3_OK) FAIL("generate: %s", qwen3_get_last_error());
    cfg.mode = "chat";
    cfg.system_prompt = "Be brief.";
    cfg.enable_thinking = true;
    if (qwen3_inference_chat_ex(m, &cfg, NULL, 3) != QWEN3_OK) FAIL("chat: %s", qwen3_get_last_error());
    qwen3_model_free(m);
    return 1;
}

/* A copy of the model's first 300 bytes next to it, for the failing-load path. */
static int write_truncated(const char* path, char* out, size_t cap) {
    snprintf(out, cap, "%s.truncated", path);
    FILE* in = fopen(path, "rb");
    FILE* o = fopen(out, "wb");
    unsigned char buf[300];
    int ok = in && o && fread(buf, 1, sizeof buf, in) == sizeof buf && fwrite(buf, 1, sizeof buf, o) == sizeof buf;
    if (in) fclose(in);
    if (o && fclose(o) != 0) ok = 0;
    return ok;
}

int main(int argc, char** argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL.bin CYCLES [MAX_GROWTH_KB]\n", argv[0]);
        return 2;
    }
    const char* path = argv[1];
    long cycles = strtol(argv[2], NULL, 10);
    long max_growth = argc > 3 ? strtol(argv[3], NULL, 10) : -1;
    char truncated[1200];
    if (!write_truncated(path, truncated, sizeof truncated)) {
        fprintf(stderr, "leak_cycle: cannot write a truncated copy of %s\n", path);
        return 2;
    }
    /* the qwen3.c-compatible loops print the answer and read further chat turns */
    if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "r", stdin)) return 2;
    int ok = 1;
    long warm = max_growth >= 0 ? cycles / 10 : 0;
    for (long i = 0; i < warm && ok; i++) ok = one_cycle(path, truncated);
    long before = rss_kb();
    clock_t t0 = clock();
    for (long i = 0; i < cycles && ok; i++) ok = one_cycle(path, truncated);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    long after = rss_kb();
    remove(truncated);
    if (!ok) return 1;
    fprintf(stderr, "leak_cycle: %ld cycles in %.1f s CPU; VmRSS %ld kB -> %ld kB (%+ld kB)\n", cycles, secs, before,
            after, after - before);
    if (max_growth >= 0 && (before < 0 || after - before > max_growth)) {
        fprintf(stderr, "leak_cycle: VmRSS grew by %ld kB, more than the %ld kB allowed\n", after - before,
                max_growth);
        return 1;
    }
    return 0;
}
