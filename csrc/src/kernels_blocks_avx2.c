/*
 * kernels_blocks_avx2.c - the block-weight product (kernels.h, Qwen3MatmulBlocksFn) for Q4_K,
 * Q5_K and Q6_K with AVX2, shared by the x86 tiers; the 32-value block types take the
 * reference (qwen3_matmul_blocks_ref).
 *
 * Same bits as the reference (docs/numerics.md#ggml-block-weights): the integer sums of a
 * 256-value block's eight chunks (and Q6_K's sixteen halves) are exact whatever the order, so
 * they are formed with maddubs / madd and a horizontal-add tree; the fp32 epilogue of the eight
 * chunks is done lane by lane (the same single roundings as the reference's scalar steps), and
 * the eight products are then added to the row's accumulator one at a time, in chunk order.
 *
 * maddubs multiplies unsigned weights by signed activations: Q4_K / Q5_K values are unsigned
 * already (0..31); Q6_K's are taken as 6-bit unsigned (0..63) and 32 times each half's
 * activation sum is subtracted. A pair sum is at most 2 * 63 * 128 = 16128, so maddubs never
 * saturates.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "bytes.h"
#include "kernels.h"
#include "kernels_float.h"

#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

/* Sum of each vector's eight int32 lanes' lower four (lo) and upper four (hi), for four
 * vectors: lane j of *lo is v[j]'s values 0..15 (a chunk's first half), of *hi its second. */
TARGET_AVX2 INLINE void halves4(const __m256i v[4], __m128i* lo, __m128i* hi) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    *lo = _mm256_castsi256_si128(h);
    *hi = _mm256_extracti128_si256(h, 1);
}

/* The int32 sums of 32 unsigned weights times 32 int8 activations, in eight lanes of four. */
TARGET_AVX2 INLINE __m256i dot32(__m256i w, const int8_t* x) {
    const __m256i p = _mm256_maddubs_epi16(w, _mm256_loadu_si256((const __m256i*)x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* acc + p[0] + p[1] + ... + p[7], one rounding per add in chunk order (the reference's). */
TARGET_AVX2 INLINE float add_in_order(float acc, __m256 p) {
    float v[8];
    _mm256_storeu_ps(v, p);
    for (int c = 0; c < 8; c++) acc = acc + v[c];
    return acc;
}

/* The eight chunk products t * xs of one block for one token (see kernels.h). */
TARGET_AVX2 INLINE __m256 epilogue(__m256i isum, __m256 scale, const float* offset, const int32_t* xsum,
                                   const float* xs) {
    __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale);
    if (offset) {
        const __m256 o = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i*)xsum)),
                                       _mm256_loadu_ps(offset));
        t = _mm256_add_ps(t, o);
    }
    return _mm256_mul_ps(t, _mm256_loadu_ps(xs));
}

/* Q4_K (five = 0) or Q5_K (five = 1) chunk sums of one block against 256 activations. */
TARGET_AVX2 INLINE __m256i isums_k45(const uint8_t* blk, const int8_t* xq, int five) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const uint8_t* qs = blk + (five ? 48 : 16);
    const __m256i hb = five ? _mm256_loadu_si256((const __m256i*)(blk + 16)) : _mm256_setzero_si256();
    __m256i v[8];
    for (int k = 0; k < 4; k++) {
        const __m256i q = _mm256_loadu_si256((const __m256i*)(qs + 32 * k));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (five) {
            /* bit 2k / 2k + 1 of each qh byte is the fifth bit (16-bit shifts: bit 0 of each
             * byte after the shift is that byte's own bit) */
            const __m256i b0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), one);
            const __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k + 1), one);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
        }
        v[2 * k] = dot32(lo, xq + 64 * k);
        v[2 * k + 1] = dot32(hi, xq + 64 * k + 32);
    }
    __m128i lo0, hi0, lo1, hi1;
    halves4(v, &lo0, &hi0);
    halves4(v + 4, &lo1, &hi1);
    return _mm256_set_m128i(_mm_add_epi32(lo1, hi1), _mm_add_epi32(lo0, hi0));
}

/* Q6_K chunk sums m16[2c] * lo + m16[2c+1] * hi of one block against 256 activations. */
TARGET_AVX2 INLINE __m256i isums_q6k(const uint8_t* blk, const int8_t* xq, __m256i sc_lo, __m256i sc_hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30), one = _mm256_set1_epi8(1);
    __m256i v[8], xv[8];
    for (int h = 0; h < 2; h++) {
        const uint8_t* ql = blk + 64 * h;
        const __m256i l0 = _mm256_loadu_si256((const __m256i*)ql);
        const __m256i l1 = _mm256_loadu_si256((const __m256i*)(ql + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i*)(blk + 128 + 32 * h));
        const __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
            _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m30)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30)),
        };
        for (int j = 0; j < 4; j++) {
            const int8_t* x = xq + 128 * h + 32 * j;
            v[4 * h + j] = dot32(q[j], x);
            xv[4 * h + j] = dot32(one, x);
        }
    }
    __m128i lo0, hi0, lo1, hi1, xlo0, xhi0, xlo1, xhi1;
    halves4(v, &lo0, &hi0);
    halves4(v + 4, &lo1, &hi1);
    halves4(xv, &xlo0, &xhi0);
    halves4(xv + 4, &xlo1, &xhi1);
    /* undo the +32 of each value: 32 * (sum of the half's activations) */
    const __m256i lo = _mm256_sub_epi32(_mm256_set_m128i(lo1, lo0), _mm256_slli_epi32(_mm256_set_m128i(xlo1, xlo0), 5));
    const __m256i hi = _mm256_sub_epi32(_mm256_set_m128i(hi1, hi0), _mm256_slli_epi32(_mm256_set_m128i(xhi1, xhi0), 5));
    return _mm256_add_epi32(_mm256_mullo_epi32(sc_lo, lo), _mm256_mullo_epi32(sc_hi, hi));
}

/* Scale and min j of Q4_K / Q5_K's 12 packed bytes (as kernels_blocks.c reads them). */
INLINE void scale_min(const uint8_t* s, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

TARGET_AVX2 void qwen3_matmul_blocks_avx2(float* out, size_t out_stride, const Qwen3BlockMatrix* w,
                                          const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end) {
    const uint32_t type = w->type;
    if (type != QWEN3_BLOCK_Q4_K && type != QWEN3_BLOCK_Q5_K && type != QWEN3_BLOCK_Q6_K) {
        qwen3_matmul_blocks_ref(out, out_stride, w, x, row_begin, row_end);
        return;
    }
    const uint32_t bb = qwen3_block_bytes(type), nb = w->cols / 256, ng = x->n / 32;
    for (uint32_t r = row_begin; r < row_end; r++) {
        const uint8_t* row = w->data + (size_t)r * w->row_bytes;
        float* o = out + (r - row_begin);
        for (uint32_t t = 0; t < x->n_tokens; t++) o[(size_t)t * out_stride] = 0.0f;
        for (uint32_t b = 0; b < nb; b++) {
            const uint8_t* blk = row + (size_t)b * bb;
            if (b + 1 < nb) _mm_prefetch((const char*)(blk + bb), _MM_HINT_T0);
            float offset[8];
            __m256 scale;
            __m256i sc_lo = _mm256_setzero_si256(), sc_hi = _mm256_setzero_si256();
            if (type == QWEN3_BLOCK_Q6_K) {
                const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(blk + 192)));
                /* even entries (first halves) and odd ones (second halves), as int32 */
                const __m256i ev = _mm256_srai_epi32(_mm256_slli_epi32(s16, 16), 16);
                const __m256i od = _mm256_srai_epi32(s16, 16);
                /* s16 holds scales 0..7 in the low 128 bits, 8..15 in the high: lanes of ev
                 * are scales 0,2,4,6 | 8,10,12,14 - already chunk order */
                sc_lo = ev;
                sc_hi = od;
                scale = _mm256_set1_ps(qwen3_f16_to_f32(qwen3_read_u16le(blk + 208)));
            } else {
                const float d = qwen3_f16_to_f32(qwen3_read_u16le(blk));
                const float dmin = qwen3_f16_to_f32(qwen3_read_u16le(blk + 2));
                float sv[8];
                for (int j = 0; j < 8; j++) {
                    int sc, m;
                    scale_min(blk + 4, j, &sc, &m);
                    sv[j] = d * (float)sc;
                    offset[j] = -(dmin * (float)m);
                }
                scale = _mm256_loadu_ps(sv);
            }
            for (uint32_t t = 0; t < x->n_tokens; t++) {
                const int8_t* xq = x->q + (size_t)t * x->n + (size_t)b * 256;
                const size_t g = (size_t)t * ng + (size_t)b * 8;
                __m256 p;
                if (type == QWEN3_BLOCK_Q6_K) {
                    p = epilogue(isums_q6k(blk, xq, sc_lo, sc_hi), scale, NULL, NULL, x->s + g);
                } else {
                    p = epilogue(isums_k45(blk, xq, type == QWEN3_BLOCK_Q5_K), scale, offset, x->sums + g, x->s + g);
                }
                float* dst = o + (size_t)t * out_stride;
                *dst = add_in_order(*dst, p);
            }
        }
    }
}
