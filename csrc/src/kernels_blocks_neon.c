/*
 * kernels_blocks_neon.c - the block-weight product (kernels.h, Qwen3MatmulBlocksFn) for every
 * block type on the ARM tiers: one body (kernels_blocks_neon.h) built twice, with AdvSIMD
 * widening multiplies (neon, also used by sve) and with sdot (neondot).
 *
 * Same bits as the reference (docs/numerics.md#ggml-block-weights). The work goes in units of
 * 256 values: one K-quant block, or eight consecutive 32-value blocks (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0; a row's last unit may hold fewer). A unit is decoded with vector operations into
 * signed bytes (Q4_0 / Q5_0's minus 8 / 16 and Q6_K's minus 32 included, so no correction is
 * needed), once for every token of the batch. Each chunk's integer sum (Q6_K: each half's,
 * times its int8 scale) is exact in any order, so it is formed with the tier's dot product
 * and a pairwise-add tree; the chunk epilogues run lane by lane, four chunks to a vector
 * (the reference's single roundings: no FMA, the build has -ffp-contract=off). Four rows go
 * together: their product vectors are transposed so that the row is the lane, and the chunks
 * are added to the rows' sums with one vector add each, in chunk order (each lane the
 * scalar sequence of its row); rows past the last group of four go one at a time, with
 * scalar adds in the same order.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bytes.h"
#include "kernels.h"
#include "kernels_float.h"

#define TARGET_DOT __attribute__((target("+dotprod")))
#define INLINE static inline __attribute__((always_inline))

#define BLK_ROWS 4 /* rows per group: one float32x4 of rows */

/* fp16 -> fp32, exactly as qwen3_f16_to_f32 (kernels_float.c), inlined. */
INLINE float f16_at(const uint8_t* p) {
    const uint32_t h = qwen3_read_u16le(p), sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0) {
        const float v = (float)mant * 5.9604644775390625e-8f; /* zero or subnormal, exact */
        return sign ? -v : v;
    }
    const uint32_t bits = exp == 0x1F ? sign | 0x7F800000u | (mant << 13) : sign | ((exp + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Four fp16 codes (one per uint32 lane) -> fp32: f16_at's bit operations lane by lane, so
 * the same bits, NaN payloads included (-v of a zero or subnormal v is v with the sign set). */
INLINE float32x4_t f16x4(uint32x4_t h) {
    const uint32x4_t sign = vshlq_n_u32(vandq_u32(h, vdupq_n_u32(0x8000u)), 16);
    const uint32x4_t exp = vandq_u32(vshrq_n_u32(h, 10), vdupq_n_u32(0x1Fu));
    const uint32x4_t mant = vandq_u32(h, vdupq_n_u32(0x3FFu)), mant13 = vshlq_n_u32(mant, 13);
    const uint32x4_t normal = vorrq_u32(sign, vorrq_u32(vshlq_n_u32(vaddq_u32(exp, vdupq_n_u32(112u)), 23), mant13));
    const uint32x4_t special = vorrq_u32(sign, vorrq_u32(vdupq_n_u32(0x7F800000u), mant13));
    const float32x4_t sub = vmulq_f32(vcvtq_f32_u32(mant), vdupq_n_f32(5.9604644775390625e-8f));
    const uint32x4_t sub_bits = vorrq_u32(sign, vreinterpretq_u32_f32(sub));
    const uint32x4_t bits = vbslq_u32(vceqq_u32(exp, vdupq_n_u32(0x1Fu)), special, normal);
    return vreinterpretq_f32_u32(vbslq_u32(vceqzq_u32(exp), sub_bits, bits));
}

/* Eight fp16 codes -> fp32 in v[0] (codes 0..3) and v[1] (4..7). */
INLINE void f16x8(const uint16_t h[8], float32x4_t v[2]) {
    const uint16x8_t c = vld1q_u16(h);
    v[0] = f16x4(vmovl_u16(vget_low_u16(c)));
    v[1] = f16x4(vmovl_high_u16(c));
}

/* A unit's per-chunk factors: chunks 0..3 in [0], 4..7 in [1]; Q6_K's sixteen int8 scales
 * as int32, four per vector in value order. */
typedef struct {
    float32x4_t scale[2];
    float32x4_t offset[2];
    int32x4_t m16[4];
} Params;

/* Where a 32-value type's nibbles (or Q8_0's bytes) start in its block. */
INLINE uint32_t qs_at(uint32_t type) {
    switch (type) {
        case QWEN3_BLOCK_Q4_1: return 4;
        case QWEN3_BLOCK_Q5_0: return 6;
        case QWEN3_BLOCK_Q5_1: return 8;
        default: return 2; /* Q4_0, Q8_0 */
    }
}

/* Unit factors. For the 32-value types, blocks nc..7 (past the row's end) get zeros. */
INLINE void params(uint32_t type, const uint8_t* blk, uint32_t nc, Params* p) {
    p->m16[0] = p->m16[1] = p->m16[2] = p->m16[3] = vdupq_n_s32(1);
    if (type == QWEN3_BLOCK_Q6_K) {
        const int16x8_t s0 = vmovl_s8(vld1_s8((const int8_t*)blk + 192));
        const int16x8_t s1 = vmovl_s8(vld1_s8((const int8_t*)blk + 200));
        p->m16[0] = vmovl_s16(vget_low_s16(s0));
        p->m16[1] = vmovl_high_s16(s0);
        p->m16[2] = vmovl_s16(vget_low_s16(s1));
        p->m16[3] = vmovl_high_s16(s1);
        p->scale[0] = p->scale[1] = vdupq_n_f32(f16_at(blk + 208));
        p->offset[0] = p->offset[1] = vdupq_n_f32(0.0f);
        return;
    }
    if (qwen3_block_values(type) == 32) {
        /* d of each block, and m for Q4_1 / Q5_1 (added as it is: offset = m); code 0 (0.0f)
         * for the blocks past a short unit */
        const uint32_t bb = qwen3_block_bytes(type);
        const int has_m = type == QWEN3_BLOCK_Q4_1 || type == QWEN3_BLOCK_Q5_1;
        uint16_t d[8], m[8];
        for (uint32_t k = 0; k < 8; k++) {
            d[k] = k < nc ? qwen3_read_u16le(blk + (size_t)k * bb) : 0;
            m[k] = k < nc && has_m ? qwen3_read_u16le(blk + (size_t)k * bb + 2) : 0;
        }
        f16x8(d, p->scale);
        f16x8(m, p->offset);
        return;
    }
    /* Q4_K / Q5_K: the 6-bit scale and min of chunk j < 4 are the low 6 bits of bytes j and
     * j + 4; of j >= 4, the nibbles of byte j + 4 under the top two bits of bytes j - 4 and
     * j (as kernels_blocks.c reads them), four at a time here; scale = d * sc, offset =
     * -(dmin * m), the product then its sign flipped, as the reference does */
    const float32x4_t d = vdupq_n_f32(f16_at(blk)), dmin = vdupq_n_f32(f16_at(blk + 2));
    const uint32_t a = qwen3_read_u32le(blk + 4), b = qwen3_read_u32le(blk + 8), c = qwen3_read_u32le(blk + 12);
    const uint32_t sc_lo = a & 0x3F3F3F3Fu, m_lo = b & 0x3F3F3F3Fu;
    const uint32_t sc_hi = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
    const uint32_t m_hi = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
    const uint16x8_t sc = vmovl_u8(vcreate_u8((uint64_t)sc_hi << 32 | sc_lo));
    const uint16x8_t m = vmovl_u8(vcreate_u8((uint64_t)m_hi << 32 | m_lo));
    p->scale[0] = vmulq_f32(d, vcvtq_f32_u32(vmovl_u16(vget_low_u16(sc))));
    p->scale[1] = vmulq_f32(d, vcvtq_f32_u32(vmovl_high_u16(sc)));
    p->offset[0] = vnegq_f32(vmulq_f32(dmin, vcvtq_f32_u32(vmovl_u16(vget_low_u16(m)))));
    p->offset[1] = vnegq_f32(vmulq_f32(dmin, vcvtq_f32_u32(vmovl_high_u16(m))));
}

/* A unit's 256 values as signed bytes, 16 per vector in value order (chunk c in q[2c] and
 * q[2c + 1]); for the 32-value types, blocks nc..7 are zeros. */
INLINE void decode(uint32_t type, const uint8_t* blk, uint32_t nc, int8x16_t q[16]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(3), one = vdupq_n_u8(1);
    if (qwen3_block_values(type) == 32) {
        /* one block per chunk: Q8_0's bytes, or nibbles (value i low, i + 16 high) under
         * Q5_0 / Q5_1's fifth bits (qh bit i -> byte i: byte i takes qh's byte i / 8 and
         * tests bit i % 8), less Q4_0 / Q5_0's bias */
        const uint32_t bb = qwen3_block_bytes(type), at = qs_at(type);
        const int five = type == QWEN3_BLOCK_Q5_0 || type == QWEN3_BLOCK_Q5_1;
        const uint32_t qh_at = type == QWEN3_BLOCK_Q5_0 ? 2 : 4;
        const int8x16_t bias = vdupq_n_s8(type == QWEN3_BLOCK_Q4_0 ? 8 : type == QWEN3_BLOCK_Q5_0 ? 16 : 0);
        static const uint8_t spread_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
        static const uint8_t spread_hi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
        static const uint8_t bits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
        const uint8x16_t sp_lo = vld1q_u8(spread_lo), sp_hi = vld1q_u8(spread_hi), bit = vld1q_u8(bits);
        const uint8x16_t m16 = vdupq_n_u8(0x10);
        for (uint32_t k = 0; k < 8; k++) {
            if (k >= nc) {
                q[2 * k] = q[2 * k + 1] = vdupq_n_s8(0);
                continue;
            }
            const uint8_t* b = blk + (size_t)k * bb;
            if (type == QWEN3_BLOCK_Q8_0) {
                q[2 * k] = vld1q_s8((const int8_t*)b + 2);
                q[2 * k + 1] = vld1q_s8((const int8_t*)b + 18);
                continue;
            }
            const uint8x16_t v = vld1q_u8(b + at);
            uint8x16_t lo = vandq_u8(v, m4), hi = vshrq_n_u8(v, 4);
            if (five) {
                const uint8x16_t h = vreinterpretq_u8_u32(vdupq_n_u32(qwen3_read_u32le(b + qh_at)));
                lo = vorrq_u8(lo, vandq_u8(vtstq_u8(vqtbl1q_u8(h, sp_lo), bit), m16));
                hi = vorrq_u8(hi, vandq_u8(vtstq_u8(vqtbl1q_u8(h, sp_hi), bit), m16));
            }
            q[2 * k] = vsubq_s8(vreinterpretq_s8_u8(lo), bias);
            q[2 * k + 1] = vsubq_s8(vreinterpretq_s8_u8(hi), bias);
        }
        return;
    }
    if (type == QWEN3_BLOCK_Q6_K) {
        const int8x16_t m32 = vdupq_n_s8(32);
        for (int h = 0; h < 2; h++) {
            const uint8_t* ql = blk + 64 * h;
            const uint8_t* qh = blk + 128 + 32 * h;
            for (int s = 0; s < 2; s++) { /* values l = 16s .. 16s + 15 of each chunk */
                const uint8x16_t l0 = vld1q_u8(ql + 16 * s), l1 = vld1q_u8(ql + 32 + 16 * s);
                const uint8x16_t hb = vld1q_u8(qh + 16 * s);
                const uint8x16_t c0 = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hb, m3), 4));
                const uint8x16_t c1 = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m3), 4));
                const uint8x16_t c2 = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m3), 4));
                const uint8x16_t c3 = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4));
                q[8 * h + 0 + s] = vsubq_s8(vreinterpretq_s8_u8(c0), m32);
                q[8 * h + 2 + s] = vsubq_s8(vreinterpretq_s8_u8(c1), m32);
                q[8 * h + 4 + s] = vsubq_s8(vreinterpretq_s8_u8(c2), m32);
                q[8 * h + 6 + s] = vsubq_s8(vreinterpretq_s8_u8(c3), m32);
            }
        }
        return;
    }
    const int five = type == QWEN3_BLOCK_Q5_K;
    const uint8_t* qs = blk + (five ? 48 : 16);
    for (int k = 0; k < 4; k++) {
        for (int s = 0; s < 2; s++) {
            const uint8x16_t v = vld1q_u8(qs + 32 * k + 16 * s);
            uint8x16_t lo = vandq_u8(v, m4), hi = vshrq_n_u8(v, 4);
            if (five) {
                const uint8x16_t hb = vld1q_u8(blk + 16 + 16 * s);
                const int8x16_t sh0 = vdupq_n_s8((int8_t)(-2 * k)), sh1 = vdupq_n_s8((int8_t)(-2 * k - 1));
                lo = vorrq_u8(lo, vshlq_n_u8(vandq_u8(vshlq_u8(hb, sh0), one), 4));
                hi = vorrq_u8(hi, vshlq_n_u8(vandq_u8(vshlq_u8(hb, sh1), one), 4));
            }
            q[4 * k + s] = vreinterpretq_s8_u8(lo);
            q[4 * k + 2 + s] = vreinterpretq_s8_u8(hi);
        }
    }
}

/* [total(a0), total(a1), total(a2), total(a3)] */
INLINE int32x4_t reduce4(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3) {
    return vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3));
}

/* Chunk integer sums (s[0]: chunks 0..3, s[1]: 4..7) from the halves' dot-product vectors
 * h[16] (h[i]'s lanes sum to half i's exact dot product): Q6_K's halves times their scales. */
INLINE void q6_isums(const int32x4_t h[16], const int32x4_t m16[4], int32x4_t s[2]) {
    int32x4_t pr[4];
    for (int k = 0; k < 4; k++) { /* [lo(2k), hi(2k), lo(2k+1), hi(2k+1)] * scales */
        pr[k] = vmulq_s32(reduce4(h[4 * k], h[4 * k + 1], h[4 * k + 2], h[4 * k + 3]), m16[k]);
    }
    s[0] = vpaddq_s32(pr[0], pr[1]);
    s[1] = vpaddq_s32(pr[2], pr[3]);
}

/* The chunk epilogues of one row, lane by lane: t = (float)isum * scale (+ (float)xsum *
 * offset), times xs. */
INLINE void products(const int32x4_t s[2], const Params* p, const float32x4_t xs[2], const float32x4_t xsum[2],
                     int off, float32x4_t prod[2]) {
    for (int k = 0; k < 2; k++) {
        float32x4_t t = vmulq_f32(vcvtq_f32_s32(s[k]), p->scale[k]);
        if (off) t = vaddq_f32(t, vmulq_f32(xsum[k], p->offset[k]));
        prod[k] = vmulq_f32(t, xs[k]);
    }
}

/* v[i] -> lanes i of the results: c[j] = [v0[j], v1[j], v2[j], v3[j]] (moves only). */
INLINE void transpose4(const float32x4_t v[4], float32x4_t c[4]) {
    const float32x4_t t0 = vtrn1q_f32(v[0], v[1]), t1 = vtrn2q_f32(v[0], v[1]);
    const float32x4_t t2 = vtrn1q_f32(v[2], v[3]), t3 = vtrn2q_f32(v[2], v[3]);
    c[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    c[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    c[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    c[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
}

/* neon: widening multiplies, pairwise adds (|product| <= 128 * 128, exact in int16) */
INLINE int32x4_t dot16_neon(int8x16_t a, int8x16_t b) {
    return vpadalq_s16(vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b))), vmull_high_s8(a, b));
}
INLINE int32x4_t dot32_neon(int8x16_t a0, int8x16_t b0, int8x16_t a1, int8x16_t b1) {
    int32x4_t acc = vpaddlq_s16(vmull_s8(vget_low_s8(a0), vget_low_s8(b0)));
    acc = vpadalq_s16(acc, vmull_high_s8(a0, b0));
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a1), vget_low_s8(b1)));
    return vpadalq_s16(acc, vmull_high_s8(a1, b1));
}

/* neondot: sdot, four exact products per int32 lane */
TARGET_DOT INLINE int32x4_t dot16_sdot(int8x16_t a, int8x16_t b) { return vdotq_s32(vdupq_n_s32(0), a, b); }
TARGET_DOT INLINE int32x4_t dot32_sdot(int8x16_t a0, int8x16_t b0, int8x16_t a1, int8x16_t b1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), a0, b0), a1, b1);
}

#define BLK_CAT2(a, b) a##b
#define BLK_CAT(a, b) BLK_CAT2(a, b)

#define BLK_TARGET
#define BLK_DOT16 dot16_neon
#define BLK_DOT32 dot32_neon
#define BLK_NAME qwen3_matmul_blocks_neon
#define BLK_P(name) BLK_CAT(neon_, name)
#include "kernels_blocks_neon.h"
#undef BLK_TARGET
#undef BLK_DOT16
#undef BLK_DOT32
#undef BLK_NAME
#undef BLK_P

#define BLK_TARGET TARGET_DOT
#define BLK_DOT16 dot16_sdot
#define BLK_DOT32 dot32_sdot
#define BLK_NAME qwen3_matmul_blocks_neondot
#define BLK_P(name) BLK_CAT(neondot_, name)
#include "kernels_blocks_neon.h"
#undef BLK_TARGET
#undef BLK_DOT16
#undef BLK_DOT32
#undef BLK_NAME
#undef BLK_P
