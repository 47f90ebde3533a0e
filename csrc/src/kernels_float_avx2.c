/* kernels_float_avx2.c - the "avx2" float tier: fp32 / fp16 (F16C vcvtph2ps) / bf16
 * weights times fp32 activations with 256-bit registers.
 *
 * A row's 16 lanes (kernels_float.h) are two registers: lanes 0-7 and 8-15. Four rows go
 * together so eight independent add chains hide the add latency while each row streams
 * from memory once. Products and sums are separate instructions (no FMA), as the scalar
 * reference rounds them; the tail and the reduction tree are the scalar code's, so every
 * output has the reference's bits.
 */
#include <immintrin.h>
#include <stddef.h>

#include "kernels_float.h"

#define TARGET __attribute__((target("avx2,f16c")))
#define ROWS 4

TARGET static inline __m256 load_f32(const float* p) { return _mm256_loadu_ps(p); }

TARGET static inline __m256 load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(const void*)p));
}

TARGET static inline __m256 load_bf16(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(const void*)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

static inline float widen_f32(float v) { return v; }

/* Rows [r, r + nr) with nr <= ROWS: SIMD over whole 16-value chunks, then the scalar
 * tail into the same lanes and the shared reduction. */
#define AVX2_MATVEC(NAME, ELEM, LOAD, WIDEN)                                                   \
    TARGET static void NAME(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin, \
                            uint32_t row_end) {                                                \
        const uint32_t n = w->cols, full = n / 16 * 16;                                        \
        for (uint32_t r = row_begin; r < row_end; r += ROWS) {                                 \
            const uint32_t nr = row_end - r < ROWS ? row_end - r : ROWS;                       \
            const ELEM* p[ROWS];                                                               \
            for (uint32_t i = 0; i < ROWS; i++) {                                              \
                p[i] = (const ELEM*)w->data + (size_t)(r + (i < nr ? i : 0)) * n;              \
            }                                                                                  \
            __m256 lo[ROWS], hi[ROWS];                                                         \
            for (uint32_t i = 0; i < ROWS; i++) lo[i] = hi[i] = _mm256_setzero_ps();           \
            for (uint32_t j = 0; j < full; j += 16) {                                          \
                const __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);     \
                for (uint32_t i = 0; i < ROWS; i++) {                                          \
                    lo[i] = _mm256_add_ps(lo[i], _mm256_mul_ps(LOAD(p[i] + j), x0));           \
                    hi[i] = _mm256_add_ps(hi[i], _mm256_mul_ps(LOAD(p[i] + j + 8), x1));       \
                }                                                                              \
            }                                                                                  \
            for (uint32_t i = 0; i < nr; i++) {                                                \
                float acc[16];                                                                 \
                _mm256_storeu_ps(acc, lo[i]);                                                  \
                _mm256_storeu_ps(acc + 8, hi[i]);                                              \
                for (uint32_t j = full; j < n; j++) {                                          \
                    acc[j % 16] = acc[j % 16] + WIDEN(p[i][j]) * x[j];                         \
                }                                                                              \
                out[r + i - row_begin] = qwen3_reduce16(acc);                                  \
            }                                                                                  \
        }                                                                                      \
    }

AVX2_MATVEC(matvec_f32_avx2, float, load_f32, widen_f32)
AVX2_MATVEC(matvec_f16_avx2, uint16_t, load_f16, qwen3_f16_to_f32)
AVX2_MATVEC(matvec_bf16_avx2, uint16_t, load_bf16, qwen3_bf16_to_f32)

const Qwen3FloatKernels qwen3_float_kernels_avx2 = {
    .name = "avx2",
    .matvec = {NULL, matvec_f32_avx2, matvec_f16_avx2, matvec_bf16_avx2},
};
