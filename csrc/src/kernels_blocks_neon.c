/*
 * kernels_blocks_neon.c - the block-weight product (kernels.h, Qwen3MatmulBlocksFn) for Q4_K,
 * Q5_K and Q6_K on the ARM tiers: one body built twice, with AdvSIMD widening multiplies
 * (neon, also used by sve) and with sdot (neondot). The 32-value block types take the reference.
 *
 * Same bits as the reference (docs/numerics.md#ggml-block-weights): a block is unpacked with
 * vector operations into signed bytes (Q6_K's minus 32 included, so no correction is needed),
 * each 16-value half's integer sum is exact, and the fp32 epilogue is the reference's scalar
 * code, chunk by chunk, in order.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>

#include "bytes.h"
#include "kernels.h"
#include "kernels_float.h"

#define TARGET_DOT __attribute__((target("+dotprod")))
#define INLINE static inline __attribute__((always_inline))

/* A block's 256 values as signed bytes, 16 per vector, in value order. */
INLINE void decode(uint32_t type, const uint8_t* blk, int8x16_t q[16]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(3), one = vdupq_n_u8(1);
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

/* Scale, offset (Q4_K / Q5_K) and Q6_K's per-16 scales of a block, as kernels_blocks.c. */
INLINE void block_scales(uint32_t type, const uint8_t* blk, float scale[8], float offset[8], int32_t m16[16]) {
    if (type == QWEN3_BLOCK_Q6_K) {
        const float d = qwen3_f16_to_f32(qwen3_read_u16le(blk + 208));
        for (int j = 0; j < 8; j++) scale[j] = d;
        for (int j = 0; j < 16; j++) m16[j] = (int8_t)blk[192 + j];
        return;
    }
    const float d = qwen3_f16_to_f32(qwen3_read_u16le(blk)), dmin = qwen3_f16_to_f32(qwen3_read_u16le(blk + 2));
    const uint8_t* s = blk + 4;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) {
            sc = s[j] & 63;
            m = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
            m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        scale[j] = d * (float)sc;
        offset[j] = -(dmin * (float)m);
    }
}

/* One body per tier: DOT16(a, b) is an int32x4_t whose lanes sum to the exact dot product of
 * two int8x16_t. */
#define BLOCKS_BODY(DOT16)                                                                                   \
    const uint32_t type = w->type;                                                                           \
    if (type != QWEN3_BLOCK_Q4_K && type != QWEN3_BLOCK_Q5_K && type != QWEN3_BLOCK_Q6_K) {                  \
        qwen3_matmul_blocks_ref(out, out_stride, w, x, row_begin, row_end);                                  \
        return;                                                                                              \
    }                                                                                                        \
    const uint32_t bb = qwen3_block_bytes(type), nb = w->cols / 256, ng = x->n / 32;                         \
    const int q6 = type == QWEN3_BLOCK_Q6_K;                                                                 \
    for (uint32_t r = row_begin; r < row_end; r++) {                                                         \
        float* o = out + (r - row_begin);                                                                    \
        for (uint32_t t = 0; t < x->n_tokens; t++) o[(size_t)t * out_stride] = 0.0f;                         \
        for (uint32_t b = 0; b < nb; b++) {                                                                  \
            const uint8_t* blk = w->data + (size_t)r * w->row_bytes + (size_t)b * bb;                        \
            int8x16_t q[16];                                                                                 \
            float scale[8], offset[8];                                                                       \
            int32_t m16[16];                                                                                 \
            decode(type, blk, q);                                                                            \
            block_scales(type, blk, scale, offset, m16);                                                     \
            for (uint32_t t = 0; t < x->n_tokens; t++) {                                                     \
                const int8_t* xq = x->q + (size_t)t * x->n + (size_t)b * 256;                                \
                const size_t g = (size_t)t * ng + (size_t)b * 8;                                             \
                float acc = o[(size_t)t * out_stride];                                                       \
                for (int c = 0; c < 8; c++) {                                                                \
                    const int32_t lo = vaddvq_s32(DOT16(q[2 * c], vld1q_s8(xq + 32 * c)));                    \
                    const int32_t hi = vaddvq_s32(DOT16(q[2 * c + 1], vld1q_s8(xq + 32 * c + 16)));           \
                    const int32_t isum = q6 ? m16[2 * c] * lo + m16[2 * c + 1] * hi : lo + hi;              \
                    float tv = (float)isum * scale[c];                                                       \
                    if (!q6) tv = tv + (float)x->sums[g + c] * offset[c];                                    \
                    acc = acc + tv * x->s[g + c];                                                            \
                }                                                                                            \
                o[(size_t)t * out_stride] = acc;                                                             \
            }                                                                                                \
        }                                                                                                    \
    }

/* neon: widening multiplies, pairwise adds (|product| <= 32 * 128, no overflow) */
INLINE int32x4_t dot16_neon(int8x16_t a, int8x16_t b) {
    const int16x8_t p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    const int16x8_t p1 = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

void qwen3_matmul_blocks_neon(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                              uint32_t row_begin, uint32_t row_end) {
    BLOCKS_BODY(dot16_neon)
}

/* neondot: sdot */
TARGET_DOT INLINE int32x4_t dot16_sdot(int8x16_t a, int8x16_t b) { return vdotq_s32(vdupq_n_s32(0), a, b); }

TARGET_DOT void qwen3_matmul_blocks_neondot(float* out, size_t out_stride, const Qwen3BlockMatrix* w,
                                            const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end) {
    BLOCKS_BODY(dot16_sdot)
}
