/* kernels_kv_avx512.c - the int8 KV cache's dequantisation with 512-bit registers
 * (kernels_kv.h): 16 values are one vpmovsxbd + vcvtdq2ps + vmulps. */
#include <immintrin.h>

#include "kernels_kv.h"

#define KV_AVX512 __attribute__((target("avx512f,evex512")))

KV_AVX512 static inline __m512 widen16(const int8_t* q) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(const void*)q)));
}

KV_AVX512 static void dequant_groups_avx512(float* out, const int8_t* q, const float* s, uint32_t n, uint32_t gs) {
    for (uint32_t g = 0; g < n / gs; g++) {
        const __m512 sg = _mm512_set1_ps(s[g]);
        uint32_t i = g * gs;
        const uint32_t end = (g + 1) * gs;
        for (; i + 16 <= end; i += 16) _mm512_storeu_ps(out + i, _mm512_mul_ps(widen16(q + i), sg));
        for (; i < end; i++) out[i] = (float)q[i] * s[g];
    }
}

const Qwen3KvKernels qwen3_kv_kernels_avx512 = {"avx512", dequant_groups_avx512};
