/*
 * kernels_kv.h - the compact KV caches' conversions.
 * int8 (docs/numerics.md#int8-kv-cache): int8 values times their fp32 group scales, into
 * the fp32 rows the attention value kernel reads (keys need none: a score is an int8
 * product, kernels.h's matmul_q8), or straight into one token's value sums
 * (attn_values_q8). Each output is (float)q * scale: the int8 to fp32 conversion is exact
 * and the product is one IEEE fp32 multiply, so every tier gives the scalar bits by
 * construction; the tiers differ in speed only.
 * fp16 (docs/numerics.md#fp16-kv-cache): keys and values rounded to IEEE binary16 when
 * stored (to_f16) and widened back, exactly, for the fp32 attention kernels (from_f16).
 */
#ifndef QWEN3_KERNELS_KV_H
#define QWEN3_KERNELS_KV_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* Values, one row: out[i] = (float)q[i] * s[i / gs] for i < n (n a multiple of gs). */
typedef void (*Qwen3DequantGroupsFn)(float* out, const int8_t* q, const float* s, uint32_t n, uint32_t gs);

/* The value pass of one token's attention over an int8 cache, the dequantised rows never
 * in memory: for query j < n_q (the query heads of one kv head, which share the token's
 * positions) and d < hd,
 *   out[j * o_stride + d] = 0.0f, then for p = 0 .. n_pos - 1 ascending:
 *       out = fmaf(att[j * a_stride + p], (float)q[p * hd + d] * s[p * (hd / gs) + d / gs], out)
 * which is dequant_groups of the rows followed by the f32 cache's attn_values over them (in
 * chunks or not: its sums continue from chunk to chunk), bit for bit. NULL in a tier that
 * has none (scalar, NEON): attention then takes that route. The SIMD tiers' fast loops
 * take hd and gs in multiples of their vector width; other shapes run the reference
 * (qwen3_attn_values_q8_ref). */
typedef void (*Qwen3AttnValuesQ8Fn)(float* out, size_t o_stride, const float* att, size_t a_stride, uint32_t n_q,
                                    const int8_t* q, const float* s, uint32_t n_pos, uint32_t hd, uint32_t gs);

/* out[i] = x[i] as binary16 for i < n: round to nearest, ties to even; magnitudes from
 * 65520 up (and infinities) give infinity, those below 2^-14 a subnormal or zero, a NaN a
 * quiet NaN with x's sign and the top 9 bits of its payload (what F16C's vcvtps2ph and
 * AArch64's fcvtn give with the default rounding mode). */
typedef void (*Qwen3ToF16Fn)(uint16_t* out, const float* x, uint32_t n);

/* out[i] = h[i] as binary32 for i < n: exact (a NaN stays a NaN). */
typedef void (*Qwen3FromF16Fn)(float* out, const uint16_t* h, uint32_t n);

typedef struct {
    const char* name;
    Qwen3DequantGroupsFn dequant_groups;
    Qwen3AttnValuesQ8Fn attn_values_q8;
    Qwen3ToF16Fn to_f16;
    Qwen3FromF16Fn from_f16;
} Qwen3KvKernels;

/* One value as to_f16 rounds it (the scalar tier's, and the tests' oracle). */
uint16_t qwen3_f32_to_f16(float x);

/* attn_values_q8 as written above, one multiply-add at a time (the scalar tier's). */
void qwen3_attn_values_q8_ref(float* out, size_t o_stride, const float* att, size_t a_stride, uint32_t n_q,
                              const int8_t* q, const float* s, uint32_t n_pos, uint32_t hd, uint32_t gs);

extern const Qwen3KvKernels qwen3_kv_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const Qwen3KvKernels qwen3_kv_kernels_avx2;
extern const Qwen3KvKernels qwen3_kv_kernels_avx512;
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
extern const Qwen3KvKernels qwen3_kv_kernels_neon;
#endif

/* The conversion tier that goes with an int8 tier: the widest its CPU level allows
 * (avx512vnni, amx: avx512; avx2 and avxvnni: avx2 where the CPU has F16C, which every
 * AVX2 CPU made has; neon, neondot, sve: neon; else scalar). */
const Qwen3KvKernels* qwen3_kv_kernels_for(const Qwen3KernelTable* k);

/* Every dequantisation tier this CPU runs (NULL-terminated), for tests. */
const Qwen3KvKernels* const* qwen3_kv_kernels_all(void);

#endif
