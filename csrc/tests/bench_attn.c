/* bench_attn.c - how fast each tier's fp32 attention kernels (attn_scores, attn_values of
 * kernels.h) run on a prefill tile, in multiply-adds per nanosecond, one thread.
 *
 *   zig build bench-attn && zig-out/bin/bench-attn [--queries Q] [--positions P] [--iters K]
 *
 * Default: the calls a 2048-token prefill of Qwen3-0.6B makes most (transformer.c's
 * attend_float): 64 queries of one head (a tile's tokens, 2048 floats apart as in the
 * block's query rows) against a chunk of 64 positions of head_dim 128, all in L1/L2.
 * Not a test: `zig build test` builds it but does not run it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "platform.h"

int main(int argc, char** argv) {
    uint32_t n_q = 64, n_pos = 64, iters = 2000, ctx = 2048;
    const uint32_t hd = 128, q_stride = 2048;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--queries") == 0) n_q = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--positions") == 0) n_pos = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--iters") == 0) iters = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--context") == 0) ctx = (uint32_t)atoi(argv[i + 1]);
    }
    if (n_q == 0 || n_q > 4096 || n_pos == 0 || n_pos > 65536 || iters == 0 || ctx < n_pos || ctx > 65536) {
        fprintf(stderr, "bench-attn: --queries 1..4096, --positions 1..65536, --context positions..65536, --iters >= 1\n");
        return 2;
    }
    /* a score row holds the whole context, as a context's att rows do */
    const uint32_t blocks = (n_pos + QWEN3_KV_BLOCK - 1) / QWEN3_KV_BLOCK;
    const uint32_t s_stride = (ctx + QWEN3_KV_BLOCK - 1) / QWEN3_KV_BLOCK * QWEN3_KV_BLOCK;
    float* q = (float*)malloc((size_t)n_q * q_stride * sizeof(float));
    float* keys = (float*)malloc((size_t)blocks * QWEN3_KV_BLOCK * hd * sizeof(float));
    float* values = (float*)malloc((size_t)n_pos * hd * sizeof(float));
    float* att = (float*)malloc((size_t)n_q * s_stride * sizeof(float));
    float* out = (float*)malloc((size_t)n_q * q_stride * sizeof(float));
    uint32_t* lens = (uint32_t*)malloc(n_q * sizeof(uint32_t));
    if (!q || !keys || !values || !att || !out || !lens) return 1;
    for (size_t i = 0; i < (size_t)n_q * q_stride; i++) q[i] = (float)((i * 2654435761u >> 11) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < (size_t)blocks * QWEN3_KV_BLOCK * hd; i++) keys[i] = (float)((i * 40503u >> 3) % 997) * 1e-3f - 0.5f;
    for (size_t i = 0; i < (size_t)n_pos * hd; i++) values[i] = (float)((i * 69069u >> 5) % 991) * 1e-3f - 0.5f;
    for (size_t i = 0; i < (size_t)n_q * s_stride; i++) att[i] = (float)(i % 89) * 1e-2f;
    /* a causal tile's last chunk would be ragged; the full chunk is the common case */
    for (uint32_t j = 0; j < n_q; j++) lens[j] = n_pos;
    const double madds = (double)n_q * n_pos * hd;
    printf("%u queries x %u positions, head_dim %u, 1 thread (multiply-adds per ns; best of %u)\n", n_q, n_pos, hd,
           iters);
    for (const char* const* name = qwen3_kernels_all_names(); *name; name++) {
        const Qwen3KernelTable* k = qwen3_kernels_find(*name);
        if (!k) {
            printf("  %-11s not supported by this CPU\n", *name);
            continue;
        }
        double best_s = 1e9, best_v = 1e9;
        for (uint32_t it = 0; it < iters; it++) {
            double t0 = qwen3_time_seconds();
            k->attn_scores(att, s_stride, q, q_stride, n_q, keys, (size_t)QWEN3_KV_BLOCK * hd, n_pos, hd, 0.088f);
            double t1 = qwen3_time_seconds();
            k->attn_values(out, q_stride, att, s_stride, lens, n_q, values, hd, hd, 0);
            double t2 = qwen3_time_seconds();
            if (t1 - t0 < best_s) best_s = t1 - t0;
            if (t2 - t1 < best_v) best_v = t2 - t1;
        }
        printf("  %-11s scores %6.1f  values %6.1f  (%.1f / %.1f us)\n", *name, madds / best_s * 1e-9,
               madds / best_v * 1e-9, best_s * 1e6, best_v * 1e6);
    }
    free(q);
    free(keys);
    free(values);
    free(att);
    free(out);
    free(lens);
    return 0;
}
