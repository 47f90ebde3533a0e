/* kernels_attention_loops.h - the scalar reference's attention loops (scores q.k and the
 * weighted sum of values) as always-inline functions: kernels_scalar.c compiles them for
 * the baseline CPU, and a SIMD tier may wrap them in a function with its own target
 * attribute so the compiler vectorises the same code for wider registers. Each lane's operations and their order are fixed by the source
 * (-ffp-contract=off: no fused multiply-add), so every build gives the same bits. */
#ifndef QWEN3_KERNELS_ATTENTION_LOOPS_H
#define QWEN3_KERNELS_ATTENTION_LOOPS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* Written lane-wise (B positions side by side, the sum running down i) so that a
 * compiler vectorises it across positions without reordering any sum. */
static inline __attribute__((always_inline)) void qwen3_attn_scores_loops(
    float* scores, uint32_t s_stride, const float* q, uint32_t q_stride, uint32_t n_q, const float* keys,
    size_t block_stride, uint32_t n_pos, uint32_t head_dim, float scale) {
    enum { B = QWEN3_KV_BLOCK };
    for (uint32_t j = 0; j < n_q; j++) {
        const float* qj = q + (size_t)j * q_stride;
        for (uint32_t p0 = 0; p0 < n_pos; p0 += B) {
            const float* kb = keys + (size_t)(p0 / B) * block_stride;
            float acc[B];
            for (uint32_t l = 0; l < B; l++) acc[l] = 0.0f;
            for (uint32_t i = 0; i < head_dim; i++) {
                const float qi = qj[i];
                for (uint32_t l = 0; l < B; l++) acc[l] = acc[l] + qi * kb[(size_t)i * B + l];
            }
            float* out = scores + (size_t)j * s_stride + p0;
            for (uint32_t l = 0; l < B; l++) out[l] = acc[l] * scale;
        }
    }
}

static inline __attribute__((always_inline)) void qwen3_attn_values_loops(
    float* out, uint32_t o_stride, const float* att, uint32_t a_stride, const uint32_t* n_pos, uint32_t n_q,
    const float* v, uint32_t v_stride, uint32_t head_dim, int accumulate) {
    for (uint32_t j = 0; j < n_q; j++) {
        float* oj = out + (size_t)j * o_stride;
        const float* aj = att + (size_t)j * a_stride;
        if (!accumulate) {
            for (uint32_t i = 0; i < head_dim; i++) oj[i] = 0.0f;
        }
        for (uint32_t p = 0; p < n_pos[j]; p++) {
            const float a = aj[p];
            const float* vp = v + (size_t)p * v_stride;
            for (uint32_t i = 0; i < head_dim; i++) oj[i] = oj[i] + a * vp[i];
        }
    }
}

#endif
