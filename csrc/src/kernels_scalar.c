/* kernels_scalar.c - the reference tier: plain C, the numerics every other tier must
 * reproduce bit for bit (see kernels.h). Its batched product and attention loops are also
 * the fallbacks of tiers that have no faster version of them. */
#include <stddef.h>
#include <string.h>

#include "kernels.h"
#include "kernels_attention_loops.h"

static void matvec_q8_scalar(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                             uint32_t row_begin, uint32_t row_end) {
    const uint32_t n = w->cols;
    const uint32_t gs = w->group_size;
    const uint32_t n_groups = n / gs;
    for (uint32_t r = row_begin; r < row_end; r++) {
        const int8_t* wq = w->q + (size_t)r * n;
        const float* ws = w->s + (size_t)r * n_groups;
        float acc = 0.0f;
        for (uint32_t g = 0; g < n_groups; g++) {
            int32_t isum = 0;
            const int8_t* wg = wq + (size_t)g * gs;
            const int8_t* xg = x->q + (size_t)g * gs;
            for (uint32_t k = 0; k < gs; k++) isum += (int32_t)wg[k] * (int32_t)xg[k];
            acc = acc + ((float)isum * ws[g]) * x->s[g];
        }
        out[r - row_begin] = acc;
    }
}

/* Rows per block of the batched product built from matvec: about 128 KB of weights, which
 * stay in the L2 cache while every token of the batch passes over them, so the matrix
 * is read from memory once per call instead of once per token. A multiple of 16 (whole
 * SIMD row blocks of every tier). */
#define MATVEC_BLOCK_BYTES (128u * 1024u)

void qwen3_matmul_q8_by_matvec(Qwen3MatvecQ8Fn matvec, float* out, size_t out_stride,
                               const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x, uint32_t row_begin,
                               uint32_t row_end) {
    uint32_t block = MATVEC_BLOCK_BYTES / (w->cols > 0 ? w->cols : 1) / 16 * 16;
    if (block < 16) block = 16;
    for (uint32_t r0 = row_begin; r0 < row_end; r0 += block) {
        const uint32_t r1 = row_end - r0 < block ? row_end : r0 + block;
        for (uint32_t t = 0; t < x->n_tokens; t++) {
            const Qwen3Q8Vector v = qwen3_q8_batch_row(x, t);
            matvec(out + (size_t)t * out_stride + (r0 - row_begin), w, &v, r0, r1);
        }
    }
}

static void matmul_q8_scalar(float* out, size_t out_stride, const Qwen3Q8Matrix* w,
                             const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end) {
    qwen3_matmul_q8_by_matvec(matvec_q8_scalar, out, out_stride, w, x, row_begin, row_end);
}

/* The loops live in kernels_attention_loops.h so SIMD tiers can compile the same code for
 * their registers (a compiler vectorises them across lanes without reordering any sum). */
void qwen3_attn_scores_ref(float* scores, uint32_t s_stride, const float* q, uint32_t q_stride, uint32_t n_q,
                           const float* keys, size_t block_stride, uint32_t n_pos, uint32_t head_dim,
                           float scale) {
    qwen3_attn_scores_loops(scores, s_stride, q, q_stride, n_q, keys, block_stride, n_pos, head_dim, scale);
}

void qwen3_attn_values_ref(float* out, uint32_t o_stride, const float* att, uint32_t a_stride,
                           const uint32_t* n_pos, uint32_t n_q, const float* v, uint32_t v_stride,
                           uint32_t head_dim, int accumulate) {
    qwen3_attn_values_loops(out, o_stride, att, a_stride, n_pos, n_q, v, v_stride, head_dim, accumulate);
}

/* e^x in fp32 arithmetic (kernels.h, docs/numerics.md#exp-softmax-and-silu). Every step is
 * one IEEE fp32 operation (or an integer one on bit patterns) in a fixed order, with no
 * fused multiply-add, so a SIMD lane doing the same steps gets the same bits. */
float qwen3_exp_ref(float x) {
    /* e^-120 and e^100 are far outside fp32; the clamp bounds k below. NaN fails both
     * tests and stays NaN. */
    if (x < -120.0f) x = -120.0f;
    if (x > 100.0f) x = 100.0f;
    /* k = round(x / ln 2) by the 1.5 * 2^23 trick (ties to even; |k| <= 174 < 2^22) */
    const float shifted = x * QWEN3_EXP_LOG2E + QWEN3_EXP_MAGIC;
    const float kf = shifted - QWEN3_EXP_MAGIC;
    /* r = x - k ln 2, |r| <= 0.35: LN2_HI has 16 significant bits, so k * LN2_HI is exact */
    const float r = (x - kf * QWEN3_EXP_LN2_HI) - kf * QWEN3_EXP_LN2_LO;
    /* e^r = 1 + (r + r^2 (1/2! + r/3! + ... + r^5/7!)): Taylor to r^7 (remainder < 6e-9,
     * a tenth of an ulp); the small part is summed before the 1 so its rounding errors
     * shrink with it */
    float p = QWEN3_EXP_C7;
    p = p * r + QWEN3_EXP_C6;
    p = p * r + QWEN3_EXP_C5;
    p = p * r + QWEN3_EXP_C4;
    p = p * r + QWEN3_EXP_C3;
    p = p * r + 0.5f;
    p = p * (r * r) + r;
    p = p + 1.0f;
    /* 2^k in two factors 2^k1 * 2^k2 (k1 = floor(k / 2)), each a normal float for every
     * k the clamp allows, so p * 2^k1 is exact and the last product rounds once, to a
     * subnormal, 0 or inf where e^x is out of the normal range. shifted = 1.5 * 2^23 + k
     * exactly, so k is the difference of the bit patterns (no float-to-int conversion,
     * which NaN would make undefined). */
    uint32_t sbits, mbits;
    const float magic = QWEN3_EXP_MAGIC;
    memcpy(&sbits, &shifted, sizeof sbits);
    memcpy(&mbits, &magic, sizeof mbits);
    /* in uint32 arithmetic (two's complement, wrapping: no overflow even for NaN's bits);
     * k1 is k shifted right arithmetically */
    const uint32_t k = sbits - mbits;
    const uint32_t k1 = (k >> 1) | (k & 0x80000000u), k2 = k - k1;
    const uint32_t b1 = (k1 + 127u) << 23, b2 = (k2 + 127u) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return (p * s1) * s2;
}

void qwen3_softmax_ref(float* x, uint32_t n) {
    if (n == 0) return;
    float m = x[0];
    for (uint32_t i = 1; i < n; i++) {
        if (x[i] > m) m = x[i];
    }
    for (uint32_t i = 0; i < n; i++) x[i] = qwen3_exp_ref(x[i] - m);
    float sum = 0.0f;
    for (uint32_t i = 0; i < n; i++) sum += x[i];
    for (uint32_t i = 0; i < n; i++) x[i] = x[i] / sum;
}

void qwen3_softmax_rows_ref(float* x, size_t stride, uint32_t rows, const uint32_t* lens) {
    for (uint32_t r = 0; r < rows; r++) qwen3_softmax_ref(x + (size_t)r * stride, lens[r]);
}

void qwen3_silu_mul_ref(float* g, const float* u, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        const float gi = g[i];
        g[i] = (gi * (1.0f / (1.0f + qwen3_exp_ref(-gi)))) * u[i];
    }
}

const Qwen3KernelTable qwen3_kernels_scalar = {
    .name = "scalar",
    .matvec_q8 = matvec_q8_scalar,
    .matmul_q8 = matmul_q8_scalar,
    .matmul_blocks = qwen3_matmul_blocks_ref,
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = qwen3_attn_scores_ref,
    .attn_values = qwen3_attn_values_ref,
    .softmax = qwen3_softmax_rows_ref,
    .silu_mul = qwen3_silu_mul_ref,
};
