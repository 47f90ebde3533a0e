/* kernels_kv_avx2.c - the int8 KV cache's dequantisation with 256-bit registers
 * (kernels_kv.h): vpmovsxbd widens 8 int8 to int32, vcvtdq2ps converts them exactly,
 * one vmulps by the scales; and one token's value pass straight from the int8 rows
 * (attn_values_q8); the fp16 cache's conversions by F16C. */
#include <immintrin.h>

#include "kernels_float.h"
#include "kernels_kv.h"

#define KV_AVX2 __attribute__((target("avx2")))
#define KV_AVX2_FMA __attribute__((target("avx2,fma")))
#define KV_INLINE KV_AVX2_FMA static inline __attribute__((always_inline))

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

/* attn_values_q8 with 16 registers: the positions go in blocks that stay in L1, and for
 * each block every tile of NQ queries x NV vectors of 8 dims loads its sums from out (after
 * the first block), runs the block's positions and stores them back: the same sums in the
 * same order as one pass, the value vectors of a position converted once per tile. */
#define VQ_BLOCK 64u /* positions: 8 KiB of 128-value rows */
#define VQ_AHEAD 32  /* positions prefetched ahead */

KV_INLINE void values_q8_tile(float* out, size_t o_stride, const float* att, size_t a_stride, const int8_t* q,
                              const float* s, uint32_t p0, uint32_t p1, uint32_t hd, uint32_t gs, uint32_t d0,
                              const int NQ, const int NV) {
    const uint32_t ng = hd / gs;
    uint32_t group[8];
    QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) group[c] = (d0 + 8u * (uint32_t)c) / gs;
    __m256 acc[4][8];
    QWEN3_UNROLL_FULL(4) for (int j = 0; j < NQ; j++) {
        QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) {
            acc[j][c] = p0 ? _mm256_loadu_ps(out + (size_t)j * o_stride + d0 + 8 * c) : _mm256_setzero_ps();
        }
    }
    for (uint32_t p = p0; p < p1; p++) {
        const int8_t* qp = q + (size_t)p * hd + d0;
        const float* sp = s + (size_t)p * ng;
        if (d0 == 0) {
            /* the block's first tile streams its rows from memory: ask for them ahead (past
             * the end too: a prefetch never faults) */
            for (uint32_t line = 0; line < hd; line += 64) _mm_prefetch((const char*)(qp + VQ_AHEAD * hd) + line, _MM_HINT_T0);
            _mm_prefetch((const char*)(sp + VQ_AHEAD * ng), _MM_HINT_T0);
        }
        __m256 a[4];
        QWEN3_UNROLL_FULL(4) for (int j = 0; j < NQ; j++) a[j] = _mm256_set1_ps(att[(size_t)j * a_stride + p]);
        QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) {
            const __m256 v = _mm256_mul_ps(widen8(qp + 8 * c), _mm256_set1_ps(sp[group[c]]));
            QWEN3_UNROLL_FULL(4) for (int j = 0; j < NQ; j++) acc[j][c] = _mm256_fmadd_ps(a[j], v, acc[j][c]);
        }
    }
    QWEN3_UNROLL_FULL(4) for (int j = 0; j < NQ; j++) {
        QWEN3_UNROLL_FULL(8) for (int c = 0; c < NV; c++) _mm256_storeu_ps(out + (size_t)j * o_stride + d0 + 8 * c, acc[j][c]);
    }
}

KV_AVX2_FMA static void attn_values_q8_avx2(float* out, size_t o_stride, const float* att, size_t a_stride,
                                           uint32_t n_q, const int8_t* q, const float* s, uint32_t n_pos,
                                           uint32_t hd, uint32_t gs) {
    if (hd % 8 != 0 || gs % 8 != 0 || n_pos == 0) {
        qwen3_attn_values_q8_ref(out, o_stride, att, a_stride, n_q, q, s, n_pos, hd, gs);
        return;
    }
    for (uint32_t p0 = 0; p0 < n_pos; p0 += VQ_BLOCK) {
        const uint32_t p1 = n_pos - p0 < VQ_BLOCK ? n_pos : p0 + VQ_BLOCK;
        for (uint32_t j = 0; j < n_q;) {
            /* at most 8 sums, NQ broadcasts and a value vector in the 16 registers */
            const uint32_t left = n_q - j, nq = left >= 4 ? 4 : left >= 2 ? 2 : 1, nv = 8 / nq;
            float* o = out + (size_t)j * o_stride;
            const float* a = att + (size_t)j * a_stride;
            for (uint32_t d0 = 0; d0 < hd;) {
                const uint32_t w = (hd - d0) / 8 >= nv ? nv : 1;
#define TILE(NQ, NV) \
    case (NQ) * 16 + (NV): values_q8_tile(o, o_stride, a, a_stride, q, s, p0, p1, hd, gs, d0, (NQ), (NV)); break;
                switch (nq * 16 + w) {
                    TILE(1, 8) TILE(2, 4) TILE(4, 2) TILE(1, 1) TILE(2, 1)
                    default: values_q8_tile(o, o_stride, a, a_stride, q, s, p0, p1, hd, gs, d0, 4, 1); break;
                }
#undef TILE
                d0 += 8 * w;
            }
            j += nq;
        }
    }
}

/* fp16 cache rows: F16C's vcvtps2ph (round to nearest even) and vcvtph2ps, 8 at a time
 * (qwen3_kv_kernels_for picks this tier only where the CPU has F16C) */
#define KV_F16C __attribute__((target("avx,f16c")))

KV_F16C static void to_f16_f16c(uint16_t* out, const float* x, uint32_t n) {
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i*)(void*)(out + i), h);
    }
    for (; i < n; i++) out[i] = qwen3_f32_to_f16(x[i]);
}

KV_F16C static void from_f16_f16c(float* out, const uint16_t* h, uint32_t n) {
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if (i % 32 == 0) _mm_prefetch((const char*)(h + i) + 2048, _MM_HINT_T0); /* as the AVX-512 tier's */
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(const void*)(h + i))));
    }
    for (; i < n; i++) out[i] = qwen3_f16_to_f32(h[i]);
}

const Qwen3KvKernels qwen3_kv_kernels_avx2 = {"avx2", dequant_groups_avx2, attn_values_q8_avx2, to_f16_f16c,
                                              from_f16_f16c};
