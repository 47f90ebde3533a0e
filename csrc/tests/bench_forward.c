/* bench_forward.c - prefill and decode speed of the C engine on one model, in tok/s.
 *
 *   zig build bench-forward && zig-out/bin/bench-forward MODEL [--threads N] [--tier NAME]
 *       [--pp N] [--tg N] [--runs R] [--json] [--kv f32|q8|f16] [--at N] [--logit-error N]
 *
 * --kv picks the KV cache type (docs/numerics.md#int8-kv-cache, #fp16-kv-cache). --at N times decoding at
 * position N without running a prefill: the cache's first N positions are filled with a
 * byte pattern instead (attention costs the same whatever the values; written, not left
 * as untouched zero pages, so every read goes to memory as a real cache's would).
 * --logit-error N runs N pseudo-random tokens through an f32-cache and a q8-cache context
 * (f16 with --kv f16; verify passes of 64) and prints the largest logit difference and the
 * mean and largest KL divergence of that cache's next-token distribution from the f32 one's.
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
#include "transformer.h"
#include <math.h>

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

static const char* kv_name(uint32_t kv) { return kv == QWEN3_KV_Q8 ? "q8" : kv == QWEN3_KV_F16 ? "f16" : "f32"; }

/* --logit-error: a compact cache's (q8 or f16) logits against the f32 cache's over n tokens. */
static int compare_logits(Qwen3Model* m, uint32_t n, uint32_t vocab, uint32_t kv) {
    const Qwen3ContextOptions f32_options = {.kv_type = QWEN3_KV_F32}, compact_options = {.kv_type = kv};
    Qwen3Context* a = qwen3_context_new_ex(m, n, &f32_options);
    Qwen3Context* b = qwen3_context_new_ex(m, n, &compact_options);
    const uint32_t step = 64;
    float* la = malloc((size_t)step * vocab * sizeof(float));
    float* lb = malloc((size_t)step * vocab * sizeof(float));
    int32_t* tokens = malloc((size_t)n * sizeof(int32_t));
    if (!a || !b || !la || !lb || !tokens) {
        fprintf(stderr, "bench-forward: %s\n", qwen3_get_last_error());
        return 1;
    }
    uint32_t s = 777;
    for (uint32_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        tokens[i] = (int32_t)(s % (vocab < 151000 ? vocab : 151000));
    }
    double worst = 0.0, kl_sum = 0.0, kl_max = 0.0;
    uint32_t agree = 0;
    for (uint32_t i = 0; i < n; i += step) {
        const uint32_t k = n - i < step ? n - i : step;
        if (qwen3_context_verify(a, tokens + i, k, la) != QWEN3_OK ||
            qwen3_context_verify(b, tokens + i, k, lb) != QWEN3_OK) {
            fprintf(stderr, "bench-forward: %s\n", qwen3_get_last_error());
            return 1;
        }
        for (uint32_t t = 0; t < k; t++) {
            const float* x = la + (size_t)t * vocab;
            const float* y = lb + (size_t)t * vocab;
            double mx = x[0], my = y[0], za = 0, zb = 0, kl = 0;
            for (uint32_t v = 0; v < vocab; v++) {
                if (x[v] > mx) mx = x[v];
                if (y[v] > my) my = y[v];
                const double d = fabs((double)x[v] - y[v]);
                if (d > worst) worst = d;
            }
            for (uint32_t v = 0; v < vocab; v++) {
                za += exp(x[v] - mx);
                zb += exp(y[v] - my);
            }
            for (uint32_t v = 0; v < vocab; v++) {
                const double pa = exp(x[v] - mx) / za, pb = exp(y[v] - my) / zb;
                if (pa > 0 && pb > 0) kl += pa * log(pa / pb);
            }
            kl_sum += kl;
            if (kl > kl_max) kl_max = kl;
            agree += argmax(x, vocab) == argmax(y, vocab);
        }
    }
    printf("%s vs f32 KV cache over %u positions: max |logit diff| %.4f, KL(f32 || %s) mean %.3g max %.3g, argmax "
           "agrees %u/%u; cache %.1f vs %.1f MiB\n",
           kv_name(kv), n, worst, kv_name(kv), kl_sum / n, kl_max, agree, n,
           (double)qwen3_context_kv_bytes(b) / (1 << 20),
           (double)qwen3_context_kv_bytes(a) / (1 << 20));
    free(la);
    free(lb);
    free(tokens);
    qwen3_context_free(a);
    qwen3_context_free(b);
    qwen3_model_free(m);
    return 0;
}

int main(int argc, char** argv) {
    const char* path = NULL;
    const char* tier = NULL;
    uint32_t threads = 0, pp = 128, tg = 32, kv = QWEN3_KV_F32, at = 0, logit_error = 0;
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
        else if (strcmp(a, "--kv") == 0 && v && (!strcmp(v, "f32") || !strcmp(v, "q8") || !strcmp(v, "f16")))
            kv = !strcmp(argv[++i], "q8") ? QWEN3_KV_Q8 : !strcmp(argv[i], "f16") ? QWEN3_KV_F16 : QWEN3_KV_F32;
        else if (strcmp(a, "--at") == 0 && v) at = (uint32_t)atoi(argv[++i]);
        else if (strcmp(a, "--logit-error") == 0 && v) logit_error = (uint32_t)atoi(argv[++i]);
        else if (a[0] != '-' && !path) path = a;
        else {
            fprintf(stderr, "usage: bench-forward MODEL [--threads N] [--tier NAME] [--pp N] [--tg N] [--runs R] "
                            "[--json] [--kv f32|q8|f16] [--at N] [--logit-error N]\n");
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
    if (at && pp) {
        fprintf(stderr, "bench-forward: --at times decoding without a prefill: give --pp 0\n");
        return 2;
    }
    const uint32_t ctx_len = (logit_error > pp + at ? logit_error : pp + at) + tg + 2;
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
    if (logit_error) return compare_logits(m, logit_error, vocab, kv == QWEN3_KV_F16 ? QWEN3_KV_F16 : QWEN3_KV_Q8);
    const Qwen3ContextOptions options = {.kv_type = kv};
    Qwen3Context* ctx = qwen3_context_new_ex(m, ctx_len, &options);
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
    if (ctx && at) {
        /* the first `at` positions' keys, values and scales: a pattern of small numbers */
        memset(ctx->lazy.base, 0x11, (size_t)ctx->kv_bytes);
    }
    for (int r = 0; r < runs; r++) {
        qwen3_context_rewind(ctx, 0);
        ctx->pos = at; /* 0 unless --at */
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
        printf("%s, %u threads, kv %s (%.1f MiB)%s%u: pp%u %.1f tok/s (%.1f per CPU s), tg%u %.2f tok/s (%.2f per CPU "
               "s), median of %d\n",
               qwen3_kernel_name(), qwen3_model_get_threads(m), kv_name(kv),
               (double)qwen3_context_kv_bytes(ctx) / (1 << 20), at ? ", decode at " : "", at, pp, pp_med, pp_cpu_med, tg,
               tg_med, tg_cpu_med, runs);
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
