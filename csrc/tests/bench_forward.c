/* bench_forward.c - prefill and decode speed of the C engine on one model, in tok/s.
 *
 *   zig build bench-forward && zig-out/bin/bench-forward MODEL [--threads N] [--tier NAME]
 *       [--pp N] [--tg N] [--runs R] [--json]
 *
 * Each run prefills N pseudo-random tokens into a fresh position 0 and then decodes tg
 * tokens greedily (argmax of the logits, the first step untimed as a warm-up, as
 * llama-bench does). Prints the median of the runs and every run's numbers, so two builds
 * can be compared by running them alternately. Not a test: `zig build test` builds it but
 * does not run it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "qwen3_inference.h"
#include "threadpool.h"

static double now_s(void) {
    struct timespec ts;
#if defined(CLOCK_MONOTONIC)
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else
    timespec_get(&ts, TIME_UTC);
#endif
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

static int32_t argmax(const float* x, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++) {
        if (x[i] > x[best]) best = i;
    }
    return (int32_t)best;
}

#define MAX_RUNS 64

int main(int argc, char** argv) {
    const char* path = NULL;
    const char* tier = NULL;
    uint32_t threads = 0, pp = 128, tg = 32;
    int runs = 3, json = 0;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--threads") == 0 && v) threads = (uint32_t)atoi(argv[++i]);
        else if (strcmp(a, "--tier") == 0 && v) tier = argv[++i];
        else if (strcmp(a, "--pp") == 0 && v) pp = (uint32_t)atoi(argv[++i]);
        else if (strcmp(a, "--tg") == 0 && v) tg = (uint32_t)atoi(argv[++i]);
        else if (strcmp(a, "--runs") == 0 && v) runs = atoi(argv[++i]);
        else if (strcmp(a, "--json") == 0) json = 1;
        else if (a[0] != '-' && !path) path = a;
        else {
            fprintf(stderr, "usage: bench-forward MODEL [--threads N] [--tier NAME] [--pp N] [--tg N] [--runs R] [--json]\n");
            return 2;
        }
    }
    if (!path || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench-forward MODEL [--threads N] [--tier NAME] [--pp N] [--tg N] [--runs 1..%d] [--json]\n",
                MAX_RUNS);
        return 2;
    }
    if (tier && qwen3_kernel_select(tier) != QWEN3_OK) {
        fprintf(stderr, "bench-forward: %s\n", qwen3_get_last_error());
        return 1;
    }
    const uint32_t ctx_len = pp + tg + 2;
    const double t_load = now_s();
    Qwen3Model* m = qwen3_model_load(path, ctx_len);
    if (!m) {
        fprintf(stderr, "bench-forward: %s\n", qwen3_get_last_error());
        return 1;
    }
    const double load_s = now_s() - t_load;
    if (threads && qwen3_model_set_threads(m, threads) != QWEN3_OK) {
        fprintf(stderr, "bench-forward: %s\n", qwen3_get_last_error());
        return 1;
    }
    const uint32_t vocab = qwen3_model_get_config(m)->vocab_size;
    Qwen3Context* ctx = qwen3_context_new(m, ctx_len);
    int32_t* tokens = malloc((pp > 0 ? pp : 1) * sizeof(int32_t));
    if (!ctx || !tokens) {
        fprintf(stderr, "bench-forward: %s\n", ctx ? "out of memory" : qwen3_get_last_error());
        return 1;
    }
    uint32_t s = 12345;
    for (uint32_t i = 0; i < pp; i++) {
        s = s * 1664525u + 1013904223u;
        tokens[i] = (int32_t)(s % (vocab < 151000 ? vocab : 151000));
    }
    /* clock() is the process's CPU time (all threads): on a machine shared with other
     * work it shows the cost of the computation apart from the time spent waiting for a
     * core. */
    double pps[MAX_RUNS], tgs[MAX_RUNS], pp_cpu[MAX_RUNS], tg_cpu[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        qwen3_context_rewind(ctx, 0);
        int32_t next = 9707 % (int32_t)vocab;
        pps[r] = pp_cpu[r] = 0;
        if (pp > 0) {
            const double t0 = now_s();
            const clock_t c0 = clock();
            if (qwen3_context_prefill(ctx, tokens, pp) != QWEN3_OK) {
                fprintf(stderr, "bench-forward: prefill: %s\n", qwen3_get_last_error());
                return 1;
            }
            pps[r] = pp / (now_s() - t0);
            pp_cpu[r] = pp / ((double)(clock() - c0) / CLOCKS_PER_SEC);
            next = argmax(qwen3_context_logits(ctx), vocab);
        }
        tgs[r] = tg_cpu[r] = 0;
        if (tg > 0) {
            if (qwen3_context_prefill(ctx, &next, 1) != QWEN3_OK) return 1;
            next = argmax(qwen3_context_logits(ctx), vocab);
            const double t0 = now_s();
            const clock_t c0 = clock();
            for (uint32_t i = 0; i < tg; i++) {
                if (qwen3_context_prefill(ctx, &next, 1) != QWEN3_OK) {
                    fprintf(stderr, "bench-forward: decode: %s\n", qwen3_get_last_error());
                    return 1;
                }
                next = argmax(qwen3_context_logits(ctx), vocab);
            }
            tgs[r] = tg / (now_s() - t0);
            tg_cpu[r] = tg / ((double)(clock() - c0) / CLOCKS_PER_SEC);
        }
        if (!json) {
            fprintf(stderr, "run %d: pp%u %.1f tok/s (%.1f per CPU second), tg%u %.2f tok/s (%.2f per CPU second)\n",
                    r + 1, pp, pps[r], pp_cpu[r], tg, tgs[r], tg_cpu[r]);
        }
    }
    double pp_all[MAX_RUNS], tg_all[MAX_RUNS];
    memcpy(pp_all, pps, sizeof pps);
    memcpy(tg_all, tgs, sizeof tgs);
    const double pp_med = median(pp_all, runs), tg_med = median(tg_all, runs);
    const double pp_cpu_med = median(pp_cpu, runs), tg_cpu_med = median(tg_cpu, runs);
    if (json) {
        printf("{\"kernel\":\"%s\",\"threads\":%u,\"loadSeconds\":%.4f,\"pp\":%u,\"ppTokPerSec\":%.2f,\"tg\":%u,"
               "\"tgTokPerSec\":%.3f,\"ppTokPerCpuSec\":%.2f,\"tgTokPerCpuSec\":%.3f}\n",
               qwen3_kernel_name(), qwen3_model_get_threads(m), load_s, pp, pp_med, tg, tg_med, pp_cpu_med, tg_cpu_med);
    } else {
        printf("%s, %u threads: pp%u %.1f tok/s (%.1f per CPU s), tg%u %.2f tok/s (%.2f per CPU s), median of %d\n",
               qwen3_kernel_name(), qwen3_model_get_threads(m), pp, pp_med, pp_cpu_med, tg, tg_med, tg_cpu_med, runs);
    }
    /* How often the pool's stall detector kept runs on the calling thread (threadpool.c). */
    const Qwen3PoolStats ps = qwen3_pool_stats(m->pool);
    fprintf(stderr, "pool: %llu parallel runs, %llu solo runs, %llu solo stretches\n",
            (unsigned long long)ps.parallel_runs, (unsigned long long)ps.solo_runs,
            (unsigned long long)ps.solo_stretches);
    free(tokens);
    qwen3_context_free(ctx);
    qwen3_model_free(m);
    return 0;
}
