/* kernels_kv.c - the scalar dequantisation of the int8 KV cache and the choice of tier
 * (kernels_kv.h). */
#include "kernels_kv.h"

#include "cpu.h"

static void dequant_groups_scalar(float* out, const int8_t* q, const float* s, uint32_t n, uint32_t gs) {
    for (uint32_t i = 0; i < n; i++) out[i] = (float)q[i] * s[i / gs];
}

const Qwen3KvKernels qwen3_kv_kernels_scalar = {"scalar", dequant_groups_scalar};

const Qwen3KvKernels* qwen3_kv_kernels_for(const Qwen3KernelTable* k) {
#if defined(__x86_64__) || defined(_M_X64)
    if (k == &qwen3_kernels_avx512vnni || k == &qwen3_kernels_amx) return &qwen3_kv_kernels_avx512;
    if (k == &qwen3_kernels_avx2 || k == &qwen3_kernels_avxvnni) return &qwen3_kv_kernels_avx2;
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    if (k == &qwen3_kernels_neon || k == &qwen3_kernels_neondot || k == &qwen3_kernels_sve) {
        return &qwen3_kv_kernels_neon;
    }
#endif
    (void)k;
    return &qwen3_kv_kernels_scalar;
}

const Qwen3KvKernels* const* qwen3_kv_kernels_all(void) {
    static const Qwen3KvKernels* list[4];
    uint32_t n = 0;
    list[n++] = &qwen3_kv_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
    if (qwen3_kernels_find("avx2") != NULL) list[n++] = &qwen3_kv_kernels_avx2;
    if (qwen3_kernels_find("avx512vnni") != NULL) list[n++] = &qwen3_kv_kernels_avx512;
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    list[n++] = &qwen3_kv_kernels_neon;
#endif
    list[n] = NULL;
    return list;
}
