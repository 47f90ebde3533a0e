/* test_kernels_kv.c - the int8 KV cache's dequantisation tiers (kernels_kv.h) against the
 * scalar one, bit for bit: random int8 (all of -128..127), scales of every kind (normal,
 * zero, subnormal, huge, infinite, NaN), group sizes from 2 to 256 including ones that
 * leave a tail of less than a vector. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_kv.h"
#include "test_util.h"

#define MAX_ROWS 512u

static float any_scale(uint64_t* rng) {
    switch (tu_next(rng) % 8) {
        case 0: return 0.0f;
        case 1: return 1e-40f; /* subnormal */
        case 2: return 3e38f;  /* products overflow to infinity */
        case 3: return INFINITY;
        case 4: return NAN;
        default: return tu_uniform(rng) * 0.1f;
    }
}

int main(void) {
    static int8_t q[MAX_ROWS * QWEN3_KV_BLOCK];
    static float s[MAX_ROWS * QWEN3_KV_BLOCK], want[MAX_ROWS * QWEN3_KV_BLOCK], got[MAX_ROWS * QWEN3_KV_BLOCK];
    static const uint32_t group_sizes[] = {2, 6, 16, 24, 32, 48, 128, 256};
    const Qwen3KvKernels* const* tiers = qwen3_kv_kernels_all();
    uint64_t rng = 99;
    uint32_t tested = 0;
    for (uint32_t t = 0; tiers[t]; t++) {
        for (size_t k = 0; k < sizeof group_sizes / sizeof group_sizes[0]; k++) {
            const uint32_t gs = group_sizes[k];
            for (uint32_t trial = 0; trial < 20; trial++) {
                const uint32_t rows = gs * (1 + (uint32_t)(tu_next(&rng) % (MAX_ROWS / gs)));
                for (uint32_t i = 0; i < rows * QWEN3_KV_BLOCK; i++) {
                    q[i] = (int8_t)(tu_next(&rng) & 0xFF);
                    s[i] = any_scale(&rng);
                }
                /* values: one row of `rows` values, one scale per group */
                qwen3_kv_kernels_scalar.dequant_groups(want, q, s, rows, gs);
                memset(got, 0, rows * sizeof(float));
                tiers[t]->dequant_groups(got, q, s, rows, gs);
                CHECK(memcmp(want, got, rows * sizeof(float)) == 0,
                      "%s: dequant_groups, %u values, groups of %u differ from scalar", tiers[t]->name, rows, gs);
            }
        }
        fprintf(stderr, "test_kernels_kv: tier %s checked\n", tiers[t]->name);
        tested++;
    }
    /* the scalar tier itself: (float)q * scale */
    q[0] = -128;
    s[0] = 0.5f;
    qwen3_kv_kernels_scalar.dequant_groups(want, q, s, 1, 1);
    CHECK(want[0] == -64.0f, "scalar: -128 * 0.5 = %g", (double)want[0]);
    CHECK(tested >= 1, "no tier tested");
    return tu_finish("test_kernels_kv");
}
