/* kernels_scalar.c - the reference tier: plain C, the numerics every other tier must
 * reproduce bit for bit (see kernels.h). Its batched product and attention loops are also
 * the fallbacks of tiers that have no faster version of them. */
#include <stddef.h>
#include <string.h>

#include "kernels.h"
#include "kernels_attention_loops.h"
#include "kernels_exp_loops.h"

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

/* The exp, softmax and SiLU loops live in kernels_exp_loops.h so SIMD tiers can compile
 * the same code for their registers. */
float qwen3_exp_ref(float x) { return qwen3_exp_inline(x); }

void qwen3_softmax_ref(float* x, uint32_t n) { qwen3_softmax_loops(x, n); }

void qwen3_softmax_exp_rows_ref(float* x, size_t stride, uint32_t rows, const uint32_t* lens, float* sums) {
    for (uint32_t r = 0; r < rows; r++) sums[r] = qwen3_softmax_exp_loops(x + (size_t)r * stride, lens[r]);
}

void qwen3_silu_mul_ref(float* g, const float* u, uint32_t n) { qwen3_silu_mul_loops(g, u, n); }

const Qwen3KernelTable qwen3_kernels_scalar = {
    .name = "scalar",
    .matvec_q8 = matvec_q8_scalar,
    .matmul_q8 = matmul_q8_scalar,
    .matmul_blocks = qwen3_matmul_blocks_ref,
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = qwen3_attn_scores_ref,
    .attn_values = qwen3_attn_values_ref,
    .softmax_exp = qwen3_softmax_exp_rows_ref,
    .silu_mul = qwen3_silu_mul_ref,
    .sampler_softmax = qwen3_sampler_softmax_ref,
};
