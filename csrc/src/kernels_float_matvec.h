/* kernels_float_matvec.h - the float matvec loop (kernels_float.h's numerics), written once
 * for every SIMD tier against a few vector mappings, in the manner of ggml's
 * simd-mappings.h: a tier's file says how its registers load, add, multiply and store, and
 * this body says what is computed, so the tiers cannot drift apart.
 *
 * A tier defines, before including this file:
 *   F32Vec                     its fp32 register type
 *   F32VEC_LANES               fp32 lanes per register; 16 / F32VEC_LANES registers make
 *                              a row's 16 accumulator lanes
 *   F32VEC_ROWS                rows streamed together: enough independent add chains to
 *                              hide the add latency, few enough to stay in registers
 *   F32VEC_TARGET              the attribute that enables its ISA (may be empty)
 *   f32vec_zero()              all lanes +0.0f
 *   f32vec_load(p)             F32VEC_LANES floats from p (unaligned)
 *   f32vec_load_f16(p)         F32VEC_LANES fp16 values from p, widened exactly
 *   f32vec_load_bf16(p)        F32VEC_LANES bf16 values from p, widened exactly
 *   f32vec_add(a, b)           lane-wise a + b, rounded to fp32
 *   f32vec_mul(a, b)           lane-wise a * b, rounded to fp32 (never fused with the add:
 *                              the reference rounds the product and the sum separately)
 *   f32vec_store(p, v)         F32VEC_LANES floats to p (unaligned)
 * and then wraps qwen3_matvec_float_rows in one F32VEC_TARGET function per weight type,
 * passing the type as a constant so the weight-load switch below folds away.
 */
#ifndef QWEN3_KERNELS_FLOAT_MATVEC_H
#define QWEN3_KERNELS_FLOAT_MATVEC_H

#include <stddef.h>
#include <stdint.h>

#include "kernels_float.h"

#if !defined(F32VEC_LANES) || !defined(F32VEC_ROWS) || !defined(F32VEC_TARGET)
#error "define the F32Vec mappings (see the top of kernels_float_matvec.h) before including it"
#endif

/* Registers per row: the 16 lanes of the contract, F32VEC_LANES at a time. */
#define F32VEC_PER_ROW (16 / F32VEC_LANES)
_Static_assert(16 % F32VEC_LANES == 0, "a row's 16 lanes must be whole registers");

/* Weights j .. j + F32VEC_LANES - 1 of a row stored as `type`, widened to fp32. */
F32VEC_TARGET static inline __attribute__((always_inline)) F32Vec f32vec_load_weights(
    const void* row, uint32_t j, uint32_t type) {
    switch (type) {
        case QWEN3_WEIGHT_F16: return f32vec_load_f16((const uint16_t*)row + j);
        case QWEN3_WEIGHT_BF16: return f32vec_load_bf16((const uint16_t*)row + j);
        default: return f32vec_load((const float*)row + j);
    }
}

/* Weight j of a row stored as `type`, widened to fp32 (the scalar tail). */
static inline __attribute__((always_inline)) float f32vec_weight(const void* row, uint32_t j, uint32_t type) {
    switch (type) {
        case QWEN3_WEIGHT_F16: return qwen3_f16_to_f32(((const uint16_t*)row)[j]);
        case QWEN3_WEIGHT_BF16: return qwen3_bf16_to_f32(((const uint16_t*)row)[j]);
        default: return ((const float*)row)[j];
    }
}

/* out[r - row_begin] = row r of w dot x for r in [row_begin, row_end), w stored as `type`
 * (a compile-time constant at every call). Rows go F32VEC_ROWS at a time, each streamed
 * once: SIMD over whole 16-value chunks, then the scalar tail into the same lanes and the
 * shared reduction tree, so every output has the scalar reference's bits. */
F32VEC_TARGET static inline __attribute__((always_inline)) void qwen3_matvec_float_rows(
    float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin, uint32_t row_end, uint32_t type) {
    const uint32_t n = w->cols, full = n / 16 * 16;
    const size_t row_bytes = (size_t)n * (type == QWEN3_WEIGHT_F32 ? 4u : 2u);
    for (uint32_t r = row_begin; r < row_end; r += F32VEC_ROWS) {
        const uint32_t nr = row_end - r < F32VEC_ROWS ? row_end - r : F32VEC_ROWS;
        /* A short last block repeats its first row in the unused slots: loads stay inside
         * the matrix and the loop keeps one shape; those results are never stored. */
        const void* p[F32VEC_ROWS];
        for (uint32_t i = 0; i < F32VEC_ROWS; i++) {
            p[i] = (const unsigned char*)w->data + (size_t)(r + (i < nr ? i : 0)) * row_bytes;
        }
        /* acc[k][i]: register k of row i. Register-major because with acc[i][k] clang
         * reduced the AVX2 rows from 8-byte reloads of spilled lanes, 4% slower on
         * cached weights. */
        F32Vec acc[F32VEC_PER_ROW][F32VEC_ROWS];
        for (uint32_t i = 0; i < F32VEC_ROWS; i++) {
            for (uint32_t k = 0; k < F32VEC_PER_ROW; k++) acc[k][i] = f32vec_zero();
        }
        for (uint32_t j = 0; j < full; j += 16) {
            F32Vec xv[F32VEC_PER_ROW];
            for (uint32_t k = 0; k < F32VEC_PER_ROW; k++) xv[k] = f32vec_load(x + j + k * F32VEC_LANES);
            for (uint32_t i = 0; i < F32VEC_ROWS; i++) {
                for (uint32_t k = 0; k < F32VEC_PER_ROW; k++) {
                    const F32Vec wv = f32vec_load_weights(p[i], j + k * F32VEC_LANES, type);
                    acc[k][i] = f32vec_add(acc[k][i], f32vec_mul(wv, xv[k]));
                }
            }
        }
        for (uint32_t i = 0; i < nr; i++) {
            float lanes[16];
            for (uint32_t k = 0; k < F32VEC_PER_ROW; k++) f32vec_store(lanes + k * F32VEC_LANES, acc[k][i]);
            for (uint32_t j = full; j < n; j++) {
                lanes[j % 16] = lanes[j % 16] + f32vec_weight(p[i], j, type) * x[j];
            }
            out[r + i - row_begin] = qwen3_reduce16(lanes);
        }
    }
}

#endif
