/* kernels_float_neon.c - the "neon" float tier, through the shared loop in
 * kernels_float_matvec.h: a row's 16 lanes (kernels_float.h) are four 128-bit registers.
 * Two rows at a time: with four registers a row, that is already eight independent add
 * chains. fp16 widens with fcvtl, bf16 with a 16-bit left shift; multiply and add stay
 * separate instructions (no fused fmla) as in the scalar reference.
 */
#include <arm_neon.h>
#include <stdint.h>

#include "kernels_float.h"

#define F32VEC_TARGET /* NEON is part of the aarch64 baseline */
#define F32VEC_LANES 4
#define F32VEC_ROWS 2
typedef float32x4_t F32Vec;

static inline F32Vec f32vec_zero(void) { return vdupq_n_f32(0.0f); }
static inline F32Vec f32vec_load(const float* p) { return vld1q_f32(p); }
static inline void f32vec_store(float* p, F32Vec v) { vst1q_f32(p, v); }
static inline F32Vec f32vec_add(F32Vec a, F32Vec b) { return vaddq_f32(a, b); }
static inline F32Vec f32vec_mul(F32Vec a, F32Vec b) { return vmulq_f32(a, b); }

static inline F32Vec f32vec_load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

/* bf16 is the top half of an fp32: widen with a 16-bit left shift. */
static inline F32Vec f32vec_load_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }

#include "kernels_float_matvec.h"

static void matvec_f32_neon(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin, uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_F32);
}

static void matvec_f16_neon(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin, uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_F16);
}

static void matvec_bf16_neon(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin, uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_BF16);
}

const Qwen3FloatKernels qwen3_float_kernels_neon = {
    .name = "neon",
    .matvec = {NULL, matvec_f32_neon, matvec_f16_neon, matvec_bf16_neon},
};
