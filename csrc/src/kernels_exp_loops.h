/* kernels_exp_loops.h - the scalar reference's exp, softmax and SiLU as always-inline
 * functions: kernels_scalar.c compiles them for the baseline CPU, and a SIMD tier may wrap
 * them in a function with its own target attribute so the compiler vectorises the same
 * code for wider registers (kernels_attention_loops.h does the same for attention). Each
 * lane's operations and their order are fixed by the source (-ffp-contract=off: no fused
 * multiply-add), so every build gives the same bits. */
#ifndef QWEN3_KERNELS_EXP_LOOPS_H
#define QWEN3_KERNELS_EXP_LOOPS_H

#include <stdint.h>
#include <string.h>

#include "kernels.h"

/* e^x in fp32 arithmetic (kernels.h, docs/numerics.md#exp-softmax-and-silu). Every step is
 * one IEEE fp32 operation (or an integer one on bit patterns) in a fixed order, with no
 * fused multiply-add, so a SIMD lane doing the same steps gets the same bits. */
static inline __attribute__((always_inline)) float qwen3_exp_inline(float x) {
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

static inline __attribute__((always_inline)) void qwen3_softmax_loops(float* x, uint32_t n) {
    if (n == 0) return;
    float m = x[0];
    for (uint32_t i = 1; i < n; i++) {
        if (x[i] > m) m = x[i];
    }
    for (uint32_t i = 0; i < n; i++) x[i] = qwen3_exp_inline(x[i] - m);
    float sum = 0.0f;
    for (uint32_t i = 0; i < n; i++) sum += x[i];
    for (uint32_t i = 0; i < n; i++) x[i] = x[i] / sum;
}

/* Attention's softmax without the division (kernels.h): x[i] = exp(x[i] - max), returns
 * their sum in 16 lanes folded 8, 4, 2, 1. Lanes instead of one running sum: a SIMD tier
 * adds 16 values per instruction where the index-order sum was a chain of dependent adds. */
static inline __attribute__((always_inline)) float qwen3_softmax_exp_loops(float* x, uint32_t n) {
    if (n == 0) return 0.0f;
    float m = x[0];
    for (uint32_t i = 1; i < n; i++) {
        if (x[i] > m) m = x[i];
    }
    for (uint32_t i = 0; i < n; i++) x[i] = qwen3_exp_inline(x[i] - m);
    float lane[16] = {0};
    uint32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (uint32_t l = 0; l < 16; l++) lane[l] += x[i + l];
    }
    for (uint32_t l = 0; i + l < n; l++) lane[l] += x[i + l];
    for (uint32_t w = 8; w >= 1; w /= 2) {
        for (uint32_t l = 0; l < w; l++) lane[l] = lane[l] + lane[l + w];
    }
    return lane[0];
}

static inline __attribute__((always_inline)) void qwen3_silu_mul_loops(float* g, const float* u, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        const float gi = g[i];
        g[i] = (gi * (1.0f / (1.0f + qwen3_exp_inline(-gi)))) * u[i];
    }
}

#endif
