/* kernels_attention_loops.h - the scalar reference's attention loops (scores q.k and the
 * weighted sum of values) as always-inline functions: kernels_scalar.c compiles them for
 * the baseline CPU, and a SIMD tier may wrap them in a function with its own target
 * attribute so the compiler vectorises the same code for wider registers. Each lane's
 * operations and their order are fixed by the source: every multiply-add is one fused
 * multiply-add, a single rounding (docs/numerics.md#grouped-query-attention), written as
 * QWEN3_FMAF so -ffp-contract=off leaves it alone. Where the target has FMA (an includer
 * with an FMA target attribute defines QWEN3_FMAF as __builtin_fmaf first; aarch64
 * always has it) that is the instruction; elsewhere qwen3_fmaf_soft (fmaf.h), which rounds
 * the same way. So every build gives the same bits. */
#ifndef QWEN3_KERNELS_ATTENTION_LOOPS_H
#define QWEN3_KERNELS_ATTENTION_LOOPS_H

#include <stddef.h>
#include <stdint.h>

#include "fmaf.h"
#include "kernels.h"

/* Written lane-wise (B positions side by side, the sum running down i) so that a
 * compiler vectorises it across positions without reordering any sum. QT queries share
 * each key block: every key row is loaded once for QT independent sums, which keeps the
 * adds' latency hidden (one query alone waits on one chain of adds). */
#define QWEN3_ATT_QT 4u
/* The loop over positions (or dims) around a tile stays a loop: vectorising it would give
 * a vector per position and sum the lanes one by one (clang's loop vectoriser does so
 * for AArch64), where the tile's own lanes are the vectors wanted. */
#if defined(__clang__)
#define QWEN3_ATT_SCALAR_LOOP _Pragma("clang loop vectorize(disable) interleave(disable)")
#else
#define QWEN3_ATT_SCALAR_LOOP
#endif
static inline __attribute__((always_inline)) void qwen3_attn_scores_loops(
    float* scores, uint32_t s_stride, const float* q, uint32_t q_stride, uint32_t n_q, const float* keys,
    size_t block_stride, uint32_t n_pos, uint32_t head_dim, float scale) {
    enum { B = QWEN3_KV_BLOCK, QT = QWEN3_ATT_QT };
    uint32_t j = 0;
    for (; j + QT <= n_q; j += QT) {
        const float* qj = q + (size_t)j * q_stride;
        for (uint32_t p0 = 0; p0 < n_pos; p0 += B) {
            const float* kb = keys + (size_t)(p0 / B) * block_stride;
            float acc[QT][B];
            QWEN3_UNROLL_FULL(4) for (uint32_t r = 0; r < QT; r++) {
                QWEN3_UNROLL_FULL(16) for (uint32_t l = 0; l < B; l++) acc[r][l] = 0.0f;
            }
            QWEN3_ATT_SCALAR_LOOP for (uint32_t i = 0; i < head_dim; i++) {
                const float* ki = kb + (size_t)i * B;
                QWEN3_UNROLL_FULL(4) for (uint32_t r = 0; r < QT; r++) {
                    const float qi = qj[(size_t)r * q_stride + i];
                    QWEN3_UNROLL_FULL(16) for (uint32_t l = 0; l < B; l++) acc[r][l] = QWEN3_FMAF(qi, ki[l], acc[r][l]);
                }
            }
            QWEN3_UNROLL_FULL(4) for (uint32_t r = 0; r < QT; r++) {
                float* out = scores + (size_t)(j + r) * s_stride + p0;
                QWEN3_UNROLL_FULL(16) for (uint32_t l = 0; l < B; l++) out[l] = acc[r][l] * scale;
            }
        }
    }
    for (; j < n_q; j++) {
        const float* qj = q + (size_t)j * q_stride;
        for (uint32_t p0 = 0; p0 < n_pos; p0 += B) {
            const float* kb = keys + (size_t)(p0 / B) * block_stride;
            float acc[B];
            for (uint32_t l = 0; l < B; l++) acc[l] = 0.0f;
            for (uint32_t i = 0; i < head_dim; i++) {
                const float qi = qj[i];
                for (uint32_t l = 0; l < B; l++) acc[l] = QWEN3_FMAF(qi, kb[(size_t)i * B + l], acc[l]);
            }
            float* out = scores + (size_t)j * s_stride + p0;
            for (uint32_t l = 0; l < B; l++) out[l] = acc[l] * scale;
        }
    }
}

/* Output dims taken QT queries x VT dims at a time, the sums held in local arrays (which a
 * compiler keeps in registers) across positions, every value row loaded once for QT
 * queries. Positions past the shortest query of the tile continue each longer query's
 * sums one query at a time, still in ascending order. */
#define QWEN3_ATT_VT 16u
static inline __attribute__((always_inline)) void qwen3_attn_values_loops(
    float* out, uint32_t o_stride, const float* att, uint32_t a_stride, const uint32_t* n_pos, uint32_t n_q,
    const float* v, uint32_t v_stride, uint32_t head_dim, int accumulate) {
    enum { QT = QWEN3_ATT_QT, VT = QWEN3_ATT_VT };
    uint32_t j = 0;
    for (; j + QT <= n_q; j += QT) {
        float* oj = out + (size_t)j * o_stride;
        const float* aj = att + (size_t)j * a_stride;
        const uint32_t n_all = n_pos[j]; /* non-decreasing: every query of the tile has it */
        uint32_t i0 = 0;
        for (; i0 + VT <= head_dim; i0 += VT) {
            float acc[QT][VT];
            QWEN3_UNROLL_FULL(4) for (uint32_t r = 0; r < QT; r++) {
                QWEN3_UNROLL_FULL(16) for (uint32_t l = 0; l < VT; l++) {
                    acc[r][l] = accumulate ? oj[(size_t)r * o_stride + i0 + l] : 0.0f;
                }
            }
            QWEN3_ATT_SCALAR_LOOP for (uint32_t p = 0; p < n_all; p++) {
                const float* vp = v + (size_t)p * v_stride + i0;
                QWEN3_UNROLL_FULL(4) for (uint32_t r = 0; r < QT; r++) {
                    const float a = aj[(size_t)r * a_stride + p];
                    QWEN3_UNROLL_FULL(16) for (uint32_t l = 0; l < VT; l++) acc[r][l] = QWEN3_FMAF(a, vp[l], acc[r][l]);
                }
            }
            QWEN3_UNROLL_FULL(4) for (uint32_t r = 0; r < QT; r++) {
                QWEN3_UNROLL_FULL(16) for (uint32_t l = 0; l < VT; l++) oj[(size_t)r * o_stride + i0 + l] = acc[r][l];
            }
        }
        for (uint32_t r = 0; r < QT; r++) {
            float* o = oj + (size_t)r * o_stride;
            const float* a = aj + (size_t)r * a_stride;
            /* the dims past the last whole VT, over the tile's common positions */
            for (uint32_t i = i0; i < head_dim; i++) {
                if (!accumulate) o[i] = 0.0f;
            }
            for (uint32_t p = 0; p < n_all; p++) {
                const float* vp = v + (size_t)p * v_stride;
                for (uint32_t i = i0; i < head_dim; i++) o[i] = QWEN3_FMAF(a[p], vp[i], o[i]);
            }
            /* then this query's own positions past the common ones, every dim */
            for (uint32_t p = n_all; p < n_pos[j + r]; p++) {
                const float* vp = v + (size_t)p * v_stride;
                for (uint32_t i = 0; i < head_dim; i++) o[i] = QWEN3_FMAF(a[p], vp[i], o[i]);
            }
        }
    }
    for (; j < n_q; j++) {
        float* oj = out + (size_t)j * o_stride;
        const float* aj = att + (size_t)j * a_stride;
        if (!accumulate) {
            for (uint32_t i = 0; i < head_dim; i++) oj[i] = 0.0f;
        }
        for (uint32_t p = 0; p < n_pos[j]; p++) {
            const float a = aj[p];
            const float* vp = v + (size_t)p * v_stride;
            for (uint32_t i = 0; i < head_dim; i++) oj[i] = QWEN3_FMAF(a, vp[i], oj[i]);
        }
    }
}

#endif
