/* kernels_float_neon.c - the "neon" float tier: a row's 16 lanes (kernels_float.h) are
 * four 128-bit registers. fp16 widens with fcvtl, bf16 with a 16-bit left shift; multiply
 * and add stay separate instructions (no fused fmla) as in the scalar reference, whose
 * tail and reduction tree finish each row, so the bits match it. */
#include <arm_neon.h>
#include <stddef.h>

#include "kernels_float.h"

#define ROWS 2

static inline float32x4_t load_f32(const float* p) { return vld1q_f32(p); }

static inline float32x4_t load_f16(const uint16_t* p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

static inline float32x4_t load_bf16(const uint16_t* p) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

static inline float widen_f32(float v) { return v; }

#define NEON_MATVEC(NAME, ELEM, LOAD, WIDEN)                                                    \
    static void NAME(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,       \
                     uint32_t row_end) {                                                        \
        const uint32_t n = w->cols, full = n / 16 * 16;                                         \
        for (uint32_t r = row_begin; r < row_end; r += ROWS) {                                  \
            const uint32_t nr = row_end - r < ROWS ? row_end - r : ROWS;                        \
            const ELEM* p[ROWS];                                                                \
            for (uint32_t i = 0; i < ROWS; i++) {                                               \
                p[i] = (const ELEM*)w->data + (size_t)(r + (i < nr ? i : 0)) * n;               \
            }                                                                                   \
            float32x4_t acc[ROWS][4];                                                           \
            for (uint32_t i = 0; i < ROWS; i++) {                                               \
                for (uint32_t k = 0; k < 4; k++) acc[i][k] = vdupq_n_f32(0.0f);                 \
            }                                                                                   \
            for (uint32_t j = 0; j < full; j += 16) {                                           \
                float32x4_t xv[4];                                                              \
                for (uint32_t k = 0; k < 4; k++) xv[k] = vld1q_f32(x + j + 4 * k);              \
                for (uint32_t i = 0; i < ROWS; i++) {                                           \
                    for (uint32_t k = 0; k < 4; k++) {                                          \
                        acc[i][k] = vaddq_f32(acc[i][k], vmulq_f32(LOAD(p[i] + j + 4 * k), xv[k])); \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
            for (uint32_t i = 0; i < nr; i++) {                                                 \
                float lanes[16];                                                                \
                for (uint32_t k = 0; k < 4; k++) vst1q_f32(lanes + 4 * k, acc[i][k]);           \
                for (uint32_t j = full; j < n; j++) {                                           \
                    lanes[j % 16] = lanes[j % 16] + WIDEN(p[i][j]) * x[j];                      \
                }                                                                               \
                out[r + i - row_begin] = qwen3_reduce16(lanes);                                 \
            }                                                                                   \
        }                                                                                       \
    }

NEON_MATVEC(matvec_f32_neon, float, load_f32, widen_f32)
NEON_MATVEC(matvec_f16_neon, uint16_t, load_f16, qwen3_f16_to_f32)
NEON_MATVEC(matvec_bf16_neon, uint16_t, load_bf16, qwen3_bf16_to_f32)

const Qwen3FloatKernels qwen3_float_kernels_neon = {
    .name = "neon",
    .matvec = {NULL, matvec_f32_neon, matvec_f16_neon, matvec_bf16_neon},
};
