/* kernels_float_avx512.c - the "avx512" float tier, through the shared loop in
 * kernels_float_matvec.h: a row's 16 lanes (kernels_float.h) are exactly one 512-bit
 * register. Four rows at a time for independent add chains; separate multiply and add
 * (no FMA) as in the scalar reference.
 */
#include <immintrin.h>
#include <stdint.h>

#include "kernels_float.h"

#define F32VEC_TARGET __attribute__((target("avx512f,f16c,evex512")))
#define F32VEC_LANES 16
#define F32VEC_ROWS 4
typedef __m512 F32Vec;

F32VEC_TARGET static inline F32Vec f32vec_zero(void) { return _mm512_setzero_ps(); }
F32VEC_TARGET static inline F32Vec f32vec_load(const float* p) { return _mm512_loadu_ps(p); }
F32VEC_TARGET static inline void f32vec_store(float* p, F32Vec v) { _mm512_storeu_ps(p, v); }
F32VEC_TARGET static inline F32Vec f32vec_add(F32Vec a, F32Vec b) { return _mm512_add_ps(a, b); }
F32VEC_TARGET static inline F32Vec f32vec_mul(F32Vec a, F32Vec b) { return _mm512_mul_ps(a, b); }

F32VEC_TARGET static inline F32Vec f32vec_load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(const void*)p));
}

/* bf16 is the top half of an fp32: zero-extend to 32 bits and shift into place. */
F32VEC_TARGET static inline F32Vec f32vec_load_bf16(const uint16_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(const void*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

#include "kernels_float_matvec.h"

F32VEC_TARGET static void matvec_f32_avx512(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,
                                            uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_F32);
}

F32VEC_TARGET static void matvec_f16_avx512(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,
                                            uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_F16);
}

F32VEC_TARGET static void matvec_bf16_avx512(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,
                                             uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_BF16);
}

const Qwen3FloatKernels qwen3_float_kernels_avx512 = {
    .name = "avx512",
    .matvec = {NULL, matvec_f32_avx512, matvec_f16_avx512, matvec_bf16_avx512},
};
