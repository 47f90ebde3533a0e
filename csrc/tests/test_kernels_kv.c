/* test_kernels_kv.c - the int8 KV cache's dequantisation tiers (kernels_kv.h) against the
 * scalar one, bit for bit: random int8 (all of -128..127), scales of every kind (normal,
 * zero, subnormal, huge, infinite, NaN), group sizes from 2 to 256 including ones that
 * leave a tail of less than a vector. And one token's value pass from the int8 rows
 * (attn_values_q8: the reference and every tier that has one) against what attention does
 * without it: the rows dequantised in chunks, then the scalar f32 value kernel. */
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

/* Equal bits, or both NaN (a NaN's payload is not part of the contract). */
static int same_floats(const float* a, const float* b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (a[i] != a[i] && b[i] != b[i]) continue;
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return 0;
    }
    return 1;
}

#define VQ_MAX_POS 300u
#define VQ_MAX_HD 256u
#define VQ_MAX_Q 6u
#define VQ_CHUNK 64u /* positions dequantised at a time, as attention's stack buffer holds */

static void test_attn_values_q8(void) {
    static int8_t q[VQ_MAX_POS * VQ_MAX_HD];
    static float s[VQ_MAX_POS * VQ_MAX_HD], rows[VQ_CHUNK * VQ_MAX_HD];
    static float att[VQ_MAX_Q * (VQ_MAX_POS + 5)];
    static float want[VQ_MAX_Q * (VQ_MAX_HD + 3)], got[VQ_MAX_Q * (VQ_MAX_HD + 3)];
    static const uint32_t shapes[][2] = {{16, 16}, {32, 16}, {64, 32}, {64, 64}, {80, 16},
                                         {128, 32}, {128, 64}, {128, 128}, {256, 32}, {48, 48}, {24, 8}};
    static const uint32_t positions[] = {1, 2, 15, 16, 17, 63, 64, 65, 130, VQ_MAX_POS};
    const Qwen3KvKernels* const* tiers = qwen3_kv_kernels_all();
    uint64_t rng = 2024;
    uint32_t compared = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const uint32_t hd = shapes[k][0], gs = shapes[k][1], ng = hd / gs;
        for (size_t np = 0; np < sizeof positions / sizeof positions[0]; np++) {
            const uint32_t n_pos = positions[np];
            const uint32_t n_q = 1 + (uint32_t)(tu_next(&rng) % VQ_MAX_Q);
            const size_t o_stride = hd + tu_next(&rng) % 3, a_stride = n_pos + tu_next(&rng) % 5;
            for (uint32_t i = 0; i < n_pos * hd; i++) q[i] = (int8_t)(tu_next(&rng) & 0xFF);
            for (uint32_t i = 0; i < n_pos * ng; i++) {
                /* mostly the scales a cache holds; now and then ones that overflow or vanish */
                const uint32_t kind = (uint32_t)(tu_next(&rng) % 16);
                s[i] = kind == 0 ? 0.0f : kind == 1 ? 1e-40f : kind == 2 ? 3e38f : tu_uniform(&rng) * 0.05f;
            }
            for (uint32_t i = 0; i < n_q * a_stride; i++) att[i] = tu_uniform(&rng); /* softmax numerators */
            /* what attention does without attn_values_q8 */
            uint32_t lens[VQ_MAX_Q];
            for (uint32_t p0 = 0; p0 < n_pos; p0 += VQ_CHUNK) {
                const uint32_t len = n_pos - p0 < VQ_CHUNK ? n_pos - p0 : VQ_CHUNK;
                qwen3_kv_kernels_scalar.dequant_groups(rows, q + (size_t)p0 * hd, s + (size_t)p0 * ng, len * hd, gs);
                for (uint32_t j = 0; j < n_q; j++) lens[j] = len;
                qwen3_kernels_scalar.attn_values(want, (uint32_t)o_stride, att + p0, (uint32_t)a_stride, lens, n_q,
                                                 rows, hd, hd, p0 > 0);
            }
            memset(got, 0xff, sizeof got);
            qwen3_attn_values_q8_ref(got, o_stride, att, a_stride, n_q, q, s, n_pos, hd, gs);
            for (uint32_t j = 0; j < n_q; j++) {
                CHECK(same_floats(want + j * o_stride, got + j * o_stride, hd),
                      "reference: hd %u, groups of %u, %u positions, query %u of %u differs from dequant + "
                      "attn_values", hd, gs, n_pos, j, n_q);
            }
            for (uint32_t t = 0; tiers[t]; t++) {
                if (!tiers[t]->attn_values_q8) continue;
                memset(got, 0xff, sizeof got);
                tiers[t]->attn_values_q8(got, o_stride, att, a_stride, n_q, q, s, n_pos, hd, gs);
                for (uint32_t j = 0; j < n_q; j++) {
                    CHECK(same_floats(want + j * o_stride, got + j * o_stride, hd),
                          "%s: hd %u, groups of %u, %u positions, query %u of %u differs from dequant + "
                          "attn_values", tiers[t]->name, hd, gs, n_pos, j, n_q);
                }
                compared++;
            }
        }
    }
    fprintf(stderr, "test_kernels_kv: attn_values_q8 compared in %u tier runs\n", compared);
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
    test_attn_values_q8();
    return tu_finish("test_kernels_kv");
}
