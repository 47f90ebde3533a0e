/* kernels_neon.c - two AdvSIMD tiers of the int8 matrix-vector product:
 *   "neondot" sdot (FEAT_DotProd: Cortex-A55/A76 and later, Apple M1 and later, Graviton 2+)
 *   "neon"    smull + sadalp, for cores without sdot (Cortex-A53/A72, Raspberry Pi 4)
 *
 * Both take 8 rows at a time: each row gets one int32x4 accumulator per group, and
 * pairwise adds (addp) fold four rows' accumulators into one vector whose lane i is row
 * i's exact int32 group sum. The float part (scvtf, * w_scale, * x_scale, +) then runs
 * with rows in lanes, in the scalar reference's order and roundings: bit-identical
 * (kernels.h). Both instructions multiply signed by signed bytes, so unlike x86 no
 * operand needs re-biasing: sdot sums four int8 x int8 products into each int32 lane;
 * smull makes int16 products (at most 128 * 128 = 16384, exact) and sadalp adds their
 * pairs into int32 lanes. Exact for every int8 input.
 * Group sizes that are not a multiple of 16 take the scalar reference (same numerics).
 */
#include <arm_neon.h>
#include <stddef.h>

#include "kernels.h"

#define TARGET_DOT __attribute__((target("+dotprod")))

#define ROWS 8 /* rows per block: two float32x4 of rows */

/* Row loops fully unrolled so the 8 accumulators stay in registers. */
#define UNROLL QWEN3_UNROLL_FULL(ROWS)

/* The next block (8 rows on) is prefetched in address order, 128 bytes (two lines) per
 * 16-byte step, which covers it exactly (see kernels_avx512.c for why in order). */
#define PREFETCH_STEP(next, col, i)                                                               \
    do {                                                                                          \
        if ((i) < 2) __builtin_prefetch((next) + ((col) / 16) * 128 + (size_t)(i) * 64);          \
    } while (0)

/* [total(a0), total(a1), total(a2), total(a3)] */
static inline int32x4_t reduce4(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3) {
    return vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3));
}

/* acc = acc + ((float)isum * w_scale) * x_scale with rows in lanes. */
static inline float32x4_t accumulate(float32x4_t acc, int32x4_t isum, const float* ws, const int* idx,
                                     float xs) {
    float scales[4] = {ws[idx[0]], ws[idx[1]], ws[idx[2]], ws[idx[3]]};
    const float32x4_t f = vmulq_f32(vmulq_f32(vcvtq_f32_s32(isum), vld1q_f32(scales)), vdupq_n_f32(xs));
    return vaddq_f32(acc, f);
}

/* The shape of one block, shared by both tiers. Rows past nrows repeat the last row (in
 * bounds, results dropped), so one code path serves full and tail blocks. `DOT(acc, w, x)`
 * adds one 16-byte chunk's products into the row accumulator. */
#define BLOCK_BODY(DOT)                                                                           \
    const size_t n = w->cols;                                                                     \
    const uint32_t gs = w->group_size;                                                            \
    const uint32_t ng = (uint32_t)(n / gs);                                                       \
    const int8_t* base = w->q + (size_t)r0 * n;                                                   \
    const int8_t* next = base + (size_t)ROWS * n;                                                 \
    const float* sbase = w->s + (size_t)r0 * ng;                                                  \
    size_t off[ROWS];                                                                             \
    int idx[ROWS];                                                                                \
    UNROLL for (uint32_t i = 0; i < ROWS; i++) {                                                  \
        const uint32_t row = i < nrows ? i : nrows - 1;                                           \
        off[i] = (size_t)row * n;                                                                 \
        idx[i] = (int)(row * ng);                                                                 \
    }                                                                                             \
    float32x4_t acc_lo = vdupq_n_f32(0.0f), acc_hi = vdupq_n_f32(0.0f);                           \
    for (uint32_t g = 0; g < ng; g++) {                                                           \
        const size_t col = (size_t)g * gs;                                                        \
        int32x4_t a[ROWS];                                                                        \
        UNROLL for (int i = 0; i < ROWS; i++) a[i] = vdupq_n_s32(0);                              \
        for (uint32_t k = 0; k < gs; k += 16) {                                                   \
            const int8x16_t xv = vld1q_s8(x->q + col + k);                                        \
            UNROLL for (int i = 0; i < ROWS; i++) {                                               \
                if (prefetch) PREFETCH_STEP(next, col + k, i);                                    \
                const int8x16_t wv = vld1q_s8(base + off[i] + col + k);                           \
                a[i] = DOT(a[i], wv, xv);                                                         \
            }                                                                                     \
        }                                                                                         \
        acc_lo = accumulate(acc_lo, reduce4(a[0], a[1], a[2], a[3]), sbase + g, idx, x->s[g]);    \
        acc_hi = accumulate(acc_hi, reduce4(a[4], a[5], a[6], a[7]), sbase + g, idx + 4, x->s[g]); \
    }                                                                                             \
    if (nrows == ROWS) {                                                                          \
        vst1q_f32(out, acc_lo);                                                                   \
        vst1q_f32(out + 4, acc_hi);                                                               \
    } else {                                                                                      \
        float tmp[ROWS];                                                                          \
        vst1q_f32(tmp, acc_lo);                                                                   \
        vst1q_f32(tmp + 4, acc_hi);                                                               \
        for (uint32_t i = 0; i < nrows; i++) out[i] = tmp[i];                                     \
    }

/* Splits [row_begin, row_end) into blocks; prefetches only rows this call reads. */
#define MATVEC_BODY(block)                                                                        \
    if (w->group_size % 16 != 0) {                                                                \
        qwen3_kernels_scalar.matvec_q8(out, w, x, row_begin, row_end);                            \
        return;                                                                                   \
    }                                                                                             \
    uint32_t r = row_begin;                                                                       \
    for (; row_end - r >= 2 * ROWS; r += ROWS) block(out + (r - row_begin), w, x, r, ROWS, 1);    \
    for (; r < row_end; r += ROWS)                                                                \
        block(out + (r - row_begin), w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);

/* ------------------------------------------------------------------------------------
 * neon: smull / smull2 make 8 int16 products each, sadalp adds neighbours into int32
 * ---------------------------------------------------------------------------------- */

static inline int32x4_t dot_smull(int32x4_t acc, int8x16_t w, int8x16_t x) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    return vpadalq_s16(acc, vmull_high_s8(w, x));
}

static inline __attribute__((always_inline)) void block8_neon(float* out, const Qwen3Q8Matrix* w,
                                                              const Qwen3Q8Vector* x, uint32_t r0,
                                                              uint32_t nrows, const int prefetch) {
    BLOCK_BODY(dot_smull)
}

static void matvec_q8_neon(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x, uint32_t row_begin,
                           uint32_t row_end) {
    MATVEC_BODY(block8_neon)
}

static void matmul_q8_neon(float* out, size_t out_stride, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                         uint32_t row_begin, uint32_t row_end) {
    qwen3_matmul_q8_by_matvec(matvec_q8_neon, out, out_stride, w, x, row_begin, row_end);
}

const Qwen3KernelTable qwen3_kernels_neon = {
    .name = "neon",
    .matvec_q8 = matvec_q8_neon,
    .matmul_q8 = matmul_q8_neon,
    .matmul_blocks = qwen3_matmul_blocks_neon, /* kernels_blocks_neon.c */
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = qwen3_attn_scores_ref,
    .attn_values = qwen3_attn_values_ref,
    .softmax_exp = qwen3_softmax_exp_rows_ref,
    .silu_mul = qwen3_silu_mul_ref,
    .sampler_softmax = qwen3_sampler_softmax_neon,
};

/* ------------------------------------------------------------------------------------
 * neondot: one sdot per 16 bytes
 * ---------------------------------------------------------------------------------- */

TARGET_DOT static inline int32x4_t dot_sdot(int32x4_t acc, int8x16_t w, int8x16_t x) {
    return vdotq_s32(acc, w, x);
}

TARGET_DOT static inline __attribute__((always_inline)) void block8_dot(float* out, const Qwen3Q8Matrix* w,
                                                                        const Qwen3Q8Vector* x, uint32_t r0,
                                                                        uint32_t nrows, const int prefetch) {
    BLOCK_BODY(dot_sdot)
}

TARGET_DOT static void matvec_q8_neondot(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                                         uint32_t row_begin, uint32_t row_end) {
    MATVEC_BODY(block8_dot)
}

/* ------------------------------------------------------------------------------------
 * neondot batched product (prefill): a GEMM micro-kernel in the shape of the x86 ones.
 * Weights are repacked once per call, 8 rows by MMN_CHUNK columns at a time, so one
 * 16-byte vector holds 4 bytes of each of 4 rows; sdot's by-element form multiplies them
 * by one 4-byte element of a token's activation vector, which is the broadcast, so the
 * int32 sums of 4 rows build up in lanes and signed x signed needs no bias. After every
 * group the float part runs per token with rows in lanes in the scalar order
 * (bit-identical, kernels.h); the float accumulators live in a small L1 tile.
 * ---------------------------------------------------------------------------------- */

#define MMN_ROWS 8
#define MMN_TOK 8
#define MMN_CHUNK 1024

/* Packs rows r0 .. r0+7 (past nrows: the last row again) and columns [c0, c0 + nc) into
 * pk: the vector of 4-column step j, quarter h (rows 4h .. 4h+3) at pk + (2j + h) * 16;
 * scales of group gl of the chunk at ps + gl * 8. nc is a multiple of 16. */
TARGET_DOT static void mmn_pack(int8_t* pk, float* ps, const Qwen3Q8Matrix* w, uint32_t r0, uint32_t nrows, uint32_t c0,
                                uint32_t nc) {
    const size_t n = w->cols;
    const uint32_t gs = w->group_size, ng = (uint32_t)(n / gs);
    for (uint32_t h = 0; h < 2; h++) {
        const int8_t* rows[4];
        for (uint32_t i = 0; i < 4; i++) {
            const uint32_t row = 4 * h + i < nrows ? 4 * h + i : nrows - 1;
            rows[i] = w->q + (size_t)(r0 + row) * n + c0;
        }
        for (uint32_t c = 0; c < nc; c += 16) {
            const int32x4x2_t t0 = vtrnq_s32(vreinterpretq_s32_s8(vld1q_s8(rows[0] + c)),
                                             vreinterpretq_s32_s8(vld1q_s8(rows[1] + c)));
            const int32x4x2_t t1 = vtrnq_s32(vreinterpretq_s32_s8(vld1q_s8(rows[2] + c)),
                                             vreinterpretq_s32_s8(vld1q_s8(rows[3] + c)));
            /* dword m of rows 0..3 */
            const int32x4_t d0 = vcombine_s32(vget_low_s32(t0.val[0]), vget_low_s32(t1.val[0]));
            const int32x4_t d1 = vcombine_s32(vget_low_s32(t0.val[1]), vget_low_s32(t1.val[1]));
            const int32x4_t d2 = vcombine_s32(vget_high_s32(t0.val[0]), vget_high_s32(t1.val[0]));
            const int32x4_t d3 = vcombine_s32(vget_high_s32(t0.val[1]), vget_high_s32(t1.val[1]));
            int8_t* dst = pk + ((size_t)(c / 4) * 2 + h) * 16;
            vst1q_s8(dst, vreinterpretq_s8_s32(d0));
            vst1q_s8(dst + 32, vreinterpretq_s8_s32(d1));
            vst1q_s8(dst + 64, vreinterpretq_s8_s32(d2));
            vst1q_s8(dst + 96, vreinterpretq_s8_s32(d3));
        }
    }
    const uint32_t g0 = c0 / gs, ngc = nc / gs;
    for (uint32_t i = 0; i < MMN_ROWS; i++) {
        const uint32_t row = i < nrows ? i : nrows - 1;
        const float* src = w->s + (size_t)(r0 + row) * ng + g0;
        for (uint32_t gl = 0; gl < ngc; gl++) ps[gl * MMN_ROWS + i] = src[gl];
    }
}

/* 4 steps of 4 columns against one 16-byte piece of each token's activations. */
#define MMN_STEP(lane)                                                                            \
    do {                                                                                          \
        const int8x16_t w0 = vld1q_s8(pg + (size_t)(4 * k16 + (lane)) * 32);                     \
        const int8x16_t w1 = vld1q_s8(pg + (size_t)(4 * k16 + (lane)) * 32 + 16);                \
        UNROLL for (int t = 0; t < nt; t++) {                                                     \
            a[t][0] = vdotq_laneq_s32(a[t][0], w0, xv[t], (lane));                                \
            a[t][1] = vdotq_laneq_s32(a[t][1], w1, xv[t], (lane));                                \
        }                                                                                         \
    } while (0)

TARGET_DOT static inline __attribute__((always_inline)) void mmn_tile(float* out, size_t ld, const int8_t* pk,
                                                                      const float* ps, const Qwen3Q8Batch* x,
                                                                      uint32_t t0, const int nt, uint32_t g0,
                                                                      uint32_t ngc, int first, uint32_t nrows) {
    const uint32_t gs = x->group_size, ng = x->n / gs;
    float facc[MMN_TOK][MMN_ROWS];
    UNROLL for (int t = 0; t < nt; t++) {
        for (uint32_t i = 0; i < MMN_ROWS; i++) facc[t][i] = 0.0f;
        if (!first) {
            for (uint32_t i = 0; i < nrows; i++) facc[t][i] = out[(size_t)(t0 + t) * ld + i];
        }
    }
    for (uint32_t gl = 0; gl < ngc; gl++) {
        int32x4_t a[MMN_TOK][2];
        UNROLL for (int t = 0; t < nt; t++) a[t][0] = a[t][1] = vdupq_n_s32(0);
        const int8_t* pg = pk + (size_t)gl * (gs / 4) * 32;
        for (uint32_t k16 = 0; k16 < gs / 16; k16++) {
            int8x16_t xv[MMN_TOK];
            UNROLL for (int t = 0; t < nt; t++) {
                xv[t] = vld1q_s8(x->q + (size_t)(t0 + t) * x->n + (size_t)(g0 + gl) * gs + (size_t)k16 * 16);
            }
            MMN_STEP(0);
            MMN_STEP(1);
            MMN_STEP(2);
            MMN_STEP(3);
        }
        const float32x4_t ws0 = vld1q_f32(ps + (size_t)gl * MMN_ROWS);
        const float32x4_t ws1 = vld1q_f32(ps + (size_t)gl * MMN_ROWS + 4);
        UNROLL for (int t = 0; t < nt; t++) {
            const float32x4_t xs = vdupq_n_f32(x->s[(size_t)(t0 + t) * ng + g0 + gl]);
            const float32x4_t f0 = vmulq_f32(vmulq_f32(vcvtq_f32_s32(a[t][0]), ws0), xs);
            const float32x4_t f1 = vmulq_f32(vmulq_f32(vcvtq_f32_s32(a[t][1]), ws1), xs);
            vst1q_f32(facc[t], vaddq_f32(vld1q_f32(facc[t]), f0));
            vst1q_f32(facc[t] + 4, vaddq_f32(vld1q_f32(facc[t] + 4), f1));
        }
    }
    UNROLL for (int t = 0; t < nt; t++) {
        for (uint32_t i = 0; i < nrows; i++) out[(size_t)(t0 + t) * ld + i] = facc[t][i];
    }
}

/* Batched product for a few tokens (batched decode), neondot: the weights stream 8 rows
 * at a time as in matvec (same prefetch) and nothing is repacked in memory. Each 16-byte
 * step of 4 rows is transposed in registers as mmn_pack does (vector m = columns 4m ..
 * 4m+3 of the 4 rows, rows in lanes), and every token adds sdot by element with its own
 * 16 activation bytes: no per-token horizontal sum. Integer group sums are exact (signed
 * x signed, no bias); the float part is matvec's per token, rows in lanes, in the scalar
 * order (bit-identical, kernels.h). Group sizes that are multiples of 16. */
#define SMN_TOK 16

/* The 4 rows' 16 bytes at p[0..3] as 4 vectors: out[m] lane i = dword m of row i. */
TARGET_DOT static inline __attribute__((always_inline)) void smn_transpose4(int32x4_t out[4], const int8_t* p0,
                                                                            const int8_t* p1, const int8_t* p2,
                                                                            const int8_t* p3) {
    const int32x4x2_t t0 = vtrnq_s32(vreinterpretq_s32_s8(vld1q_s8(p0)), vreinterpretq_s32_s8(vld1q_s8(p1)));
    const int32x4x2_t t1 = vtrnq_s32(vreinterpretq_s32_s8(vld1q_s8(p2)), vreinterpretq_s32_s8(vld1q_s8(p3)));
    out[0] = vcombine_s32(vget_low_s32(t0.val[0]), vget_low_s32(t1.val[0]));
    out[1] = vcombine_s32(vget_low_s32(t0.val[1]), vget_low_s32(t1.val[1]));
    out[2] = vcombine_s32(vget_high_s32(t0.val[0]), vget_high_s32(t1.val[0]));
    out[3] = vcombine_s32(vget_high_s32(t0.val[1]), vget_high_s32(t1.val[1]));
}

TARGET_DOT static inline __attribute__((always_inline)) void smn_block8(float* out, size_t ld, const Qwen3Q8Matrix* w,
                                                                        const Qwen3Q8Batch* x, uint32_t r0,
                                                                        uint32_t nrows, const int prefetch) {
    const size_t n = w->cols;
    const uint32_t gs = w->group_size, ng = (uint32_t)(n / gs), nt = x->n_tokens;
    const int8_t* base = w->q + (size_t)r0 * n;
    const int8_t* next = base + (size_t)ROWS * n;
    const float* sbase = w->s + (size_t)r0 * ng;
    const int8_t* rows[ROWS];
    int idx[ROWS];
    UNROLL for (uint32_t i = 0; i < ROWS; i++) {
        const uint32_t row = i < nrows ? i : nrows - 1;
        rows[i] = base + (size_t)row * n;
        idx[i] = (int)(row * ng);
    }
    float32x4_t acc[SMN_TOK][2];
    int32x4_t isum[SMN_TOK][2];
    for (uint32_t t = 0; t < nt; t++) acc[t][0] = acc[t][1] = vdupq_n_f32(0.0f);
    for (size_t k = 0; k < n; k += 16) {
        const uint32_t g = (uint32_t)(k / gs);
        if (prefetch) {
            UNROLL for (int i = 0; i < ROWS; i++) PREFETCH_STEP(next, k, i);
        }
        int32x4_t d0[4], d1[4];
        smn_transpose4(d0, rows[0] + k, rows[1] + k, rows[2] + k, rows[3] + k);
        smn_transpose4(d1, rows[4] + k, rows[5] + k, rows[6] + k, rows[7] + k);
        const int starts = k % gs == 0;
        for (uint32_t t = 0; t < nt; t++) {
            const int8x16_t xv = vld1q_s8(x->q + (size_t)t * n + k);
            int32x4_t a0 = starts ? vdupq_n_s32(0) : isum[t][0];
            int32x4_t a1 = starts ? vdupq_n_s32(0) : isum[t][1];
            a0 = vdotq_laneq_s32(a0, vreinterpretq_s8_s32(d0[0]), xv, 0);
            a1 = vdotq_laneq_s32(a1, vreinterpretq_s8_s32(d1[0]), xv, 0);
            a0 = vdotq_laneq_s32(a0, vreinterpretq_s8_s32(d0[1]), xv, 1);
            a1 = vdotq_laneq_s32(a1, vreinterpretq_s8_s32(d1[1]), xv, 1);
            a0 = vdotq_laneq_s32(a0, vreinterpretq_s8_s32(d0[2]), xv, 2);
            a1 = vdotq_laneq_s32(a1, vreinterpretq_s8_s32(d1[2]), xv, 2);
            a0 = vdotq_laneq_s32(a0, vreinterpretq_s8_s32(d0[3]), xv, 3);
            a1 = vdotq_laneq_s32(a1, vreinterpretq_s8_s32(d1[3]), xv, 3);
            isum[t][0] = a0;
            isum[t][1] = a1;
        }
        if ((k + 16) % gs == 0) {
            const float* ws = sbase + g;
            const float s0[4] = {ws[idx[0]], ws[idx[1]], ws[idx[2]], ws[idx[3]]};
            const float s1[4] = {ws[idx[4]], ws[idx[5]], ws[idx[6]], ws[idx[7]]};
            const float32x4_t ws0 = vld1q_f32(s0), ws1 = vld1q_f32(s1);
            for (uint32_t t = 0; t < nt; t++) {
                const float32x4_t xs = vdupq_n_f32(x->s[(size_t)t * ng + g]);
                acc[t][0] = vaddq_f32(acc[t][0], vmulq_f32(vmulq_f32(vcvtq_f32_s32(isum[t][0]), ws0), xs));
                acc[t][1] = vaddq_f32(acc[t][1], vmulq_f32(vmulq_f32(vcvtq_f32_s32(isum[t][1]), ws1), xs));
            }
        }
    }
    for (uint32_t t = 0; t < nt; t++) {
        float tmp[ROWS];
        vst1q_f32(tmp, acc[t][0]);
        vst1q_f32(tmp + 4, acc[t][1]);
        for (uint32_t i = 0; i < nrows; i++) out[(size_t)t * ld + i] = tmp[i];
    }
}

TARGET_DOT static void matmul_q8_small_neondot(float* out, size_t ld, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                                               uint32_t row_begin, uint32_t row_end) {
    uint32_t r = row_begin;
    for (; row_end - r >= 2 * ROWS; r += ROWS) smn_block8(out + (r - row_begin), ld, w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) {
        smn_block8(out + (r - row_begin), ld, w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
    }
}

TARGET_DOT static void matmul_q8_neondot(float* out, size_t ld, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                                         uint32_t row_begin, uint32_t row_end) {
    const uint32_t gs = w->group_size;
    if (x->n_tokens >= 2 && x->n_tokens <= SMN_TOK && gs % 16 == 0) {
        matmul_q8_small_neondot(out, ld, w, x, row_begin, row_end);
        return;
    }
    /* One token gains nothing from repacking; groups must split into 16-byte pieces. */
    if (x->n_tokens < 2 || gs % 16 != 0 || gs > MMN_CHUNK) {
        qwen3_matmul_q8_by_matvec(matvec_q8_neondot, out, ld, w, x, row_begin, row_end);
        return;
    }
    int8_t pk[MMN_ROWS * MMN_CHUNK] __attribute__((aligned(16)));
    float ps[MMN_ROWS * (MMN_CHUNK / 16)];
    const uint32_t cols = w->cols, chunk = (MMN_CHUNK / gs) * gs, ntok = x->n_tokens;
    for (uint32_t r0 = row_begin; r0 < row_end; r0 += MMN_ROWS) {
        const uint32_t nrows = row_end - r0 < MMN_ROWS ? row_end - r0 : MMN_ROWS;
        float* o = out + (r0 - row_begin);
        for (uint32_t c0 = 0; c0 < cols; c0 += chunk) {
            const uint32_t nc = cols - c0 < chunk ? cols - c0 : chunk;
            mmn_pack(pk, ps, w, r0, nrows, c0, nc);
            const uint32_t g0 = c0 / gs, ngc = nc / gs;
            const int first = c0 == 0;
            uint32_t t0 = 0;
            for (; t0 + MMN_TOK <= ntok; t0 += MMN_TOK) mmn_tile(o, ld, pk, ps, x, t0, MMN_TOK, g0, ngc, first, nrows);
            switch (ntok - t0) {
            case 7: mmn_tile(o, ld, pk, ps, x, t0, 7, g0, ngc, first, nrows); break;
            case 6: mmn_tile(o, ld, pk, ps, x, t0, 6, g0, ngc, first, nrows); break;
            case 5: mmn_tile(o, ld, pk, ps, x, t0, 5, g0, ngc, first, nrows); break;
            case 4: mmn_tile(o, ld, pk, ps, x, t0, 4, g0, ngc, first, nrows); break;
            case 3: mmn_tile(o, ld, pk, ps, x, t0, 3, g0, ngc, first, nrows); break;
            case 2: mmn_tile(o, ld, pk, ps, x, t0, 2, g0, ngc, first, nrows); break;
            case 1: mmn_tile(o, ld, pk, ps, x, t0, 1, g0, ngc, first, nrows); break;
            default: break;
            }
        }
    }
}

const Qwen3KernelTable qwen3_kernels_neondot = {
    .name = "neondot",
    .matvec_q8 = matvec_q8_neondot,
    .matmul_q8 = matmul_q8_neondot,
    .matmul_blocks = qwen3_matmul_blocks_neondot, /* kernels_blocks_neon.c */
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = qwen3_attn_scores_ref,
    .attn_values = qwen3_attn_values_ref,
    .softmax_exp = qwen3_softmax_exp_rows_ref,
    .silu_mul = qwen3_silu_mul_ref,
    .sampler_softmax = qwen3_sampler_softmax_neon,
};
