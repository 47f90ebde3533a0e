/* bench_batch.c - aggregate decode speed of N contexts stepping together through
 * qwen3_context_decode_batch, in tok/s, with no binding in between.
 *
 *   zig build bench-tools && zig-out/bin/bench-batch MODEL [--threads T] [--ns 1,2,4,8,16]
 *       [--steps S] [--runs R]
 *
 * Each context holds a 32-token prompt; a run of one N times S batched steps of N
 * contexts and then rewinds them. The N alternate within each run (order rotated per run)
 * so a change of load on the machine hits all of them alike; prints the median rate of
 * each N and its multiple of the first N's. Not a test: `zig build test` builds it but does
 * not run it. (bench/batch_bench.ts measures the same through the Deno binding.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qwen3_inference.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void* a, const void* b) {
    const double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

static double median(double* v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define MAX_NS 16
#define MAX_CTX 256
#define MAX_RUNS 32
#define PROMPT 32

int main(int argc, char** argv) {
    const char* path = NULL;
    uint32_t threads = 1, ns[MAX_NS] = {1, 2, 4, 8, 16}, n_ns = 5, steps = 8;
    int runs = 3;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--threads") == 0 && v) {
            threads = (uint32_t)atoi(argv[++i]);
        } else if (strcmp(a, "--steps") == 0 && v) {
            steps = (uint32_t)atoi(argv[++i]);
        } else if (strcmp(a, "--runs") == 0 && v) {
            runs = atoi(argv[++i]);
        } else if (strcmp(a, "--ns") == 0 && v) {
            n_ns = 0;
            for (char* s = argv[++i]; *s && n_ns < MAX_NS; s++) {
                ns[n_ns++] = (uint32_t)strtoul(s, &s, 10);
                if (!*s) break;
            }
        } else if (a[0] != '-' && !path) {
            path = a;
        } else {
            fprintf(stderr, "usage: bench-batch MODEL [--threads T] [--ns 1,2,4] [--steps S] [--runs R]\n");
            return 2;
        }
    }
    uint32_t most = 0;
    for (uint32_t k = 0; k < n_ns; k++) most = ns[k] > most ? ns[k] : most;
    if (!path || runs < 1 || runs > MAX_RUNS || steps < 1 || most < 1 || most > MAX_CTX) {
        fprintf(stderr, "bench-batch: give a model, 1..%d runs, steps >= 1, N in 1..%d\n", MAX_RUNS, MAX_CTX);
        return 2;
    }
    Qwen3Model* m = qwen3_model_load(path, 0);
    if (!m || qwen3_model_set_threads(m, threads) != QWEN3_OK) {
        fprintf(stderr, "bench-batch: %s\n", qwen3_get_last_error());
        return 1;
    }
    const uint32_t vocab = qwen3_model_get_config(m)->vocab_size;
    Qwen3Context* ctx[MAX_CTX];
    int32_t tokens[MAX_CTX], prompt[PROMPT];
    uint64_t rng = 88172645463325252ull;
    for (uint32_t i = 0; i < most; i++) {
        ctx[i] = qwen3_context_new(m, PROMPT + steps + 2);
        for (uint32_t t = 0; t < PROMPT; t++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            prompt[t] = (int32_t)(rng % vocab);
        }
        if (!ctx[i] || qwen3_context_prefill(ctx[i], prompt, PROMPT) != QWEN3_OK) {
            fprintf(stderr, "bench-batch: %s\n", qwen3_get_last_error());
            return 1;
        }
    }
    for (uint32_t i = 0; i < most; i++) tokens[i] = (int32_t)((i * 7919u) % vocab);
    /* warm-up: every weight page touched, the batch scratch made */
    if (qwen3_context_decode_batch(ctx, tokens, most) != QWEN3_OK) {
        fprintf(stderr, "bench-batch: %s\n", qwen3_get_last_error());
        return 1;
    }
    static double rate[MAX_NS][MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        for (uint32_t k = 0; k < n_ns; k++) {
            const uint32_t j = (k + (uint32_t)r) % n_ns, n = ns[j];
            for (uint32_t i = 0; i < most; i++) qwen3_context_rewind(ctx[i], PROMPT);
            const double t0 = now_s();
            for (uint32_t s = 0; s < steps; s++) {
                for (uint32_t i = 0; i < n; i++) tokens[i] = (int32_t)((s * 131u + i * 7919u) % vocab);
                if (qwen3_context_decode_batch(ctx, tokens, n) != QWEN3_OK) {
                    fprintf(stderr, "bench-batch: %s\n", qwen3_get_last_error());
                    return 1;
                }
            }
            rate[j][r] = (double)n * steps / (now_s() - t0);
        }
    }
    printf("threads %u, kernel %s, %u steps, median of %d runs\n", threads, qwen3_kernel_name(), steps, runs);
    double base = 0;
    for (uint32_t k = 0; k < n_ns; k++) {
        const double med = median(rate[k], runs);
        if (k == 0) base = med;
        printf("N %3u  %8.1f tok/s  %6.1f per sequence  %5.2fx\n", ns[k], med, med / ns[k], med / base);
    }
    for (uint32_t i = 0; i < most; i++) qwen3_context_free(ctx[i]);
    qwen3_model_free(m);
    return 0;
}
