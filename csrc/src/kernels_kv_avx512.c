/* kernels_kv_avx512.c - the int8 KV cache's dequantisation with 512-bit registers
 * (kernels_kv.h): 16 values are one vpmovsxbd + vcvtdq2ps + vmulps; and one token's value
 * pass straight from the int8 rows (attn_values_q8); the fp16 cache's conversions. */
#include <immintrin.h>

#include "kernels_float.h"
#include "kernels_kv.h"

#define KV_AVX512 __attribute__((target("avx512f,evex512,f16c")))
#define KV_INLINE KV_AVX512 static inline __attribute__((always_inline))

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

/* How far ahead (in positions) attn_values_q8 prefetches: 4 KiB of 128-value rows. */
#define VQ_AHEAD 32

/* NQ queries x NV vectors of 16 dims from dim d0, over every position: the dequantised
 * vectors of a position live only in registers, each used by all NQ queries. The sums are
 * attn_values' (from 0.0f, positions ascending, one fused multiply-add each), the values
 * dequant_groups' ((float)q * scale, one multiply). */
KV_INLINE void values_q8_tile(float* out, size_t o_stride, const float* att, size_t a_stride, const int8_t* q,
                              const float* s, uint32_t n_pos, uint32_t hd, uint32_t gs, uint32_t d0, const int NQ,
                              const int NV) {
    const uint32_t ng = hd / gs;
    uint32_t group[8];
    QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) group[c] = (d0 + 16u * (uint32_t)c) / gs;
    __m512 acc[4][8];
    QWEN3_UNROLL_FULL(4) for (int j = 0; j < NQ; j++) {
        QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) acc[j][c] = _mm512_setzero_ps();
    }
    for (uint32_t p = 0; p < n_pos; p++) {
        const int8_t* qp = q + (size_t)p * hd + d0;
        const float* sp = s + (size_t)p * ng;
        /* a cache slab streams from memory: ask for the rows VQ_AHEAD positions on (past the
         * end too: a prefetch never faults) */
        _mm_prefetch((const char*)(qp + VQ_AHEAD * hd), _MM_HINT_T0);
        if (NV > 4) _mm_prefetch((const char*)(qp + VQ_AHEAD * hd) + 64, _MM_HINT_T0);
        _mm_prefetch((const char*)(sp + VQ_AHEAD * ng), _MM_HINT_T0);
        __m512 v[8];
        QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) v[c] = _mm512_mul_ps(widen16(qp + 16 * c), _mm512_set1_ps(sp[group[c]]));
        QWEN3_UNROLL_FULL(4) for (int j = 0; j < NQ; j++) {
            const __m512 a = _mm512_set1_ps(att[(size_t)j * a_stride + p]);
            QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) acc[j][c] = _mm512_fmadd_ps(a, v[c], acc[j][c]);
        }
    }
    QWEN3_UNROLL_FULL(4) for (int j = 0; j < NQ; j++) {
        QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) _mm512_storeu_ps(out + (size_t)j * o_stride + d0 + 16 * c, acc[j][c]);
    }
}

/* At most 16 accumulators (of 32 registers): 2 queries x 128 dims, or 4 x 64. */
KV_AVX512 static void attn_values_q8_avx512(float* out, size_t o_stride, const float* att, size_t a_stride,
                                            uint32_t n_q, const int8_t* q, const float* s, uint32_t n_pos,
                                            uint32_t hd, uint32_t gs) {
    if (hd % 16 != 0 || gs % 16 != 0) {
        qwen3_attn_values_q8_ref(out, o_stride, att, a_stride, n_q, q, s, n_pos, hd, gs);
        return;
    }
    for (uint32_t j = 0; j < n_q;) {
        const uint32_t nq = n_q - j >= 4 ? 4 : n_q - j;
        float* o = out + (size_t)j * o_stride;
        const float* a = att + (size_t)j * a_stride;
        for (uint32_t d0 = 0; d0 < hd;) {
            const uint32_t vecs = (hd - d0) / 16;
            const uint32_t nv = nq <= 2 && vecs >= 8 ? 8 : vecs >= 4 ? 4 : 1;
#define TILE(NQ, NV) \
    case (NQ) * 16 + (NV): values_q8_tile(o, o_stride, a, a_stride, q, s, n_pos, hd, gs, d0, (NQ), (NV)); break;
            switch (nq * 16 + nv) {
                TILE(1, 8) TILE(2, 8) TILE(1, 4) TILE(2, 4) TILE(3, 4) TILE(4, 4) TILE(1, 1) TILE(2, 1) TILE(3, 1)
                default: values_q8_tile(o, o_stride, a, a_stride, q, s, n_pos, hd, gs, d0, 4, 1); break;
            }
#undef TILE
            d0 += 16 * nv;
        }
        j += nq;
    }
}

/* How far ahead (bytes) from_f16 prefetches: attention widens a cache chunk at a time, and
 * decoding at 4096 positions ran 4% faster with 1-2 KiB ahead than with none. */
#define F16_AHEAD 2048

/* fp16 cache rows: vcvtps2ph (round to nearest even) and vcvtph2ps, 16 at a time */
KV_AVX512 static void to_f16_avx512(uint16_t* out, const float* x, uint32_t n) {
    uint32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256((__m256i*)(void*)(out + i), h);
    }
    for (; i < n; i++) out[i] = qwen3_f32_to_f16(x[i]);
}

KV_AVX512 static void from_f16_avx512(float* out, const uint16_t* h, uint32_t n) {
    uint32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch((const char*)(h + i) + F16_AHEAD, _MM_HINT_T0);
        _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(const void*)(h + i))));
    }
    for (; i < n; i++) out[i] = qwen3_f16_to_f32(h[i]);
}

const Qwen3KvKernels qwen3_kv_kernels_avx512 = {"avx512", dequant_groups_avx512, attn_values_q8_avx512, to_f16_avx512,
                                                from_f16_avx512};
