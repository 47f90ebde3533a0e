/* kernels_float_avx2.c - the "avx2" float tier: fp32 / fp16 (F16C vcvtph2ps) / bf16
 * weights times fp32 activations with 256-bit registers, through the shared loop in
 * kernels_float_matvec.h.
 *
 * A row's 16 lanes (kernels_float.h) are two registers: lanes 0-7 and 8-15. Four rows go
 * together so eight independent add chains hide the add latency while each row streams
 * from memory once. Multiply and add are separate instructions (the target leaves out
 * FMA), as the scalar reference rounds them.
 */
#include <immintrin.h>
#include <stdint.h>

#include "kernels_float.h"

#define F32VEC_TARGET __attribute__((target("avx2,f16c")))
#define F32VEC_LANES 8
#define F32VEC_ROWS 4
typedef __m256 F32Vec;

F32VEC_TARGET static inline F32Vec f32vec_zero(void) { return _mm256_setzero_ps(); }
F32VEC_TARGET static inline F32Vec f32vec_load(const float* p) { return _mm256_loadu_ps(p); }
F32VEC_TARGET static inline void f32vec_store(float* p, F32Vec v) { _mm256_storeu_ps(p, v); }
F32VEC_TARGET static inline F32Vec f32vec_add(F32Vec a, F32Vec b) { return _mm256_add_ps(a, b); }
F32VEC_TARGET static inline F32Vec f32vec_mul(F32Vec a, F32Vec b) { return _mm256_mul_ps(a, b); }

F32VEC_TARGET static inline F32Vec f32vec_load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(const void*)p));
}

/* bf16 is the top half of an fp32: zero-extend to 32 bits and shift into place. */
F32VEC_TARGET static inline F32Vec f32vec_load_bf16(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(const void*)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

#include "kernels_float_matvec.h"

F32VEC_TARGET static void matvec_f32_avx2(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,
                                          uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_F32);
}

F32VEC_TARGET static void matvec_f16_avx2(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,
                                          uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_F16);
}

F32VEC_TARGET static void matvec_bf16_avx2(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,
                                           uint32_t row_end) {
    qwen3_matvec_float_rows(out, w, x, row_begin, row_end, QWEN3_WEIGHT_BF16);
}

const Qwen3FloatKernels qwen3_float_kernels_avx2 = {
    .name = "avx2",
    .matvec = {NULL, matvec_f32_avx2, matvec_f16_avx2, matvec_bf16_avx2},
};
