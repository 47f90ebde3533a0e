/* kernels_avx512.c - the "avx512vnni" tier: int8 matrix-vector with vpdpbusd on 512-bit
 * registers (AVX-512F/BW/VL + VNNI).
 *
 * Shape of the work: 16 rows at a time. For every group, each row gets one 512-bit
 * int32 accumulator fed by vpdpbusd over the group's bytes; the 16 accumulators are then
 * transposed and reduced into ONE vector whose lane i is the exact int32 group sum of
 * row i. The float part (cvt, * w_scale, * x_scale, +) then runs with rows in lanes, in
 * the same order and with the same roundings as the scalar reference, so every output
 * is bit-identical to it (kernels.h).
 *
 * Signed x signed with vpdpbusd (which multiplies UNSIGNED bytes by signed bytes): the
 * weight byte is flipped to w + 128 (xor 0x80: -128..127 -> 0..255, exact for every
 * int8) and x stays signed, so the instruction sums (w + 128) * x = w * x + 128 * x.
 * The unwanted 128 * sum(x) is the same for every row of a group, so it is computed
 * once per group (vpdpbusd of 0x80 bytes with x) and used, negated, as the starting
 * value of every row's accumulator. Each product is at most 255 * 128 in magnitude and
 * int32 wraps exactly, so the group sum is exact for any int8 weights and activations;
 * flipping x instead would make the correction differ per row, and |x| with sign(x)
 * moved onto w breaks on w = -128.
 */
#include <immintrin.h>
#include <stddef.h>

#include "kernels.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,evex512")))
#define INLINE TARGET static inline __attribute__((always_inline))

#define ROWS 16 /* rows per block: one per float lane of a 512-bit register */

/* Loops over the 16 rows must be unrolled completely so the 16 accumulators live in
 * registers instead of a stack array. */
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 16")
#else
#define UNROLL
#endif

/* Weights are streamed once per token (hundreds of MB), so caches only help if a line is
 * already on its way when the kernel reaches it. The 16 rows of a block are contiguous
 * (16 * cols bytes) but read 16 lines at a time, 1 row (cols bytes) apart, a pattern the
 * hardware prefetchers follow poorly (without software prefetch this kernel streams at
 * under half the plain read rate). So each 64-byte step also prefetches the next 16
 * lines of the NEXT block in address order: cols / 64 steps x 1 KB cover it exactly,
 * and the in-order stream is what the DRAM pages and the L2 streamer like best
 * (measured ahead of prefetching the next block's lines in the kernel's own order). */
#define PREFETCH(p) _mm_prefetch((const char*)(p), _MM_HINT_T0)
#define PREFETCH_STEP(next, col, i) PREFETCH((next) + ((col) / 64) * (ROWS * 64) + (size_t)(i) * 64)

/* The first three reduction levels: 16 row accumulators -> two vectors whose 128-bit
 * lane L holds, for rows 4L..4L+3 of the 8 rows it covers, the sums of 128-bit lanes
 * (0,1) and (2,3) of the original accumulators:
 *   v0 = [rows 0-3: lanes 0+1, rows 0-3: lanes 2+3, rows 4-7: 0+1, rows 4-7: 2+3]
 *   v1 = the same for rows 8-15. */
INLINE void reduce_levels_123(const __m512i a[ROWS], __m512i* v0, __m512i* v1) {
    __m512i t[8], u[4];
    UNROLL for (int j = 0; j < 8; j++) {
        /* Per 128-bit lane: [a0 e0+e2, a1 e0+e2, a0 e1+e3, a1 e1+e3]. */
        t[j] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * j], a[2 * j + 1]),
                                _mm512_unpackhi_epi32(a[2 * j], a[2 * j + 1]));
    }
    UNROLL for (int j = 0; j < 4; j++) {
        /* Per 128-bit lane: the lane's total for rows 4j .. 4j+3, in order. */
        u[j] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * j], t[2 * j + 1]),
                                _mm512_unpackhi_epi64(t[2 * j], t[2 * j + 1]));
    }
    *v0 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    *v1 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Lane i = the total of accumulator i. */
INLINE __m512i reduce_full(const __m512i a[ROWS]) {
    __m512i v0, v1;
    reduce_levels_123(a, &v0, &v1);
    return _mm512_add_epi32(_mm512_shuffle_i32x4(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* For accumulators whose low 256 bits hold one group and high 256 bits the next:
 * lane i of *lo = row i's first group, of *hi = its second group. */
INLINE void reduce_split(const __m512i a[ROWS], __m512i* lo, __m512i* hi) {
    __m512i v0, v1;
    reduce_levels_123(a, &v0, &v1);
    *lo = _mm512_shuffle_i32x4(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));
    *hi = _mm512_shuffle_i32x4(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
}

/* acc = acc + ((float)isum * w_scale) * x_scale, rows in lanes: the scalar order. */
INLINE __m512 accumulate(__m512 acc, __m512i isum, __m512i scale_idx, const float* ws_g, float xs) {
    const __m512 wscale = _mm512_i32gather_ps(scale_idx, ws_g, 4);
    const __m512 f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), wscale), _mm512_set1_ps(xs));
    return _mm512_add_ps(acc, f);
}

/* Rows r0 .. r0+nrows-1 (nrows <= 16) into out[0 .. nrows-1]. Lanes past nrows repeat the
 * last row (in bounds, results dropped), so one code path serves full and tail blocks.
 * Inlined with `prefetch` a constant, so neither copy tests it per load. */
INLINE void block16(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x, uint32_t r0, uint32_t nrows,
                    const int prefetch) {
    const size_t n = w->cols;
    const uint32_t gs = w->group_size;
    const uint32_t ng = (uint32_t)(n / gs);
    const int8_t* base = w->q + (size_t)r0 * n;
    const float* sbase = w->s + (size_t)r0 * ng;
    size_t off[ROWS];
    UNROLL for (uint32_t i = 0; i < ROWS; i++) off[i] = (size_t)(i < nrows ? i : nrows - 1) * n;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i scale_idx = _mm512_mullo_epi32(_mm512_min_epu32(lane, _mm512_set1_epi32((int)nrows - 1)),
                                                 _mm512_set1_epi32((int)ng));
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const int8_t* next = base + (size_t)ROWS * n; /* the next block */
    __m512 acc = _mm512_setzero_ps();
    __m512i a[ROWS];

    uint32_t g = 0;
    if (gs == 32) {
        /* Two groups per 64-byte load: the split reduction keeps their sums apart, so the
         * 32-wide groups of GGUF Q8_0 cost no more reduction work per byte than 64. */
        for (; g + 2 <= ng; g += 2) {
            const size_t k = (size_t)g * 32;
            const __m512i xv = _mm512_loadu_si512(x->q + k);
            const __m512i init = _mm512_sub_epi32(_mm512_setzero_si512(),
                                                  _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, xv));
            UNROLL for (int i = 0; i < ROWS; i++) {
                if (prefetch) PREFETCH_STEP(next, k, i);
                const __m512i wv = _mm512_xor_si512(_mm512_loadu_si512(base + off[i] + k), bias);
                a[i] = _mm512_dpbusd_epi32(init, wv, xv);
            }
            __m512i lo, hi;
            reduce_split(a, &lo, &hi);
            acc = accumulate(acc, lo, scale_idx, sbase + g, x->s[g]);
            acc = accumulate(acc, hi, scale_idx, sbase + g + 1, x->s[g + 1]);
        }
    }
    for (; g < ng; g++) {
        const int8_t* xg = x->q + (size_t)g * gs;
        const int8_t* wg = base + (size_t)g * gs;
        /* 128 * sum(x) of the group, spread over 16 lanes, negated: the start value. */
        __m512i corr = _mm512_setzero_si512();
        uint32_t k = 0;
        for (; k + 64 <= gs; k += 64) corr = _mm512_dpbusd_epi32(corr, bias, _mm512_loadu_si512(xg + k));
        const uint32_t rem = gs - k;
        const __mmask64 tail = rem ? (((__mmask64)1 << rem) - 1) : 0;
        if (rem) corr = _mm512_dpbusd_epi32(corr, bias, _mm512_maskz_loadu_epi8(tail, xg + k));
        corr = _mm512_sub_epi32(_mm512_setzero_si512(), corr);
        UNROLL for (int i = 0; i < ROWS; i++) a[i] = corr;

        for (k = 0; k + 64 <= gs; k += 64) {
            const __m512i xv = _mm512_loadu_si512(xg + k);
            UNROLL for (int i = 0; i < ROWS; i++) {
                if (prefetch) PREFETCH_STEP(next, (size_t)g * gs + k, i);
                const __m512i wv = _mm512_xor_si512(_mm512_loadu_si512(wg + off[i] + k), bias);
                a[i] = _mm512_dpbusd_epi32(a[i], wv, xv);
            }
        }
        if (rem) {
            /* Masked loads read nothing past the group (no fault at the end of a mapping);
             * the zeroed x bytes cancel the flipped zero weight bytes (128 * 0). */
            const __m512i xv = _mm512_maskz_loadu_epi8(tail, xg + k);
            UNROLL for (int i = 0; i < ROWS; i++) {
                if (prefetch) PREFETCH(next + off[i] + (size_t)g * gs + k);
                const __m512i wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, wg + off[i] + k), bias);
                a[i] = _mm512_dpbusd_epi32(a[i], wv, xv);
            }
        }
        acc = accumulate(acc, reduce_full(a), scale_idx, sbase + g, x->s[g]);
    }
    if (nrows == ROWS) {
        _mm512_storeu_ps(out, acc);
    } else {
        _mm512_mask_storeu_ps(out, (__mmask16)((1u << nrows) - 1), acc);
    }
}

TARGET static void matvec_q8_avx512vnni(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                                        uint32_t row_begin, uint32_t row_end) {
    uint32_t r = row_begin;
    /* Prefetch only rows this call will read: lines of the next thread's rows would be
     * fetched twice. */
    for (; row_end - r >= 2 * ROWS; r += ROWS) block16(out + (r - row_begin), w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) {
        block16(out + (r - row_begin), w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
    }
}

const Qwen3KernelTable qwen3_kernels_avx512vnni = {
    .name = "avx512vnni",
    .matvec_q8 = matvec_q8_avx512vnni,
};
