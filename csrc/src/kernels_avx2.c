/* kernels_avx2.c - two 256-bit tiers of the int8 matrix-vector product:
 *   "avx2"    AVX2: vpmaddubsw + vpmaddwd (Haswell .. and every AVX2 AMD core)
 *   "avxvnni" AVX2 + AVX-VNNI: vpdpbusd on 256-bit registers (Alder Lake, Zen 5, ...)
 *
 * Both take 8 rows at a time: each row gets one int32 accumulator per group, the 8
 * accumulators are transposed and reduced into one vector whose lane i is row i's exact
 * int32 group sum, and the float part (cvt, * w_scale, * x_scale, +) runs with rows in
 * lanes, in the scalar reference's order and roundings: bit-identical (kernels.h).
 *
 * Signed x signed with instructions that want an unsigned operand:
 *   avx2:    vpmaddubsw(|w|, x * sign(w)). |w| fits an unsigned byte even for w = -128,
 *            and x * sign(w) is exact for x in [-127, 127] (a vector holding -128, which
 *            the quantiser makes only by wrapping, takes the scalar path). A pair sum is at
 *            most 2 * 128 * 127 = 32512, under the int16 saturation point, so no product
 *            is clipped; vpmaddwd with ones then widens.
 *   avxvnni: vpdpbusd(w ^ 0x80, x) = sum (w + 128) * x, exact for any int8, minus
 *            128 * sum(x), which is the same for every row and so computed once per group
 *            and used, negated, as each accumulator's start value.
 * Group sizes that are not a multiple of 32 take the scalar reference (same numerics).
 */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "kernels.h"
/* the attention loops run in TARGET_AVX2 functions, which have the FMA instruction */
#define QWEN3_FMAF(a, b, c) __builtin_fmaf((a), (b), (c))
#include "kernels_attention_loops.h"
#include "kernels_exp_loops.h"

#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_VNNI __attribute__((target("avx2,fma,avxvnni")))

#define ROWS 8 /* rows per block: one per float lane of a 256-bit register */

/* Row loops fully unrolled so the 8 accumulators stay in registers. */
#define UNROLL QWEN3_UNROLL_FULL(ROWS)

/* The next block (8 rows on), prefetched in address order as kernels_avx512.c explains:
 * a 32-byte step over 8 rows consumes 256 bytes, so each step prefetches the next
 * block's 4 lines at (col / 32) * 256. Into L2 (T1), as there: with T0, the avxvnni
 * tier read 1024x3072 and 2048x1024 from DRAM ~5% slower (bench-matvec --tier avxvnni,
 * 1 thread, cold: 14.1-14.4 vs 15.1-15.3 GB/s and 13.1-14.8 vs 14.0-15.5 GB/s). */
#define PREFETCH_STEP(next, col, i)                                                               \
    do {                                                                                          \
        if ((i) < 4) _mm_prefetch((const char*)((next) + ((col) / 32) * 256 + (size_t)(i) * 64), _MM_HINT_T1); \
    } while (0)

/* The next block's scales, 8 rows x ng floats (ng / 2 lines), which the gather of its first
 * group would otherwise wait for: half a line per group, as kernels_avx512.c's
 * PREFETCH_SCALES explains. tg64 of the 0.6B shape on the Xeon, 1 thread, builds
 * alternating, medians of 5: avx2 16.81 -> 17.50 tok/s, avxvnni 18.64 -> 18.77. */
#define PREFETCH_SCALES(snext, g) _mm_prefetch((snext) + (size_t)(g) * 32, _MM_HINT_T1)

/* Lane i = the total of accumulator i (8 accumulators of 8 int32). Written as a macro
 * body shared by both targets: a helper function would need one copy per target. */
#define REDUCE8(a, out)                                                                           \
    do {                                                                                          \
        __m256i t_[4], u_[2];                                                                     \
        UNROLL for (int j_ = 0; j_ < 4; j_++)                                                     \
            t_[j_] = _mm256_add_epi32(_mm256_unpacklo_epi32(a[2 * j_], a[2 * j_ + 1]),            \
                                      _mm256_unpackhi_epi32(a[2 * j_], a[2 * j_ + 1]));           \
        UNROLL for (int j_ = 0; j_ < 2; j_++)                                                     \
            u_[j_] = _mm256_add_epi32(_mm256_unpacklo_epi64(t_[2 * j_], t_[2 * j_ + 1]),          \
                                      _mm256_unpackhi_epi64(t_[2 * j_], t_[2 * j_ + 1]));         \
        /* u_[0] = rows 0-3 per 128-bit half, u_[1] = rows 4-7: add the halves. */              \
        out = _mm256_add_epi32(_mm256_permute2x128_si256(u_[0], u_[1], 0x20),                     \
                               _mm256_permute2x128_si256(u_[0], u_[1], 0x31));                    \
    } while (0)

/* acc = acc + ((float)isum * w_scale) * x_scale with rows in lanes. */
#define ACCUMULATE(acc, isum, scale_idx, ws_g, xs)                                                \
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum),                \
                                                         _mm256_i32gather_ps(ws_g, scale_idx, 4)), \
                                           _mm256_set1_ps(xs)))

/* Block set-up shared by both tiers: rows past nrows repeat the last row (in bounds,
 * results dropped), so one code path serves full and tail blocks. */
#define BLOCK_SETUP                                                                               \
    const size_t n = w->cols;                                                                     \
    const uint32_t gs = w->group_size;                                                            \
    const uint32_t ng = (uint32_t)(n / gs);                                                       \
    const int8_t* base = w->q + (size_t)r0 * n;                                                   \
    const float* sbase = w->s + (size_t)r0 * ng;                                                  \
    size_t off[ROWS];                                                                             \
    int idx[ROWS];                                                                                \
    UNROLL for (uint32_t i = 0; i < ROWS; i++) {                                                  \
        const uint32_t row = i < nrows ? i : nrows - 1;                                           \
        off[i] = (size_t)row * n;                                                                 \
        idx[i] = (int)(row * ng);                                                                 \
    }                                                                                             \
    const char* snext = (const char*)(sbase + (size_t)ROWS * ng);                                \
    const int8_t* next = base + (size_t)ROWS * n

#define BLOCK_STORE                                                                               \
    if (nrows == ROWS) {                                                                          \
        _mm256_storeu_ps(out, acc);                                                               \
    } else {                                                                                      \
        float tmp_[ROWS];                                                                         \
        _mm256_storeu_ps(tmp_, acc);                                                              \
        for (uint32_t i = 0; i < nrows; i++) out[i] = tmp_[i];                                    \
    }

/* ------------------------------------------------------------------------------------
 * Batched product (prefill), both tiers: a GEMM micro-kernel in the shape of the AVX-512
 * one (kernels_avx512.c). Weights are repacked once per call, 16 rows by MM2_CHUNK
 * columns at a time, so that one 32-byte vector holds 4 bytes of each of 8 rows; each
 * token's 4 activation bytes are broadcast, so the int32 sums of 8 rows build up in
 * lanes with no horizontal reduction. After every group the float part runs per token
 * with rows in lanes in the scalar order (bit-identical, kernels.h); with only 16
 * registers the float accumulators live in a small L1 tile.
 *   avxvnni: packed bytes are w ^ 0x80 and vpdpbusd adds 4 products per lane; the
 *            128 * sum(x) that the flip adds is the batch's group sum, the start value.
 *   avx2:    vpmaddubsw(|w|, sign(x, w)) then vpmaddwd with ones, as in its matvec (exact
 *            for activations in [-127, 127]; a batch holding -128 takes the matvec path).
 * ---------------------------------------------------------------------------------- */

#define MM2_ROWS 16
#define MM2_CHUNK 1024
#define MM2_TOK 6 /* most tokens per tile (avxvnni; avx2 takes 4) */

/* 8 x 8 transpose of int32: r[i] holds row i's 8 dwords; afterwards r[k] holds dword k
 * of rows 0..7. */
#define TRANSPOSE8(r)                                                                             \
    do {                                                                                          \
        __m256i t_[8], u_[8];                                                                     \
        UNROLL for (int i_ = 0; i_ < 4; i_++) {                                                   \
            t_[2 * i_] = _mm256_unpacklo_epi32(r[2 * i_], r[2 * i_ + 1]);                         \
            t_[2 * i_ + 1] = _mm256_unpackhi_epi32(r[2 * i_], r[2 * i_ + 1]);                     \
        }                                                                                         \
        /* u_[4h + m], 128-bit lane L: dword 4L + m of rows 4h .. 4h+3 */                         \
        UNROLL for (int h_ = 0; h_ < 2; h_++) {                                                   \
            u_[4 * h_ + 0] = _mm256_unpacklo_epi64(t_[4 * h_], t_[4 * h_ + 2]);                   \
            u_[4 * h_ + 1] = _mm256_unpackhi_epi64(t_[4 * h_], t_[4 * h_ + 2]);                   \
            u_[4 * h_ + 2] = _mm256_unpacklo_epi64(t_[4 * h_ + 1], t_[4 * h_ + 3]);               \
            u_[4 * h_ + 3] = _mm256_unpackhi_epi64(t_[4 * h_ + 1], t_[4 * h_ + 3]);               \
        }                                                                                         \
        UNROLL for (int m_ = 0; m_ < 4; m_++) {                                                   \
            r[m_] = _mm256_permute2x128_si256(u_[m_], u_[4 + m_], 0x20);                          \
            r[4 + m_] = _mm256_permute2x128_si256(u_[m_], u_[4 + m_], 0x31);                      \
        }                                                                                         \
    } while (0)

/* Packs rows r0 .. r0+15 (rows past nrows repeat the last one) and columns [c0, c0 + nc)
 * into pk: the vector of 4-column step j, half h (rows 8h .. 8h+7) at pk + (2j + h) * 32,
 * each byte xor `flip`; scales of group gl of the chunk at ps + gl * 16. */
#define MM2_PACK_BODY(flip)                                                                       \
    const size_t n = w->cols;                                                                     \
    const uint32_t gs = w->group_size, ng = (uint32_t)(n / gs);                                   \
    const __m256i fl = _mm256_set1_epi8((char)(flip));                                            \
    for (uint32_t h = 0; h < 2; h++) {                                                            \
        const int8_t* rows[8];                                                                    \
        for (uint32_t i = 0; i < 8; i++) {                                                        \
            const uint32_t row = 8 * h + i < nrows ? 8 * h + i : nrows - 1;                       \
            rows[i] = w->q + (size_t)(r0 + row) * n + c0;                                         \
        }                                                                                         \
        for (uint32_t c = 0; c < nc; c += 32) {                                                   \
            __m256i r[8];                                                                         \
            if (nc - c >= 32) {                                                                   \
                UNROLL for (int i = 0; i < 8; i++)                                                \
                    r[i] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(rows[i] + c)), fl); \
            } else {                                                                              \
                /* whole dwords (nc is a multiple of 4), none past the row */                    \
                const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                   \
                const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)((nc - c) / 4)), lane); \
                UNROLL for (int i = 0; i < 8; i++)                                                \
                    r[i] = _mm256_xor_si256(_mm256_maskload_epi32((const int*)(rows[i] + c), m), fl); \
            }                                                                                     \
            TRANSPOSE8(r);                                                                        \
            uint8_t* dst = pk + ((size_t)(c / 4) * 2 + h) * 32;                                   \
            const uint32_t steps = nc - c >= 32 ? 8 : (nc - c) / 4;                               \
            for (uint32_t j = 0; j < steps; j++) _mm256_store_si256((__m256i*)(dst + (size_t)j * 64), r[j]); \
        }                                                                                         \
    }                                                                                             \
    const uint32_t g0 = c0 / gs, ngc = nc / gs;                                                   \
    for (uint32_t i = 0; i < MM2_ROWS; i++) {                                                     \
        const uint32_t row = i < nrows ? i : nrows - 1;                                           \
        const float* src = w->s + (size_t)(r0 + row) * ng + g0;                                   \
        for (uint32_t gl = 0; gl < ngc; gl++) ps[gl * MM2_ROWS + i] = src[gl];                    \
    }

TARGET_AVX2 static void mm2_pack_avx2(uint8_t* pk, float* ps, const Qwen3Q8Matrix* w, uint32_t r0, uint32_t nrows,
                                      uint32_t c0, uint32_t nc) {
    MM2_PACK_BODY(0)
}

TARGET_VNNI static void mm2_pack_vnni(uint8_t* pk, float* ps, const Qwen3Q8Matrix* w, uint32_t r0, uint32_t nrows,
                                      uint32_t c0, uint32_t nc) {
    MM2_PACK_BODY(0x80)
}

/* The weight lines of the chunk packed next, fetched into L2 a few per group while the
 * current chunk is computed (see kernels_avx512.c). Line i is line i % lines of row
 * i / lines. */
typedef struct {
    const int8_t* base;
    size_t stride;
    uint32_t lines, next, end, per_group;
} Mm2Prefetch;

static inline __attribute__((always_inline)) void mm2_prefetch(Mm2Prefetch* pf) {
    for (uint32_t i = 0; i < pf->per_group && pf->next < pf->end; i++, pf->next++) {
        const uint32_t row = pf->next / pf->lines, line = pf->next % pf->lines;
        _mm_prefetch((const char*)(pf->base + (size_t)row * pf->stride + (size_t)line * 64), _MM_HINT_T1);
    }
}

/* Float accumulators of a tile: loaded from out (0 for the first chunk), updated after
 * each group with acc + ((float)isum * w_scale) * x_scale, stored back at the end. */
#define MM2_TILE_BEGIN                                                                            \
    const uint32_t gs = x->group_size, ng = x->n / gs, steps = gs / 4;                            \
    _Alignas(32) float facc[MM2_TOK][MM2_ROWS];                                                   \
    UNROLL for (int t = 0; t < nt; t++) {                                                         \
        for (uint32_t i = 0; i < MM2_ROWS; i++) facc[t][i] = 0.0f;                                \
        if (!first) {                                                                             \
            for (uint32_t i = 0; i < nrows; i++) facc[t][i] = out[(size_t)(t0 + t) * ld + i];     \
        }                                                                                         \
    }                                                                                             \
    const int8_t* xq[MM2_TOK];                                                                    \
    UNROLL for (int t = 0; t < nt; t++) xq[t] = x->q + (size_t)(t0 + t) * x->n + (size_t)g0 * gs;

#define MM2_FLOAT_UPDATE                                                                          \
    {                                                                                             \
        const __m256 ws0 = _mm256_load_ps(ps + (size_t)gl * MM2_ROWS);                            \
        const __m256 ws1 = _mm256_load_ps(ps + (size_t)gl * MM2_ROWS + 8);                        \
        UNROLL for (int t = 0; t < nt; t++) {                                                     \
            const __m256 xs = _mm256_set1_ps(x->s[(size_t)(t0 + t) * ng + g0 + gl]);              \
            const __m256 f0 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a[t][0]), ws0), xs); \
            const __m256 f1 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a[t][1]), ws1), xs); \
            _mm256_store_ps(facc[t], _mm256_add_ps(_mm256_load_ps(facc[t]), f0));                 \
            _mm256_store_ps(facc[t] + 8, _mm256_add_ps(_mm256_load_ps(facc[t] + 8), f1));         \
        }                                                                                         \
    }

#define MM2_TILE_END                                                                              \
    UNROLL for (int t = 0; t < nt; t++) {                                                         \
        for (uint32_t i = 0; i < nrows; i++) out[(size_t)(t0 + t) * ld + i] = facc[t][i];         \
    }

TARGET_VNNI static inline __attribute__((always_inline)) void mm2_tile_vnni(
    float* out, size_t ld, const uint8_t* pk, const float* ps, const Qwen3Q8Batch* x, uint32_t t0, const int nt,
    uint32_t g0, uint32_t ngc, int first, uint32_t nrows, Mm2Prefetch* pf) {
    MM2_TILE_BEGIN
    for (uint32_t gl = 0; gl < ngc; gl++) {
        __m256i a[MM2_TOK][2];
        UNROLL for (int t = 0; t < nt; t++) {
            const __m256i corr = _mm256_set1_epi32(-128 * x->sums[(size_t)(t0 + t) * ng + g0 + gl]);
            a[t][0] = corr;
            a[t][1] = corr;
        }
        const uint8_t* pg = pk + (size_t)gl * steps * 64;
        mm2_prefetch(pf);
        for (uint32_t j = 0; j < steps; j++) {
            const __m256i w0 = _mm256_load_si256((const __m256i*)(pg + (size_t)j * 64));
            const __m256i w1 = _mm256_load_si256((const __m256i*)(pg + (size_t)j * 64 + 32));
            UNROLL for (int t = 0; t < nt; t++) {
                int32_t xv;
                memcpy(&xv, xq[t] + (size_t)gl * gs + 4 * j, 4);
                const __m256i b = _mm256_set1_epi32(xv);
                a[t][0] = _mm256_dpbusd_avx_epi32(a[t][0], w0, b);
                a[t][1] = _mm256_dpbusd_avx_epi32(a[t][1], w1, b);
            }
        }
        MM2_FLOAT_UPDATE
    }
    MM2_TILE_END
}

TARGET_AVX2 static inline __attribute__((always_inline)) void mm2_tile_avx2(
    float* out, size_t ld, const uint8_t* pk, const float* ps, const Qwen3Q8Batch* x, uint32_t t0, const int nt,
    uint32_t g0, uint32_t ngc, int first, uint32_t nrows, Mm2Prefetch* pf) {
    MM2_TILE_BEGIN
    const __m256i ones = _mm256_set1_epi16(1);
    for (uint32_t gl = 0; gl < ngc; gl++) {
        __m256i a[MM2_TOK][2];
        UNROLL for (int t = 0; t < nt; t++) a[t][0] = a[t][1] = _mm256_setzero_si256();
        const uint8_t* pg = pk + (size_t)gl * steps * 64;
        mm2_prefetch(pf);
        for (uint32_t j = 0; j < steps; j++) {
            const __m256i w0 = _mm256_load_si256((const __m256i*)(pg + (size_t)j * 64));
            const __m256i w1 = _mm256_load_si256((const __m256i*)(pg + (size_t)j * 64 + 32));
            const __m256i aw0 = _mm256_abs_epi8(w0), aw1 = _mm256_abs_epi8(w1);
            UNROLL for (int t = 0; t < nt; t++) {
                int32_t xv;
                memcpy(&xv, xq[t] + (size_t)gl * gs + 4 * j, 4);
                const __m256i b = _mm256_set1_epi32(xv);
                a[t][0] = _mm256_add_epi32(a[t][0], _mm256_madd_epi16(_mm256_maddubs_epi16(aw0, _mm256_sign_epi8(b, w0)), ones));
                a[t][1] = _mm256_add_epi32(a[t][1], _mm256_madd_epi16(_mm256_maddubs_epi16(aw1, _mm256_sign_epi8(b, w1)), ones));
            }
        }
        MM2_FLOAT_UPDATE
    }
    MM2_TILE_END
}

/* Row blocks of 16, column chunks of MM2_CHUNK, token tiles of NT (tails by switch). */
#define MM2_DRIVER(pack, tile, NT)                                                                \
    _Alignas(32) uint8_t pk[MM2_ROWS * MM2_CHUNK];                                                \
    _Alignas(32) float ps[MM2_ROWS * (MM2_CHUNK / 4)];                                            \
    const uint32_t cols = w->cols, gs = w->group_size;                                            \
    const uint32_t chunk = (MM2_CHUNK / gs) * gs;                                                 \
    const uint32_t ntok = x->n_tokens;                                                            \
    for (uint32_t r0 = row_begin; r0 < row_end; r0 += MM2_ROWS) {                                 \
        const uint32_t nrows = row_end - r0 < MM2_ROWS ? row_end - r0 : MM2_ROWS;                 \
        float* o = out + (r0 - row_begin);                                                        \
        for (uint32_t c0 = 0; c0 < cols; c0 += chunk) {                                           \
            const uint32_t nc = cols - c0 < chunk ? cols - c0 : chunk;                            \
            pack(pk, ps, w, r0, nrows, c0, nc);                                                   \
            const uint32_t g0 = c0 / gs, ngc = nc / gs;                                           \
            const int first = c0 == 0;                                                            \
            Mm2Prefetch pf = {0};                                                                 \
            uint32_t pf_rows = 0, pf_cols = 0;                                                    \
            if (c0 + nc < cols) {                                                                 \
                pf.base = w->q + (size_t)r0 * cols + c0 + nc;                                     \
                pf_rows = nrows;                                                                  \
                pf_cols = cols - (c0 + nc) < chunk ? cols - (c0 + nc) : chunk;                    \
            } else if (r0 + MM2_ROWS < row_end) {                                                 \
                pf.base = w->q + (size_t)(r0 + MM2_ROWS) * cols;                                  \
                pf_rows = row_end - (r0 + MM2_ROWS) < MM2_ROWS ? row_end - (r0 + MM2_ROWS) : MM2_ROWS; \
                pf_cols = cols < chunk ? cols : chunk;                                            \
            }                                                                                     \
            pf.stride = cols;                                                                     \
            pf.lines = (pf_cols + 63) / 64;                                                       \
            pf.end = pf_rows * pf.lines;                                                          \
            const uint32_t visits = ((ntok + (NT) - 1) / (NT)) * ngc;                             \
            pf.per_group = (pf.end + visits - 1) / visits;                                        \
            uint32_t t0 = 0;                                                                      \
            for (; t0 + (NT) <= ntok; t0 += (NT)) tile(o, ld, pk, ps, x, t0, (NT), g0, ngc, first, nrows, &pf); \
            switch (ntok - t0) {                                                                  \
            case 5: tile(o, ld, pk, ps, x, t0, 5, g0, ngc, first, nrows, &pf); break;             \
            case 4: tile(o, ld, pk, ps, x, t0, 4, g0, ngc, first, nrows, &pf); break;             \
            case 3: tile(o, ld, pk, ps, x, t0, 3, g0, ngc, first, nrows, &pf); break;             \
            case 2: tile(o, ld, pk, ps, x, t0, 2, g0, ngc, first, nrows, &pf); break;             \
            case 1: tile(o, ld, pk, ps, x, t0, 1, g0, ngc, first, nrows, &pf); break;             \
            default: break;                                                                       \
            }                                                                                     \
        }                                                                                         \
    }

/* Attention: the scalar reference's loops (kernels_attention_loops.h) compiled for
 * 256-bit registers, the same operations per lane, so the same bits. */
TARGET_AVX2 static void attn_scores_avx2(float* scores, uint32_t s_stride, const float* q, uint32_t q_stride,
                                         uint32_t n_q, const float* keys, size_t block_stride, uint32_t n_pos,
                                         uint32_t head_dim, float scale) {
    qwen3_attn_scores_loops(scores, s_stride, q, q_stride, n_q, keys, block_stride, n_pos, head_dim, scale);
}

TARGET_AVX2 static void attn_values_avx2(float* out, uint32_t o_stride, const float* att, uint32_t a_stride,
                                         const uint32_t* n_pos, uint32_t n_q, const float* v, uint32_t v_stride,
                                         uint32_t head_dim, int accumulate) {
    qwen3_attn_values_loops(out, o_stride, att, a_stride, n_pos, n_q, v, v_stride, head_dim, accumulate);
}

/* Softmax and SiLU: the scalar reference's loops (kernels_exp_loops.h) compiled for
 * 256-bit registers, the same operations per lane, so the same bits. */
TARGET_AVX2 static void softmax_exp_avx2(float* x, size_t stride, uint32_t rows, const uint32_t* lens, float* sums) {
    for (uint32_t r = 0; r < rows; r++) sums[r] = qwen3_softmax_exp_loops(x + (size_t)r * stride, lens[r]);
}

TARGET_AVX2 static void silu_mul_avx2(float* g, const float* u, uint32_t n) { qwen3_silu_mul_loops(g, u, n); }

/* ------------------------------------------------------------------------------------
 * avx2
 * ---------------------------------------------------------------------------------- */

TARGET_AVX2 static inline __attribute__((always_inline)) void block8_avx2(float* out, const Qwen3Q8Matrix* w,
                                                                          const Qwen3Q8Vector* x, uint32_t r0,
                                                                          uint32_t nrows, const int prefetch) {
    BLOCK_SETUP;
    const __m256i scale_idx = _mm256_loadu_si256((const __m256i*)idx);
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    __m256i a[ROWS];
    for (uint32_t g = 0; g < ng; g++) {
        const size_t col = (size_t)g * gs;
        if (prefetch) PREFETCH_SCALES(snext, g);
        UNROLL for (int i = 0; i < ROWS; i++) a[i] = _mm256_setzero_si256();
        for (uint32_t k = 0; k < gs; k += 32) {
            const __m256i xv = _mm256_loadu_si256((const __m256i*)(x->q + col + k));
            UNROLL for (int i = 0; i < ROWS; i++) {
                const int8_t* p = base + off[i] + col + k;
                if (prefetch) PREFETCH_STEP(next, col + k, i);
                const __m256i wv = _mm256_loadu_si256((const __m256i*)p);
                const __m256i prod = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
                a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(prod, ones16));
            }
        }
        __m256i isum;
        REDUCE8(a, isum);
        ACCUMULATE(acc, isum, scale_idx, sbase + g, x->s[g]);
    }
    BLOCK_STORE
}

/* 1 when some activation is -128: x * sign(w) would overflow int8 there. The quantiser
 * only makes -128 by wrapping (activations so small that their scale is subnormal,
 * quant.c), so such vectors are rare and go to the scalar reference. */
TARGET_AVX2 static int has_int8_min(const int8_t* q, uint32_t n) {
    const __m256i min = _mm256_set1_epi8(-128);
    __m256i any = _mm256_setzero_si256();
    uint32_t i = 0;
    for (; i + 32 <= n; i += 32) any = _mm256_or_si256(any, _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i*)(q + i)), min));
    int found = !_mm256_testz_si256(any, any);
    for (; i < n; i++) found |= q[i] == -128;
    return found;
}

TARGET_AVX2 static void matvec_q8_avx2(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                                       uint32_t row_begin, uint32_t row_end) {
    if (w->group_size % 32 != 0 || has_int8_min(x->q, x->n)) {
        qwen3_kernels_scalar.matvec_q8(out, w, x, row_begin, row_end);
        return;
    }
    uint32_t r = row_begin;
    /* Prefetch only rows this call reads (the next ones belong to another thread). */
    if (row_end - r >= ROWS) qwen3_prefetch_q8_rows(w, r, ROWS);
    for (; row_end - r >= 2 * ROWS; r += ROWS) block8_avx2(out + (r - row_begin), w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) block8_avx2(out + (r - row_begin), w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
}

#define SM2_TOK 16 /* most tokens on the small-batch path (both tiers) */

/* Batched product for a few tokens, avx2: the avxvnni kernel below (sm_block8_vnni) with
 * its vpdpbusd replaced by matvec's exact vpmaddubsw(|w|, sign(x, w)) + vpmaddwd on the
 * transposed weights (4 bytes of each row per lane, so the pair sums stay within a row).
 * |w| is taken once per step for all tokens; batches holding -128 do not come here. */
TARGET_AVX2 static inline __attribute__((always_inline)) void sm_block8_avx2(float* out, size_t ld,
                                                                             const Qwen3Q8Matrix* w,
                                                                             const Qwen3Q8Batch* x, uint32_t r0,
                                                                             uint32_t nrows, const int prefetch) {
    BLOCK_SETUP;
    const uint32_t nt = x->n_tokens;
    const __m256i scale_idx = _mm256_loadu_si256((const __m256i*)idx);
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256 accs[SM2_TOK];
    __m256i isum[SM2_TOK];
    for (uint32_t t = 0; t < nt; t++) accs[t] = _mm256_setzero_ps();
    for (size_t k = 0; k < n; k += 32) {
        const uint32_t g = (uint32_t)(k / gs);
        if (prefetch && k % gs == 0) PREFETCH_SCALES(snext, g);
        __m256i r[ROWS];
        UNROLL for (int i = 0; i < ROWS; i++) {
            if (prefetch) PREFETCH_STEP(next, k, i);
            r[i] = _mm256_loadu_si256((const __m256i*)(base + off[i] + k));
        }
        TRANSPOSE8(r);
        const int starts = k % gs == 0;
        for (uint32_t t = 0; t < nt; t++) {
            const int8_t* xq = x->q + (size_t)t * n + k;
            __m256i s0 = starts ? _mm256_setzero_si256() : isum[t];
            __m256i s1 = _mm256_setzero_si256();
            UNROLL for (int j = 0; j < ROWS; j += 2) {
                int32_t x0, x1;
                memcpy(&x0, xq + 4 * j, 4);
                memcpy(&x1, xq + 4 * j + 4, 4);
                const __m256i p0 = _mm256_maddubs_epi16(_mm256_abs_epi8(r[j]),
                                                        _mm256_sign_epi8(_mm256_set1_epi32(x0), r[j]));
                const __m256i p1 = _mm256_maddubs_epi16(_mm256_abs_epi8(r[j + 1]),
                                                        _mm256_sign_epi8(_mm256_set1_epi32(x1), r[j + 1]));
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones16));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, ones16));
            }
            isum[t] = _mm256_add_epi32(s0, s1);
        }
        if ((k + 32) % gs == 0) {
            const __m256 ws = _mm256_i32gather_ps(sbase + g, scale_idx, 4);
            for (uint32_t t = 0; t < nt; t++) {
                const __m256 f = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[t]), ws),
                                               _mm256_set1_ps(x->s[(size_t)t * ng + g]));
                accs[t] = _mm256_add_ps(accs[t], f);
            }
        }
    }
    for (uint32_t t = 0; t < nt; t++) {
        float* o = out + (size_t)t * ld;
        if (nrows == ROWS) {
            _mm256_storeu_ps(o, accs[t]);
        } else {
            float tmp[ROWS];
            _mm256_storeu_ps(tmp, accs[t]);
            for (uint32_t i = 0; i < nrows; i++) o[i] = tmp[i];
        }
    }
}

TARGET_AVX2 static void matmul_q8_avx2(float* out, size_t ld, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                                       uint32_t row_begin, uint32_t row_end) {
    /* One token gains nothing from repacking; other group sizes do not split into the
     * kernel's steps; -128 breaks the sign trick. All take the matvec path (same bits). */
    if (x->n_tokens < 2 || w->group_size % 4 != 0 || w->group_size > MM2_CHUNK ||
        has_int8_min(x->q, x->n * x->n_tokens)) {
        qwen3_matmul_q8_by_matvec(matvec_q8_avx2, out, ld, w, x, row_begin, row_end);
        return;
    }
    if (x->n_tokens <= SM2_TOK && w->group_size % 32 == 0) {
        uint32_t r = row_begin;
        if (row_end - r >= ROWS) qwen3_prefetch_q8_rows(w, r, ROWS);
        for (; row_end - r >= 2 * ROWS; r += ROWS) sm_block8_avx2(out + (r - row_begin), ld, w, x, r, ROWS, 1);
        for (; r < row_end; r += ROWS) {
            sm_block8_avx2(out + (r - row_begin), ld, w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
        }
        return;
    }
    MM2_DRIVER(mm2_pack_avx2, mm2_tile_avx2, 4)
}

const Qwen3KernelTable qwen3_kernels_avx2 = {
    .name = "avx2",
    .matvec_q8 = matvec_q8_avx2,
    .matmul_q8 = matmul_q8_avx2,
    .matmul_blocks = qwen3_matmul_blocks_avx2, /* K-quants: kernels_blocks_avx2.c */
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = attn_scores_avx2,
    .attn_values = attn_values_avx2,
    .softmax_exp = softmax_exp_avx2,
    .silu_mul = silu_mul_avx2,
    .sampler_softmax = qwen3_sampler_softmax_avx2,
};

/* ------------------------------------------------------------------------------------
 * avxvnni
 * ---------------------------------------------------------------------------------- */

TARGET_VNNI static inline __attribute__((always_inline)) void block8_vnni(float* out, const Qwen3Q8Matrix* w,
                                                                          const Qwen3Q8Vector* x, uint32_t r0,
                                                                          uint32_t nrows, const int prefetch) {
    BLOCK_SETUP;
    const __m256i scale_idx = _mm256_loadu_si256((const __m256i*)idx);
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    __m256 acc = _mm256_setzero_ps();
    __m256i a[ROWS];
    for (uint32_t g = 0; g < ng; g++) {
        const size_t col = (size_t)g * gs;
        if (prefetch) PREFETCH_SCALES(snext, g);
        __m256i corr = _mm256_setzero_si256();
        for (uint32_t k = 0; k < gs; k += 32)
            corr = _mm256_dpbusd_avx_epi32(corr, bias, _mm256_loadu_si256((const __m256i*)(x->q + col + k)));
        corr = _mm256_sub_epi32(_mm256_setzero_si256(), corr);
        UNROLL for (int i = 0; i < ROWS; i++) a[i] = corr;
        for (uint32_t k = 0; k < gs; k += 32) {
            const __m256i xv = _mm256_loadu_si256((const __m256i*)(x->q + col + k));
            UNROLL for (int i = 0; i < ROWS; i++) {
                const int8_t* p = base + off[i] + col + k;
                if (prefetch) PREFETCH_STEP(next, col + k, i);
                const __m256i wv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)p), bias);
                a[i] = _mm256_dpbusd_avx_epi32(a[i], wv, xv);
            }
        }
        __m256i isum;
        REDUCE8(a, isum);
        ACCUMULATE(acc, isum, scale_idx, sbase + g, x->s[g]);
    }
    BLOCK_STORE
}

TARGET_VNNI static void matvec_q8_avxvnni(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                                          uint32_t row_begin, uint32_t row_end) {
    if (w->group_size % 32 != 0) {
        qwen3_kernels_scalar.matvec_q8(out, w, x, row_begin, row_end);
        return;
    }
    uint32_t r = row_begin;
    /* Prefetch only rows this call reads (the next ones belong to another thread). */
    if (row_end - r >= ROWS) qwen3_prefetch_q8_rows(w, r, ROWS);
    for (; row_end - r >= 2 * ROWS; r += ROWS) block8_vnni(out + (r - row_begin), w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) block8_vnni(out + (r - row_begin), w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
}

/* Batched product for a few tokens (batched decode), avxvnni: kernels_avx512.c's
 * matmul_q8_small at 8 rows and 32 bytes a step. The weights stream as in matvec (same
 * prefetch), each 32-byte step of the 8 rows is transposed in registers (TRANSPOSE8:
 * vector j = columns 4j .. 4j+3 of each row, rows in lanes) and every token adds 8
 * vpdpbusd with its 4 activation bytes broadcast: no repack, no per-token horizontal sum.
 * Integer group sums start at -128 * sum(x) (the batch's sums) and are exact; the float
 * part is matvec's per token, rows in lanes, in the scalar order (bit-identical). Group
 * sizes that are multiples of 32. */

TARGET_VNNI static inline __attribute__((always_inline)) void sm_block8_vnni(float* out, size_t ld,
                                                                             const Qwen3Q8Matrix* w,
                                                                             const Qwen3Q8Batch* x, uint32_t r0,
                                                                             uint32_t nrows, const int prefetch) {
    BLOCK_SETUP;
    const uint32_t nt = x->n_tokens;
    const __m256i scale_idx = _mm256_loadu_si256((const __m256i*)idx);
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    __m256 accs[SM2_TOK];
    __m256i isum[SM2_TOK];
    for (uint32_t t = 0; t < nt; t++) accs[t] = _mm256_setzero_ps();
    for (size_t k = 0; k < n; k += 32) {
        const uint32_t g = (uint32_t)(k / gs);
        if (prefetch && k % gs == 0) PREFETCH_SCALES(snext, g);
        __m256i r[ROWS];
        UNROLL for (int i = 0; i < ROWS; i++) {
            if (prefetch) PREFETCH_STEP(next, k, i);
            r[i] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(base + off[i] + k)), bias);
        }
        TRANSPOSE8(r);
        const int starts = k % gs == 0;
        for (uint32_t t = 0; t < nt; t++) {
            const int8_t* xq = x->q + (size_t)t * n + k;
            __m256i s0 = starts ? _mm256_set1_epi32(-128 * x->sums[(size_t)t * ng + g]) : isum[t];
            __m256i s1 = _mm256_setzero_si256();
            UNROLL for (int j = 0; j < ROWS; j += 2) {
                int32_t x0, x1;
                memcpy(&x0, xq + 4 * j, 4);
                memcpy(&x1, xq + 4 * j + 4, 4);
                s0 = _mm256_dpbusd_avx_epi32(s0, r[j], _mm256_set1_epi32(x0));
                s1 = _mm256_dpbusd_avx_epi32(s1, r[j + 1], _mm256_set1_epi32(x1));
            }
            isum[t] = _mm256_add_epi32(s0, s1);
        }
        if ((k + 32) % gs == 0) {
            const __m256 ws = _mm256_i32gather_ps(sbase + g, scale_idx, 4);
            for (uint32_t t = 0; t < nt; t++) {
                const __m256 f = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[t]), ws),
                                               _mm256_set1_ps(x->s[(size_t)t * ng + g]));
                accs[t] = _mm256_add_ps(accs[t], f);
            }
        }
    }
    for (uint32_t t = 0; t < nt; t++) {
        float* o = out + (size_t)t * ld;
        if (nrows == ROWS) {
            _mm256_storeu_ps(o, accs[t]);
        } else {
            float tmp[ROWS];
            _mm256_storeu_ps(tmp, accs[t]);
            for (uint32_t i = 0; i < nrows; i++) o[i] = tmp[i];
        }
    }
}

TARGET_VNNI static void matmul_q8_small_avxvnni(float* out, size_t ld, const Qwen3Q8Matrix* w,
                                                const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end) {
    uint32_t r = row_begin;
    if (row_end - r >= ROWS) qwen3_prefetch_q8_rows(w, r, ROWS);
    for (; row_end - r >= 2 * ROWS; r += ROWS) sm_block8_vnni(out + (r - row_begin), ld, w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) {
        sm_block8_vnni(out + (r - row_begin), ld, w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
    }
}

TARGET_VNNI static void matmul_q8_avxvnni(float* out, size_t ld, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                                          uint32_t row_begin, uint32_t row_end) {
    if (x->n_tokens >= 2 && x->n_tokens <= SM2_TOK && w->group_size % 32 == 0) {
        matmul_q8_small_avxvnni(out, ld, w, x, row_begin, row_end);
        return;
    }
    if (x->n_tokens < 2 || w->group_size % 4 != 0 || w->group_size > MM2_CHUNK) {
        qwen3_matmul_q8_by_matvec(matvec_q8_avxvnni, out, ld, w, x, row_begin, row_end);
        return;
    }
    MM2_DRIVER(mm2_pack_vnni, mm2_tile_vnni, MM2_TOK)
}

const Qwen3KernelTable qwen3_kernels_avxvnni = {
    .name = "avxvnni",
    .matvec_q8 = matvec_q8_avxvnni,
    .matmul_q8 = matmul_q8_avxvnni,
    .matmul_blocks = qwen3_matmul_blocks_avxvnni, /* K-quants: kernels_blocks_avx2.c */
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = attn_scores_avx2,
    .attn_values = attn_values_avx2,
    .softmax_exp = softmax_exp_avx2,
    .silu_mul = silu_mul_avx2,
    .sampler_softmax = qwen3_sampler_softmax_avx2,
};
