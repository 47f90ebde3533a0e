/* kernels_sve.c - the "sve" tier: int8 matrix-vector with SVE sdot, for any vector length
 * (128 to 2048 bits) without recompiling.
 *
 * A block is as many rows as a vector has float lanes (L = svcntw(): 4 at 128 bits, 16
 * at 512). SVE vectors cannot live in arrays, so instead of keeping one accumulator per
 * row the block works row by row: each group's bytes go through sdot (predicated loads
 * cover a partial last vector, so any group size works) and svaddv folds the lanes into
 * the exact int32 group sum, parked in a small tile (group, row). Then the float part
 * (scvtf, * w_scale, * x_scale, +) runs per group with rows in lanes, in the scalar
 * reference's order and roundings: bit-identical (kernels.h). Reading row by row also
 * streams each row's bytes in address order, which hardware prefetchers follow well.
 */
#include <arm_sve.h>
#include <stddef.h>

#include "kernels.h"

#define TARGET __attribute__((target("+sve")))

/* Tile of int32 group sums: (TILE_GROUPS, L) with L <= 64 lanes (2048-bit vectors). */
#define MAX_LANES 64
#define TILE_GROUPS 64

/* Exact int32 dot product of n int8 values (sdot into int32 lanes, then a lane sum in
 * int64 that fits int32 because the true sum does). */
TARGET static inline int32_t dot_i8(const int8_t* w, const int8_t* x, uint32_t n) {
    svint32_t acc = svdup_n_s32(0);
    const uint32_t vb = (uint32_t)svcntb();
    for (uint32_t k = 0; k < n; k += vb) {
        /* Inactive bytes load as zero and add nothing. */
        const svbool_t pb = svwhilelt_b8_u32(k, n);
        acc = svdot_s32(acc, svld1_s8(pb, w + k), svld1_s8(pb, x + k));
    }
    return (int32_t)svaddv_s32(svptrue_b32(), acc);
}

TARGET static void matvec_q8_sve(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x, uint32_t row_begin,
                                 uint32_t row_end) {
    const size_t n = w->cols;
    const uint32_t gs = w->group_size;
    const uint32_t ng = (uint32_t)(n / gs);
    const uint32_t lanes = (uint32_t)svcntw();
    int32_t tile[TILE_GROUPS * MAX_LANES];
    const svbool_t all = svptrue_b32();

    for (uint32_t r0 = row_begin; r0 < row_end; r0 += lanes) {
        const uint32_t nrows = row_end - r0 < lanes ? row_end - r0 : lanes;
        /* Lanes past nrows read the last row's scales (in bounds) and sum 0; dropped. */
        const svint32_t row = svmin_n_s32_x(all, svindex_s32(0, 1), (int32_t)nrows - 1);
        const svint32_t scale_idx = svmul_n_s32_x(all, row, (int32_t)ng);
        const float* sbase = w->s + (size_t)r0 * ng;
        svfloat32_t acc = svdup_n_f32(0.0f);
        for (uint32_t g0 = 0; g0 < ng; g0 += TILE_GROUPS) {
            const uint32_t g1 = ng - g0 < TILE_GROUPS ? ng : g0 + TILE_GROUPS;
            for (uint32_t l = 0; l < lanes; l++) {
                const int8_t* wrow = w->q + (size_t)(r0 + l) * n;
                for (uint32_t g = g0; g < g1; g++) {
                    tile[(g - g0) * lanes + l] =
                        l < nrows ? dot_i8(wrow + (size_t)g * gs, x->q + (size_t)g * gs, gs) : 0;
                }
            }
            for (uint32_t g = g0; g < g1; g++) {
                const svfloat32_t isum = svcvt_f32_s32_x(all, svld1_s32(all, tile + (g - g0) * lanes));
                const svfloat32_t ws = svld1_gather_s32index_f32(all, sbase + g, scale_idx);
                const svfloat32_t f = svmul_n_f32_x(all, svmul_f32_x(all, isum, ws), x->s[g]);
                acc = svadd_f32_x(all, acc, f);
            }
        }
        svst1_f32(svwhilelt_b32_u32(0, nrows), out + (r0 - row_begin), acc);
    }
}

static void matmul_q8_sve(float* out, size_t out_stride, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                         uint32_t row_begin, uint32_t row_end) {
    qwen3_matmul_q8_by_matvec(matvec_q8_sve, out, out_stride, w, x, row_begin, row_end);
}

const Qwen3KernelTable qwen3_kernels_sve = {
    .name = "sve",
    .matvec_q8 = matvec_q8_sve,
    .matmul_q8 = matmul_q8_sve,
    .matmul_blocks = qwen3_matmul_blocks_neon, /* AdvSIMD, kernels_blocks_neon.c */
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = qwen3_attn_scores_ref,
    .attn_values = qwen3_attn_values_ref,
    .softmax_exp = qwen3_softmax_exp_rows_ref,
    .silu_mul = qwen3_silu_mul_ref,
    .sampler_softmax = qwen3_sampler_softmax_neon,
};
