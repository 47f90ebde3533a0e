/*
 * kernels_kv.h - the int8 KV cache's dequantisation (docs/numerics.md#int8-kv-cache):
 * int8 values times their fp32 group scales, into the fp32 rows the attention value
 * kernel reads (keys need none: a score is an int8 product, kernels.h's matmul_q8).
 * Each output is (float)q * scale: the int8 to fp32 conversion is exact and the product
 * is one IEEE fp32 multiply, so every tier gives the scalar bits by construction; the
 * tiers differ in speed only.
 */
#ifndef QWEN3_KERNELS_KV_H
#define QWEN3_KERNELS_KV_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* Values, one row: out[i] = (float)q[i] * s[i / gs] for i < n (n a multiple of gs). */
typedef void (*Qwen3DequantGroupsFn)(float* out, const int8_t* q, const float* s, uint32_t n, uint32_t gs);

typedef struct {
    const char* name;
    Qwen3DequantGroupsFn dequant_groups;
} Qwen3KvKernels;

extern const Qwen3KvKernels qwen3_kv_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const Qwen3KvKernels qwen3_kv_kernels_avx2;
extern const Qwen3KvKernels qwen3_kv_kernels_avx512;
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
extern const Qwen3KvKernels qwen3_kv_kernels_neon;
#endif

/* The dequantisation tier that goes with an int8 tier: the widest its CPU level allows
 * (avx512vnni: avx512; avx2 and avxvnni: avx2; neon, neondot, sve: neon; else scalar). */
const Qwen3KvKernels* qwen3_kv_kernels_for(const Qwen3KernelTable* k);

/* Every dequantisation tier this CPU runs (NULL-terminated), for tests. */
const Qwen3KvKernels* const* qwen3_kv_kernels_all(void);

#endif
