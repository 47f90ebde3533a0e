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
#include <string.h>

#include "kernels.h"
#include "kernels_transpose_avx512.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,evex512")))
#define INLINE TARGET static inline __attribute__((always_inline))

#define ROWS 16 /* rows per block: one per float lane of a 512-bit register */

/* Loops over the 16 rows must be unrolled completely so the 16 accumulators live in
 * registers instead of a stack array. */
#define UNROLL QWEN3_UNROLL_FULL(ROWS)

/* Weights are streamed once per token (hundreds of MB), so caches only help if a line is
 * already on its way when the kernel reaches it. The 16 rows of a block are contiguous
 * (16 * cols bytes) but read 16 lines at a time, 1 row (cols bytes) apart, a pattern the
 * hardware prefetchers follow poorly (without software prefetch this kernel streams at
 * under half the plain read rate). So each 64-byte step also prefetches the next 16
 * lines of the NEXT block in address order: cols / 64 steps x 1 KB cover it exactly,
 * and the in-order stream is what the DRAM pages and the L2 streamer like best
 * (measured ahead of prefetching the next block's lines in the kernel's own order).
 * The hint is T1 (into L2, not L1): a block of a 3072-column matrix is 48 KB, the whole
 * L1 of a Sapphire Rapids core, so T0 lines of the next block evicted the current one's
 * before use. With T1, bench-matvec (1 thread, cold) read 1024x3072 at 92-98% of the
 * read probe instead of 77-79%, 2048x1024 at 95-99% instead of 85-95%. */
#define PREFETCH(p) _mm_prefetch((const char*)(p), _MM_HINT_T1)
#define PREFETCH_STEP(next, col, i) PREFETCH((next) + ((col) / 64) * (ROWS * 64) + (size_t)(i) * 64)
/* A block's scales are 16 rows x ng floats = ng lines, read by one gather per group that
 * touches all 16 rows' lines at the block's first group: without help that gather waited
 * on DRAM at the start of every block (16 KB of weights for 1024 columns). So group g also
 * prefetches line g of the next block's scales. tg128 of the 0.6B shape, builds
 * alternating, medians of 7: 17.48 -> 17.83 tok/s at 1 thread (7 of 7 pairs), 33.39 ->
 * 33.76 at 2 (6 of 7). */
#define PREFETCH_SCALES(snext, g) PREFETCH((snext) + (size_t)(g) * 64)

/* Masked loads and the sanitizer build. ASan checks a masked access lane by lane (64
 * branches for one of bytes), so every inlined copy of a kernel with masked loads costs
 * clang seconds: tools/sanitize.ts built this file in 110 s with clang 14 at -O1, 33 s
 * once the hot tiles used plain loads and the masked ones were confined to few copies (a
 * not-inlined tail function, a one-query tile) or replaced where speed does not matter
 * (load_tail_epi8, for a packing step amortised over the batch). */

/* The n < 64 bytes at p, zero-extended to a vector, through a copy on the stack. */
INLINE __m512i load_tail_epi8(const void* p, uint32_t n) {
    _Alignas(64) uint8_t line[64] = {0};
    memcpy(line, p, n);
    return _mm512_load_si512((const void*)line);
}

/* a[i] += the products of the last rem < 64 bytes of a group, row i's at w + off[i], with
 * the activations' at x: block16's tail for group sizes that 64 does not divide, other
 * than 32, in its copy for a call's last blocks (the streaming copy has the same loop
 * inline). Masked loads read nothing past the group (no fault at the end of a mapping);
 * the zeroed x bytes cancel the flipped zero weight bytes (128 * 0). Not inlined, so the
 * file holds two copies of those 17 masked loads, not three (see above). */
TARGET __attribute__((noinline)) static void group_tail16(__m512i a[ROWS], const int8_t* w, const size_t* off,
                                                         const int8_t* x, uint32_t rem) {
    const __mmask64 tail = ((__mmask64)1 << rem) - 1;
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const __m512i xv = _mm512_maskz_loadu_epi8(tail, x);
    UNROLL for (int i = 0; i < ROWS; i++) {
        const __m512i wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, w + off[i]), bias);
        a[i] = _mm512_dpbusd_epi32(a[i], wv, xv);
    }
}

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
    const char* snext = (const char*)(sbase + (size_t)ROWS * ng); /* its scales: ng lines */
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
            if (prefetch) {
                PREFETCH_SCALES(snext, g);
                PREFETCH_SCALES(snext, g + 1);
            }
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
        if (prefetch) PREFETCH_SCALES(snext, g);
        /* 128 * sum(x) of the group, spread over 16 lanes, negated: the start value. */
        __m512i corr = _mm512_setzero_si512();
        uint32_t k = 0;
        for (; k + 64 <= gs; k += 64) corr = _mm512_dpbusd_epi32(corr, bias, _mm512_loadu_si512(xg + k));
        const uint32_t rem = gs - k;
        if (rem) corr = _mm512_dpbusd_epi32(corr, bias, _mm512_maskz_loadu_epi8(((__mmask64)1 << rem) - 1, xg + k));
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
        if (rem && prefetch) {
            /* the streaming copy: inline, so the accumulators stay in registers */
            const __mmask64 tail = ((__mmask64)1 << rem) - 1;
            const __m512i xv = _mm512_maskz_loadu_epi8(tail, xg + k);
            UNROLL for (int i = 0; i < ROWS; i++) {
                PREFETCH(next + off[i] + (size_t)g * gs + k);
                const __m512i wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, wg + off[i] + k), bias);
                a[i] = _mm512_dpbusd_epi32(a[i], wv, xv);
            }
        } else if (rem) {
            group_tail16(a, wg + k, off, xg + k, rem);
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
    if (row_end - r >= ROWS) qwen3_prefetch_q8_rows(w, r, ROWS);
    /* Prefetch only rows this call will read: lines of the next thread's rows would be
     * fetched twice. */
    for (; row_end - r >= 2 * ROWS; r += ROWS) block16(out + (r - row_begin), w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) {
        block16(out + (r - row_begin), w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
    }
}

/* ====================================================================================
 * Batched product (prefill): a GEMM micro-kernel on vpdpbusd.
 *
 * A register tile is 32 rows (two vectors of 16 int32 lanes, rows in lanes) by up to
 * MM_TOK tokens. Weights are repacked on the fly, once per call, 32 rows by MM_CHUNK
 * columns at a time (an L1-sized block reused by every token of the batch): per step of
 * 4 columns, one 64-byte vector holds the 4 bytes of each of 16 rows, flipped by 0x80
 * as in matvec. Each token's 4 activation bytes are broadcast to all lanes, so one
 * vpdpbusd adds 4 products to each of 16 rows' sums and no horizontal reduction is ever
 * needed. The unwanted 128 * sum(x) of a group is per token, from the batch's group sums,
 * and starts each accumulator. After every group the float part runs with rows in lanes,
 * per token, in the scalar order: acc + ((float)isum * w_scale) * x_scale - so each
 * (token, row) output has exactly the bits of matvec_q8 for that token (kernels.h).
 * ================================================================================== */

/* 16 floats at p: a plain load or store, or with `masked` the lanes of m only (a
 * constant, so each inlined copy has one kind: ASan checks a masked access lane by lane,
 * a compile-time cost that grows with every copy). */
INLINE __m512 load_dims(const float* p, __mmask16 m, const int masked) {
    return masked ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
}

INLINE void store_dims(float* p, __mmask16 m, __m512 v, const int masked) {
    if (masked) {
        _mm512_mask_storeu_ps(p, m, v);
    } else {
        _mm512_storeu_ps(p, v);
    }
}

#define MM_ROWS 32     /* rows per register tile */
#define MM_TOK 6       /* tokens per register tile: 2 x 6 int32 + 2 x 6 float accumulators */
#define MM_CHUNK 1024  /* columns packed at a time: 32 KB of weights, L1-sized */

/* Packs rows r0 .. r0+31 (rows past nrows repeat the last row: in bounds, results
 * dropped) and columns [c0, c0 + nc) of w into pk, flipped by 0x80: the vector of
 * 4-column step j, half h (rows 16h .. 16h+15) is at pk + (2j + h) * 64. Their scales go
 * to ps: group gl of the chunk at ps + gl * 32. nc is a multiple of the group size (and so
 * of 4); a last partial 64-column piece is read through load_tail_epi8, never past the row. */
TARGET static void mm_pack(uint8_t* pk, float* ps, const Qwen3Q8Matrix* w, uint32_t r0, uint32_t nrows,
                           uint32_t c0, uint32_t nc) {
    const size_t n = w->cols;
    const uint32_t gs = w->group_size, ng = (uint32_t)(n / gs);
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (uint32_t h = 0; h < 2; h++) {
        const int8_t* rows[16];
        for (uint32_t i = 0; i < 16; i++) {
            const uint32_t row = 16 * h + i < nrows ? 16 * h + i : nrows - 1;
            rows[i] = w->q + (size_t)(r0 + row) * n + c0;
        }
        for (uint32_t c = 0; c < nc; c += 64) {
            __m512i r[16];
            if (nc - c >= 64) {
                UNROLL for (int i = 0; i < 16; i++) r[i] = _mm512_xor_si512(_mm512_loadu_si512(rows[i] + c), bias);
            } else {
                for (int i = 0; i < 16; i++) r[i] = _mm512_xor_si512(load_tail_epi8(rows[i] + c, nc - c), bias);
            }
            qwen3_transpose16_avx512(r);
            uint8_t* dst = pk + ((size_t)(c / 4) * 2 + h) * 64;
            const uint32_t steps = nc - c >= 64 ? 16 : (nc - c) / 4;
            for (uint32_t j = 0; j < steps; j++) _mm512_store_si512(dst + (size_t)j * 128, r[j]);
        }
    }
    const uint32_t g0 = c0 / gs, ngc = nc / gs;
    for (uint32_t i = 0; i < MM_ROWS; i++) {
        const uint32_t row = i < nrows ? i : nrows - 1;
        const float* src = w->s + (size_t)(r0 + row) * ng + g0;
        for (uint32_t gl = 0; gl < ngc; gl++) ps[gl * MM_ROWS + i] = src[gl];
    }
}

/* The weight lines of the chunk packed next, fetched into L2 a few at a time while the
 * current chunk is computed: packing then reads from cache instead of waiting on DRAM
 * for 32 rows at once (a pattern the hardware prefetchers do not follow). Line i is
 * line i % lines of row i / lines. */
typedef struct {
    const int8_t* base; /* first byte of the chunk's first row */
    size_t stride;      /* bytes from one row to the next */
    uint32_t lines;     /* 64-byte lines per row */
    uint32_t next, end; /* lines still to fetch */
    uint32_t per_group; /* lines fetched per group of a tile */
} MmPrefetch;

INLINE void mm_prefetch(MmPrefetch* pf) {
    for (uint32_t i = 0; i < pf->per_group && pf->next < pf->end; i++, pf->next++) {
        const uint32_t row = pf->next / pf->lines, line = pf->next % pf->lines;
        _mm_prefetch((const char*)(pf->base + (size_t)row * pf->stride + (size_t)line * 64), _MM_HINT_T1);
    }
}

/* One register tile: tokens t0 .. t0+nt-1 by the 32 packed rows, over the chunk's ngc
 * groups starting at group g0. Accumulators start at 0 for the first chunk, else from out
 * (a stored float reloads exactly, so the per-group order is unbroken across chunks).
 * With `masked`, only the rows in m0 (rows 0-15) and m1 (16-31) are read and written:
 * a last tile of fewer than 32 rows. */
INLINE void mm_tile(float* out, size_t ld, const uint8_t* pk, const float* ps, const Qwen3Q8Batch* x,
                    uint32_t t0, const int nt, uint32_t g0, uint32_t ngc, int first, const int masked,
                    __mmask16 m0, __mmask16 m1, MmPrefetch* pf) {
    const uint32_t gs = x->group_size, ng = x->n / gs, steps = gs / 4;
    __m512 acc[MM_TOK][2];
    UNROLL for (int t = 0; t < nt; t++) {
        float* o = out + (size_t)(t0 + t) * ld;
        acc[t][0] = first ? _mm512_setzero_ps() : load_dims(o, m0, masked);
        acc[t][1] = first ? _mm512_setzero_ps() : load_dims(o + 16, m1, masked);
    }
    const int8_t* xq[MM_TOK];
    UNROLL for (int t = 0; t < nt; t++) xq[t] = x->q + (size_t)(t0 + t) * x->n + (size_t)g0 * gs;
    for (uint32_t gl = 0; gl < ngc; gl++) {
        const uint32_t g = g0 + gl;
        __m512i a[MM_TOK][2];
        UNROLL for (int t = 0; t < nt; t++) {
            const __m512i corr = _mm512_set1_epi32(-128 * x->sums[(size_t)(t0 + t) * ng + g]);
            a[t][0] = corr;
            a[t][1] = corr;
        }
        const uint8_t* pg = pk + (size_t)gl * steps * 128;
        mm_prefetch(pf);
        for (uint32_t j = 0; j < steps; j++) {
            const __m512i w0 = _mm512_load_si512(pg + (size_t)j * 128);
            const __m512i w1 = _mm512_load_si512(pg + (size_t)j * 128 + 64);
            UNROLL for (int t = 0; t < nt; t++) {
                int32_t xv;
                memcpy(&xv, xq[t] + (size_t)gl * gs + 4 * j, 4);
                const __m512i b = _mm512_set1_epi32(xv);
                a[t][0] = _mm512_dpbusd_epi32(a[t][0], w0, b);
                a[t][1] = _mm512_dpbusd_epi32(a[t][1], w1, b);
            }
        }
        const __m512 ws0 = _mm512_load_ps(ps + (size_t)gl * MM_ROWS);
        const __m512 ws1 = _mm512_load_ps(ps + (size_t)gl * MM_ROWS + 16);
        UNROLL for (int t = 0; t < nt; t++) {
            const __m512 xs = _mm512_set1_ps(x->s[(size_t)(t0 + t) * ng + g]);
            acc[t][0] = _mm512_add_ps(acc[t][0], _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[t][0]), ws0), xs));
            acc[t][1] = _mm512_add_ps(acc[t][1], _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[t][1]), ws1), xs));
        }
    }
    UNROLL for (int t = 0; t < nt; t++) {
        float* o = out + (size_t)(t0 + t) * ld;
        store_dims(o, m0, acc[t][0], masked);
        store_dims(o + 16, m1, acc[t][1], masked);
    }
}

/* ====================================================================================
 * Batched product for a few tokens (batched decode of 2 .. SM_TOK sequences): the weights
 * stream once, in matvec's order and with its prefetch, and nothing is repacked in memory.
 *
 * Per 16-row block and 64-byte column step, the 16 rows' bytes (flipped by 0x80) are
 * loaded as in matvec and transposed in registers (qwen3_transpose16_avx512), so vector j
 * holds the 4 bytes of columns 4j .. 4j+3 of each row, rows in lanes. Every token then adds
 * 16 vpdpbusd of those vectors with its own 4 activation bytes broadcast: no horizontal
 * reduction per token, and one transpose per 1 KB of weights whatever the token count
 * (matvec per token would pay a 16-way reduction per group per token instead). The
 * integer group sum starts at -128 * sum(x) of the group (from the batch's sums) and is
 * exact; the float part is matvec's, per token, rows in lanes, in the scalar order, so
 * each (token, row) output has the bits of matvec_q8 for that token (kernels.h).
 * Group sizes 32 (two groups per step) and multiples of 64 (a group spans whole steps);
 * others take the repacking kernel below.
 * ================================================================================== */

#define SM_TOK 16 /* most tokens per call on this path */

/* s + the products of steps j0 .. j1-1 of the transposed block r with the token's bytes
 * at xq (4 per step), in two chains (int32 adds are exact in any order) so consecutive
 * vpdpbusd do not wait on each other. */
INLINE __m512i sm_dot(__m512i s, const __m512i r[16], const int8_t* xq, const int j0, const int j1) {
    __m512i s1 = _mm512_setzero_si512();
    UNROLL for (int j = j0; j < j1; j++) {
        int32_t xv;
        memcpy(&xv, xq + 4 * j, 4);
        if ((j - j0) % 2 == 0) {
            s = _mm512_dpbusd_epi32(s, r[j], _mm512_set1_epi32(xv));
        } else {
            s1 = _mm512_dpbusd_epi32(s1, r[j], _mm512_set1_epi32(xv));
        }
    }
    return _mm512_add_epi32(s, s1);
}

/* acc + ((float)isum * ws) * xs, rows in lanes: matvec's accumulate() with the weight
 * scales already gathered. */
INLINE __m512 sm_fma_free(__m512 acc, __m512i isum, __m512 ws, float xs) {
    return _mm512_add_ps(acc, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), ws), _mm512_set1_ps(xs)));
}

/* Rows r0 .. r0+nrows-1 (nrows <= 16; lanes past nrows repeat the last row, results
 * dropped) for all nt <= SM_TOK tokens of x into out[t * ld + i]. */
INLINE void sm_block16(float* out, size_t ld, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x, uint32_t r0,
                       uint32_t nrows, const int prefetch) {
    const size_t n = w->cols;
    const uint32_t gs = w->group_size, nt = x->n_tokens;
    const uint32_t ng = (uint32_t)(n / gs);
    const int8_t* base = w->q + (size_t)r0 * n;
    const float* sbase = w->s + (size_t)r0 * ng;
    size_t off[ROWS];
    UNROLL for (uint32_t i = 0; i < ROWS; i++) off[i] = (size_t)(i < nrows ? i : nrows - 1) * n;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i scale_idx = _mm512_mullo_epi32(_mm512_min_epu32(lane, _mm512_set1_epi32((int)nrows - 1)),
                                                 _mm512_set1_epi32((int)ng));
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const int8_t* next = base + (size_t)ROWS * n;
    const char* snext = (const char*)(sbase + (size_t)ROWS * ng);
    __m512 acc[SM_TOK];
    __m512i isum[SM_TOK]; /* a group's integer sums, for groups of more than 64 bytes */
    for (uint32_t t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    uint32_t sg = 0;  /* the next group whose scale line of the next block is still to ask for */
    size_t scol = 0;  /* and its first column */
    for (size_t k = 0; k < n; k += 64) {
        const int full = n - k >= 64; /* else 32 bytes: the last group of size 32 */
        if (prefetch) {
            /* the next block's scale lines of the groups this step starts (one per group) */
            for (; scol < k + 64 && sg < ng; scol += gs, sg++) PREFETCH_SCALES(snext, sg);
        }
        __m512i r[16];
        if (full) {
            UNROLL for (int i = 0; i < ROWS; i++) {
                if (prefetch) PREFETCH_STEP(next, k, i);
                r[i] = _mm512_xor_si512(_mm512_loadu_si512(base + off[i] + k), bias);
            }
        } else {
            UNROLL for (int i = 0; i < ROWS; i++) {
                if (prefetch) PREFETCH(next + off[i] + k);
                const __m256i h = _mm256_loadu_si256((const __m256i*)(const void*)(base + off[i] + k));
                r[i] = _mm512_xor_si512(_mm512_zextsi256_si512(h), bias);
            }
        }
        qwen3_transpose16_avx512(r);
        if (gs == 32) {
            const uint32_t g = (uint32_t)(k / 32);
            const __m512 ws0 = _mm512_i32gather_ps(scale_idx, sbase + g, 4);
            for (uint32_t t = 0; t < nt; t++) {
                const int8_t* xq = x->q + (size_t)t * n + k;
                const size_t xg = (size_t)t * ng + g;
                const __m512i s = sm_dot(_mm512_set1_epi32(-128 * x->sums[xg]), r, xq, 0, 8);
                acc[t] = sm_fma_free(acc[t], s, ws0, x->s[xg]);
            }
            if (full) {
                const __m512 ws1 = _mm512_i32gather_ps(scale_idx, sbase + g + 1, 4);
                for (uint32_t t = 0; t < nt; t++) {
                    const int8_t* xq = x->q + (size_t)t * n + k;
                    const size_t xg = (size_t)t * ng + g + 1;
                    const __m512i s = sm_dot(_mm512_set1_epi32(-128 * x->sums[xg]), r, xq, 8, 16);
                    acc[t] = sm_fma_free(acc[t], s, ws1, x->s[xg]);
                }
            }
        } else {
            const uint32_t g = (uint32_t)(k / gs);
            const int starts = k % gs == 0, ends = (k + 64) % gs == 0;
            for (uint32_t t = 0; t < nt; t++) {
                const int8_t* xq = x->q + (size_t)t * n + k;
                const __m512i s0 = starts ? _mm512_set1_epi32(-128 * x->sums[(size_t)t * ng + g]) : isum[t];
                isum[t] = sm_dot(s0, r, xq, 0, 16);
            }
            if (ends) {
                const __m512 ws = _mm512_i32gather_ps(scale_idx, sbase + g, 4);
                for (uint32_t t = 0; t < nt; t++) acc[t] = sm_fma_free(acc[t], isum[t], ws, x->s[(size_t)t * ng + g]);
            }
        }
    }
    const __mmask16 m = nrows >= ROWS ? (__mmask16)0xffff : (__mmask16)((1u << nrows) - 1);
    for (uint32_t t = 0; t < nt; t++) _mm512_mask_storeu_ps(out + (size_t)t * ld, m, acc[t]);
}

TARGET static void matmul_q8_small_avx512vnni(float* out, size_t ld, const Qwen3Q8Matrix* w,
                                              const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end) {
    uint32_t r = row_begin;
    if (row_end - r >= ROWS) qwen3_prefetch_q8_rows(w, r, ROWS);
    for (; row_end - r >= 2 * ROWS; r += ROWS) sm_block16(out + (r - row_begin), ld, w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) {
        sm_block16(out + (r - row_begin), ld, w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
    }
}

TARGET static void matmul_q8_avx512vnni(float* out, size_t ld, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                                        uint32_t row_begin, uint32_t row_end) {
    const uint32_t gs = w->group_size;
    if (x->n_tokens >= 2 && x->n_tokens <= SM_TOK && (gs == 32 || gs % 64 == 0)) {
        matmul_q8_small_avx512vnni(out, ld, w, x, row_begin, row_end);
        return;
    }
    /* One token gains nothing from repacking; odd group sizes do not split into 4-byte
     * steps. Both take the per-token kernel (same bits). */
    if (x->n_tokens < 2 || gs % 4 != 0 || gs > MM_CHUNK) {
        qwen3_matmul_q8_by_matvec(matvec_q8_avx512vnni, out, ld, w, x, row_begin, row_end);
        return;
    }
    _Alignas(64) uint8_t pk[MM_ROWS * MM_CHUNK];
    _Alignas(64) float ps[MM_ROWS * (MM_CHUNK / 4)];
    const uint32_t cols = w->cols;
    const uint32_t chunk = (MM_CHUNK / gs) * gs;
    const uint32_t nt = x->n_tokens;
    for (uint32_t r0 = row_begin; r0 < row_end; r0 += MM_ROWS) {
        const uint32_t nrows = row_end - r0 < MM_ROWS ? row_end - r0 : MM_ROWS;
        const __mmask16 m0 = nrows >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nrows) - 1);
        const __mmask16 m1 = nrows >= 32 ? (__mmask16)0xffff : nrows > 16 ? (__mmask16)((1u << (nrows - 16)) - 1) : 0;
        float* o = out + (r0 - row_begin);
        for (uint32_t c0 = 0; c0 < cols; c0 += chunk) {
            const uint32_t nc = cols - c0 < chunk ? cols - c0 : chunk;
            mm_pack(pk, ps, w, r0, nrows, c0, nc);
            const uint32_t g0 = c0 / gs, ngc = nc / gs;
            const int first = c0 == 0;
            /* the chunk after this one: the next columns, or the next rows' first ones */
            MmPrefetch pf = {0};
            uint32_t pf_rows = 0, pf_cols = 0;
            if (c0 + nc < cols) {
                pf.base = w->q + (size_t)r0 * cols + c0 + nc;
                pf_rows = nrows;
                pf_cols = cols - (c0 + nc) < chunk ? cols - (c0 + nc) : chunk;
            } else if (r0 + MM_ROWS < row_end) {
                pf.base = w->q + (size_t)(r0 + MM_ROWS) * cols;
                pf_rows = row_end - (r0 + MM_ROWS) < MM_ROWS ? row_end - (r0 + MM_ROWS) : MM_ROWS;
                pf_cols = cols < chunk ? cols : chunk;
            }
            pf.stride = cols;
            pf.lines = (pf_cols + 63) / 64;
            pf.end = pf_rows * pf.lines;
            const uint32_t visits = ((nt + MM_TOK - 1) / MM_TOK) * ngc;
            pf.per_group = (pf.end + visits - 1) / visits;
            if (nrows < MM_ROWS) {
                /* a last partial tile (no Qwen3 matrix has one: their rows are multiples
                 * of 32), a token at a time through the one masked copy of the tile */
                for (uint32_t t = 0; t < nt; t++) mm_tile(o, ld, pk, ps, x, t, 1, g0, ngc, first, 1, m0, m1, &pf);
                continue;
            }
            uint32_t t0 = 0;
            for (; t0 + MM_TOK <= nt; t0 += MM_TOK) mm_tile(o, ld, pk, ps, x, t0, MM_TOK, g0, ngc, first, 0, m0, m1, &pf);
            switch (nt - t0) {
            case 5: mm_tile(o, ld, pk, ps, x, t0, 5, g0, ngc, first, 0, m0, m1, &pf); break;
            case 4: mm_tile(o, ld, pk, ps, x, t0, 4, g0, ngc, first, 0, m0, m1, &pf); break;
            case 3: mm_tile(o, ld, pk, ps, x, t0, 3, g0, ngc, first, 0, m0, m1, &pf); break;
            case 2: mm_tile(o, ld, pk, ps, x, t0, 2, g0, ngc, first, 0, m0, m1, &pf); break;
            case 1: mm_tile(o, ld, pk, ps, x, t0, 1, g0, ngc, first, 0, m0, m1, &pf); break;
            default: break;
            }
        }
    }
}

/* ====================================================================================
 * Activation quantisation: qwen3_quantize_q8 (quant.c) with 16 values per instruction.
 *   max |x|:  lanes keep `a > m ? a : m` (vmaxps returns its second operand when the first
 *             is NaN, so NaN is skipped as in the scalar loop), lanes then folded by max
 *             (order-free for non-NaN values)
 *   divide:   the same IEEE division
 *   round:    half away from zero as roundf: t = trunc(v), d = v - t (exact), and
 *             t + sign(v) when |d| >= 0.5; NaN and infinities come out unchanged
 *   to int8:  0 unless |r| < 1e9 (so NaN and infinities give 0), else the low byte of
 *             the int32 (vpmovdb truncates), i.e. wrapping like the scalar to_int8
 * Group sizes that are not a multiple of 16 take the scalar reference.
 * ================================================================================== */

/* Bitwise and/or of floats through the integer unit (vandps needs AVX-512DQ, which
 * this tier does not require). */
INLINE __m512 and_ps(__m512 a, __m512 b) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}
INLINE __m512 or_ps(__m512 a, __m512 b) {
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}

TARGET static void quantize_row_avx512(const float* x, Qwen3Q8Batch* b, uint32_t t) {
    const uint32_t gs = b->group_size, n = b->n, ng = n / gs;
    if (gs % 16 != 0) {
        qwen3_quantize_q8_token(x, b, t);
        return;
    }
    int8_t* q = b->q + (size_t)t * n;
    float* s = b->s + (size_t)t * ng;
    int32_t* sums = b->sums + (size_t)t * ng;
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512 half = _mm512_set1_ps(0.5f), limit = _mm512_set1_ps(1e9f);
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign_bit = _mm512_set1_epi32((int)0x80000000u);
    for (uint32_t g = 0; g < ng; g++) {
        const float* xg = x + (size_t)g * gs;
        int8_t* qg = q + (size_t)g * gs;
        __m512 m = _mm512_setzero_ps();
        for (uint32_t i = 0; i < gs; i += 16) m = _mm512_max_ps(and_ps(_mm512_loadu_ps(xg + i), abs_mask), m);
        const float wmax = _mm512_reduce_max_ps(m);
        const float scale = wmax / 127.0f;
        s[g] = scale;
        if (scale == 0.0f) {
            memset(qg, 0, gs);
            sums[g] = 0;
            continue;
        }
        const __m512 sc = _mm512_set1_ps(scale);
        __m512i total = _mm512_setzero_si512();
        for (uint32_t i = 0; i < gs; i += 16) {
            const __m512 v = _mm512_div_ps(_mm512_loadu_ps(xg + i), sc);
            const __m512 tr = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m512 d = and_ps(_mm512_sub_ps(v, tr), abs_mask);
            const __mmask16 away = _mm512_cmp_ps_mask(d, half, _CMP_GE_OQ);
            const __m512 sgn = or_ps(one, and_ps(v, _mm512_castsi512_ps(sign_bit)));
            const __m512 r = _mm512_mask_add_ps(tr, away, tr, sgn);
            const __mmask16 ok = _mm512_cmp_ps_mask(and_ps(r, abs_mask), limit, _CMP_LT_OQ);
            const __m512i iv = _mm512_maskz_cvttps_epi32(ok, r);
            const __m128i bytes = _mm512_cvtepi32_epi8(iv);
            _mm_storeu_si128((__m128i*)(qg + i), bytes);
            total = _mm512_add_epi32(total, _mm512_cvtepi8_epi32(bytes));
        }
        sums[g] = _mm512_reduce_add_epi32(total);
    }
}

/* ====================================================================================
 * exp, softmax and SiLU: qwen3_exp_ref (kernels_exp_loops.h) on 16 floats per register, the
 * same operations in the same order per lane, so the same bits.
 * ================================================================================== */

INLINE __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-120.0f), hi = _mm512_set1_ps(100.0f);
    x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), x, lo);
    x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), x, hi);
    const __m512 magic = _mm512_set1_ps(QWEN3_EXP_MAGIC);
    const __m512 shifted = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(QWEN3_EXP_LOG2E)), magic);
    const __m512 k = _mm512_sub_ps(shifted, magic);
    const __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(k, _mm512_set1_ps(QWEN3_EXP_LN2_HI))),
                                   _mm512_mul_ps(k, _mm512_set1_ps(QWEN3_EXP_LN2_LO)));
    __m512 p = _mm512_set1_ps(QWEN3_EXP_C7);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(QWEN3_EXP_C6));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(QWEN3_EXP_C5));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(QWEN3_EXP_C4));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(QWEN3_EXP_C3));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(0.5f));
    p = _mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    /* shifted = 1.5 * 2^23 + k exactly, so its low bits are k (two's complement) */
    const __m512i ki = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_castps_si512(magic));
    const __m512i k1 = _mm512_srai_epi32(ki, 1), k2 = _mm512_sub_epi32(ki, k1);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(k1, bias), 23));
    const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(k2, bias), 23));
    return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

INLINE __mmask16 tail_mask(uint32_t left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); }

/* One row (kernels.h: softmax_exp): its max, then x[i] = exp(x[i] - max); returns the sum
 * of those in 16 lanes (masked adds: a tail's missing values are not added, as in the
 * scalar loop), folded 8, 4, 2, 1. */
TARGET static float softmax_exp_row(float* x, uint32_t n) {
    if (n == 0) return 0.0f;
    __m512 m = _mm512_set1_ps(x[0]);
    for (uint32_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail_mask(n - i);
        const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        m = _mm512_mask_mov_ps(m, _mm512_mask_cmp_ps_mask(k, v, m, _CMP_GT_OQ), v);
    }
    float lanes[16], mx = x[0];
    _mm512_storeu_ps(lanes, m);
    for (int l = 0; l < 16; l++) {
        if (lanes[l] > mx) mx = lanes[l];
    }
    const __m512 mv = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    for (uint32_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail_mask(n - i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv));
        _mm512_mask_storeu_ps(x + i, k, e);
        acc = _mm512_mask_add_ps(acc, k, acc, e);
    }
    /* lane[l] + lane[l + 8], then + 4, + 2, + 1 */
    const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(acc),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
    const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    return _mm_cvtss_f32(_mm_add_ss(a2, _mm_shuffle_ps(a2, a2, 1)));
}

TARGET static void softmax_exp_avx512(float* x, size_t stride, uint32_t rows, const uint32_t* lens, float* sums) {
    for (uint32_t r = 0; r < rows; r++) sums[r] = softmax_exp_row(x + (size_t)r * stride, lens[r]);
}

TARGET static void silu_mul_avx512(float* g, const float* u, uint32_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (uint32_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail_mask(n - i);
        const __m512 gv = _mm512_maskz_loadu_ps(k, g + i);
        const __m512 neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(gv), sign));
        const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp16(neg)));
        _mm512_mask_storeu_ps(g + i, k, _mm512_mul_ps(_mm512_mul_ps(gv, sig), _mm512_maskz_loadu_ps(k, u + i)));
    }
}

/* ====================================================================================
 * Attention (fp32): the scalar loops of kernels_scalar.c with 16 lanes, the same fused
 * multiply-adds in the same order per lane, several independent sums in flight to hide
 * the FMA latency.
 * ================================================================================== */

/* nq queries x nb key blocks of 16 positions. */
INLINE void scores_tile(float* s, uint32_t ss, const float* q, uint32_t qs, const float* kb, size_t bs, uint32_t hd,
                        __m512 scale, const int nq, const int nb) {
    __m512 acc[4][4];
    UNROLL for (int j = 0; j < nq; j++) {
        UNROLL for (int b = 0; b < nb; b++) acc[j][b] = _mm512_setzero_ps();
    }
    for (uint32_t i = 0; i < hd; i++) {
        __m512 k[4];
        UNROLL for (int b = 0; b < nb; b++) k[b] = _mm512_loadu_ps(kb + (size_t)b * bs + (size_t)i * 16);
        UNROLL for (int j = 0; j < nq; j++) {
            const __m512 qi = _mm512_set1_ps(q[(size_t)j * qs + i]);
            UNROLL for (int b = 0; b < nb; b++) acc[j][b] = _mm512_fmadd_ps(qi, k[b], acc[j][b]);
        }
    }
    UNROLL for (int j = 0; j < nq; j++) {
        UNROLL for (int b = 0; b < nb; b++) _mm512_storeu_ps(s + (size_t)j * ss + (size_t)b * 16, _mm512_mul_ps(acc[j][b], scale));
    }
}

#define SCORES_RUN(NQ, NB)                                                                                     \
    do {                                                                                                       \
        uint32_t b = 0;                                                                                        \
        for (; b + (NB) <= nblocks; b += (NB))                                                                 \
            scores_tile(scores + (size_t)j * s_stride + b * 16, s_stride, q + (size_t)j * q_stride, q_stride, \
                        keys + b * block_stride, block_stride, head_dim, sc, (NQ), (NB));                    \
        for (; b < nblocks; b++)                                                                               \
            scores_tile(scores + (size_t)j * s_stride + b * 16, s_stride, q + (size_t)j * q_stride, q_stride, \
                        keys + b * block_stride, block_stride, head_dim, sc, (NQ), 1);                       \
    } while (0)

TARGET static void attn_scores_avx512(float* scores, uint32_t s_stride, const float* q, uint32_t q_stride, uint32_t n_q,
                                      const float* keys, size_t block_stride, uint32_t n_pos, uint32_t head_dim,
                                      float scale) {
    const uint32_t nblocks = (n_pos + 15) / 16;
    const __m512 sc = _mm512_set1_ps(scale);
    uint32_t j = 0;
    for (; j + 4 <= n_q; j += 4) SCORES_RUN(4, 2);
    switch (n_q - j) {
    case 3: SCORES_RUN(3, 2); break;
    case 2: SCORES_RUN(2, 4); break;
    case 1: SCORES_RUN(1, 4); break;
    default: break;
    }
}

/* nq queries x nv vectors of 16 output dims (with `masked`, each vector c only the lanes
 * of m[c]: the last, partial dims). Query j stops at its own n_pos; n_pos is
 * non-decreasing, so the last query runs longest. */
INLINE void values_tile(float* o, uint32_t os, const float* a, uint32_t as, const uint32_t* np, const float* v,
                        uint32_t vs, const __mmask16* m, const int accum, const int pf, const int masked, const int nq,
                        const int nv) {
    __m512 acc[4][4];
    UNROLL for (int j = 0; j < nq; j++) {
        UNROLL for (int c = 0; c < nv; c++) {
            acc[j][c] = accum ? load_dims(o + (size_t)j * os + 16 * c, m[c], masked) : _mm512_setzero_ps();
        }
    }
    const uint32_t n_all = np[0], n_max = np[nq - 1];
    uint32_t p = 0;
    for (; p < n_all; p++) {
        __m512 vv[4];
        if (pf) {
            /* one token's values stream from memory: the rows 8 positions on */
            UNROLL for (int c = 0; c < nv; c++) _mm_prefetch((const char*)(v + (size_t)(p + 8) * vs + 16 * c), _MM_HINT_T0);
        }
        UNROLL for (int c = 0; c < nv; c++) vv[c] = load_dims(v + (size_t)p * vs + 16 * c, m[c], masked);
        UNROLL for (int j = 0; j < nq; j++) {
            const __m512 aj = _mm512_set1_ps(a[(size_t)j * as + p]);
            UNROLL for (int c = 0; c < nv; c++) acc[j][c] = _mm512_fmadd_ps(aj, vv[c], acc[j][c]);
        }
    }
    for (; p < n_max; p++) {
        __m512 vv[4];
        UNROLL for (int c = 0; c < nv; c++) vv[c] = load_dims(v + (size_t)p * vs + 16 * c, m[c], masked);
        UNROLL for (int j = 1; j < nq; j++) {
            if (p >= np[j]) continue;
            const __m512 aj = _mm512_set1_ps(a[(size_t)j * as + p]);
            UNROLL for (int c = 0; c < nv; c++) acc[j][c] = _mm512_fmadd_ps(aj, vv[c], acc[j][c]);
        }
    }
    UNROLL for (int j = 0; j < nq; j++) {
        UNROLL for (int c = 0; c < nv; c++) store_dims(o + (size_t)j * os + 16 * c, m[c], acc[j][c], masked);
    }
}

TARGET static void attn_values_avx512(float* out, uint32_t o_stride, const float* att, uint32_t a_stride,
                                      const uint32_t* n_pos, uint32_t n_q, const float* v, uint32_t v_stride,
                                      uint32_t head_dim, int accum) {
    /* A few queries (one token's query heads of a kv head) stream their values once, so
     * their tiles ask for the rows 8 positions ahead; many queries (a prefill tile) reuse
     * each chunk from cache, and theirs do not. Whole 64-dim pieces load and store plainly;
     * the last piece of a head_dim that 64 does not divide goes a query and 16 dims at a
     * time through the one masked copy of the tile. Every output is the same sum in the
     * same order whichever tile computes it. (One masked copy, not eight: with every tile
     * masked, ASan's lane-by-lane checks made this function 39 s of the 110 s clang 14
     * took to build the file for tools/sanitize.ts.) */
    for (uint32_t i0 = 0; i0 < head_dim; i0 += 64) {
        float* o = out + i0;
        const float* vi = v + i0;
        __mmask16 m[4];
        if (head_dim - i0 < 64) {
            for (uint32_t c = 0; c < 4; c++) {
                const uint32_t lo = i0 + 16 * c;
                m[c] = lo >= head_dim ? 0 : head_dim - lo >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (head_dim - lo)) - 1);
            }
            for (uint32_t j = 0; j < n_q; j++) {
                for (uint32_t c = 0; c < 4 && m[c]; c++) {
                    values_tile(o + (size_t)j * o_stride + 16 * c, o_stride, att + (size_t)j * a_stride, a_stride,
                                n_pos + j, vi + 16 * c, v_stride, m + c, accum, 0, 1, 1, 1);
                }
            }
            continue;
        }
        for (uint32_t c = 0; c < 4; c++) m[c] = (__mmask16)0xffff;
#define TILE(PF, NQ) values_tile(o + (size_t)j * o_stride, o_stride, att + (size_t)j * a_stride, a_stride, n_pos + j, \
                                 vi, v_stride, m, accum, (PF), 0, (NQ), 4)
        uint32_t j = 0;
        if (n_q <= 4) {
            switch (n_q) {
            case 4: TILE(1, 4); break;
            case 3: TILE(1, 3); break;
            case 2: TILE(1, 2); break;
            case 1: TILE(1, 1); break;
            default: break;
            }
            continue;
        }
        for (; j + 4 <= n_q; j += 4) TILE(0, 4);
        switch (n_q - j) {
        case 3: TILE(0, 3); break;
        case 2: TILE(0, 2); break;
        case 1: TILE(0, 1); break;
        default: break;
        }
#undef TILE
    }
}

const Qwen3KernelTable qwen3_kernels_avx512vnni = {
    .name = "avx512vnni",
    .matvec_q8 = matvec_q8_avx512vnni,
    .matmul_q8 = matmul_q8_avx512vnni,
    .matmul_blocks = qwen3_matmul_blocks_avx512vnni, /* K-quants: kernels_blocks_avx2.c */
    .quantize_row = quantize_row_avx512,
    .attn_scores = attn_scores_avx512,
    .attn_values = attn_values_avx512,
    .softmax_exp = softmax_exp_avx512,
    .silu_mul = silu_mul_avx512,
    .sampler_softmax = qwen3_sampler_softmax_avx512,
};
