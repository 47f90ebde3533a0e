/* bench_float.c - how fast the unquantised matvec tiers (kernels_float.h) stream weights,
 * in GB/s, one thread, per storage type.
 *
 *   zig build bench-float && zig-out/bin/bench-float [--rows R] [--cols C] [--iters K]
 *
 * Default: 8 copies of a 3072 x 1024 matrix (Qwen3-0.6B's FFN shape) used in turn, so a
 * copy is read from memory, not from cache, as in a decode step. GB/s counts the weight
 * bytes read (4 per value for f32, 2 for f16 / bf16).
 * Not a test: `zig build test` builds it but does not run it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels_float.h"

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
    uint32_t rows = 3072, cols = 1024, iters = 40, copies = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rows") == 0) rows = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--cols") == 0) cols = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--iters") == 0) iters = (uint32_t)atoi(argv[i + 1]);
    }
    const size_t n = (size_t)rows * cols;
    float* x = (float*)malloc(cols * sizeof(float));
    float* out = (float*)malloc(rows * sizeof(float));
    uint8_t* data = (uint8_t*)malloc(n * 4 * copies);
    if (!x || !out || !data) return 1;
    for (uint32_t j = 0; j < cols; j++) x[j] = (float)(j % 17) * 0.01f - 0.08f;
    for (size_t i = 0; i < n * 4 * copies; i++) data[i] = (uint8_t)(i * 2654435761u >> 13) & 0x3B;
    static const uint32_t types[3] = {QWEN3_WEIGHT_F32, QWEN3_WEIGHT_F16, QWEN3_WEIGHT_BF16};
    printf("%u x %u, %u copies, 1 thread\n", rows, cols, copies);
    for (const char* const* name = qwen3_float_kernels_all_names(); *name; name++) {
        const Qwen3FloatKernels* k = qwen3_float_kernels_find(*name);
        if (!k) {
            printf("  %-7s not supported by this CPU\n", *name);
            continue;
        }
        for (int t = 0; t < 3; t++) {
            const size_t bytes = n * qwen3_weight_type_bytes(types[t]);
            double best = 1e9;
            for (uint32_t it = 0; it < iters; it++) {
                const Qwen3Matrix w = qwen3_matrix_float(types[t], data + (it % copies) * bytes, rows, cols);
                const double t0 = now_s();
                k->matvec[types[t]](out, &w, x, 0, rows);
                const double dt = now_s() - t0;
                if (dt < best) best = dt;
            }
            printf("  %-7s %-5s %6.1f GB/s  (%.3f ms)\n", *name, qwen3_weight_type_name(types[t]), bytes / best / 1e9,
                   best * 1e3);
        }
    }
    free(x);
    free(out);
    free(data);
    return 0;
}
