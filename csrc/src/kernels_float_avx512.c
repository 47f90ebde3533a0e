/* kernels_float_avx512.c - the "avx512" float tier: a row's 16 lanes (kernels_float.h)
 * are exactly one 512-bit register. Four rows at a time for independent add chains;
 * separate multiply and add (no FMA) as in the scalar reference, whose tail and
 * reduction tree finish each row, so the bits match it. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels_float.h"

#define TARGET __attribute__((target("avx512f,f16c,evex512")))
#define ROWS 4

TARGET static inline __m512 load_f32(const float* p) { return _mm512_loadu_ps(p); }

TARGET static inline __m512 load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(const void*)p));
}

TARGET static inline __m512 load_bf16(const uint16_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(const void*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

static inline float widen_f32(float v) { return v; }

#define AVX512_MATVEC(NAME, ELEM, LOAD, WIDEN)                                                  \
    TARGET static void NAME(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin, \
                            uint32_t row_end) {                                                 \
        const uint32_t n = w->cols, full = n / 16 * 16;                                         \
        for (uint32_t r = row_begin; r < row_end; r += ROWS) {                                  \
            const uint32_t nr = row_end - r < ROWS ? row_end - r : ROWS;                        \
            const ELEM* p[ROWS];                                                                \
            for (uint32_t i = 0; i < ROWS; i++) {                                               \
                p[i] = (const ELEM*)w->data + (size_t)(r + (i < nr ? i : 0)) * n;               \
            }                                                                                   \
            __m512 acc[ROWS];                                                                   \
            for (uint32_t i = 0; i < ROWS; i++) acc[i] = _mm512_setzero_ps();                   \
            for (uint32_t j = 0; j < full; j += 16) {                                           \
                const __m512 xv = _mm512_loadu_ps(x + j);                                       \
                for (uint32_t i = 0; i < ROWS; i++) {                                           \
                    acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(LOAD(p[i] + j), xv));          \
                }                                                                               \
            }                                                                                   \
            for (uint32_t i = 0; i < nr; i++) {                                                 \
                float lanes[16];                                                                \
                _mm512_storeu_ps(lanes, acc[i]);                                                \
                for (uint32_t j = full; j < n; j++) {                                           \
                    lanes[j % 16] = lanes[j % 16] + WIDEN(p[i][j]) * x[j];                      \
                }                                                                               \
                out[r + i - row_begin] = qwen3_reduce16(lanes);                                 \
            }                                                                                   \
        }                                                                                       \
    }

AVX512_MATVEC(matvec_f32_avx512, float, load_f32, widen_f32)
AVX512_MATVEC(matvec_f16_avx512, uint16_t, load_f16, qwen3_f16_to_f32)
AVX512_MATVEC(matvec_bf16_avx512, uint16_t, load_bf16, qwen3_bf16_to_f32)

const Qwen3FloatKernels qwen3_float_kernels_avx512 = {
    .name = "avx512",
    .matvec = {NULL, matvec_f32_avx512, matvec_f16_avx512, matvec_bf16_avx512},
};
