/* kernels_kv_avx2.c - the int8 KV cache's dequantisation with 256-bit registers
 * (kernels_kv.h): vpmovsxbd widens 8 int8 to int32, vcvtdq2ps converts them exactly,
 * one vmulps by the scales. */
#include <immintrin.h>

#include "kernels_kv.h"

#define KV_AVX2 __attribute__((target("avx2")))

KV_AVX2 static inline __m256 widen8(const int8_t* q) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(const void*)q)));
}

KV_AVX2 static void dequant_groups_avx2(float* out, const int8_t* q, const float* s, uint32_t n, uint32_t gs) {
    for (uint32_t g = 0; g < n / gs; g++) {
        const __m256 sg = _mm256_set1_ps(s[g]);
        uint32_t i = g * gs;
        const uint32_t end = (g + 1) * gs;
        for (; i + 8 <= end; i += 8) {
            /* the rows stream from memory: ask for them 4 KiB ahead (a prefetch never faults) */
            if (i % 64 == 0) _mm_prefetch((const char*)(q + i) + 4096, _MM_HINT_T0);
            _mm256_storeu_ps(out + i, _mm256_mul_ps(widen8(q + i), sg));
        }
        for (; i < end; i++) out[i] = (float)q[i] * s[g];
    }
}

/* no attn_values_q8 (yet): attention dequantises a chunk and runs the f32 value kernel */
const Qwen3KvKernels qwen3_kv_kernels_avx2 = {"avx2", dequant_groups_avx2, NULL};
