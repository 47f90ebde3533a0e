/* kernels_kv.c - the scalar dequantisation of the int8 KV cache and the choice of tier
 * (kernels_kv.h). */
#include "kernels_kv.h"

#include "cpu.h"
#include "fmaf.h"

static void dequant_groups_scalar(float* out, const int8_t* q, const float* s, uint32_t n, uint32_t gs) {
    for (uint32_t i = 0; i < n; i++) out[i] = (float)q[i] * s[i / gs];
}

void qwen3_attn_values_q8_ref(float* out, size_t o_stride, const float* att, size_t a_stride, uint32_t n_q,
                              const int8_t* q, const float* s, uint32_t n_pos, uint32_t hd, uint32_t gs) {
    const uint32_t ng = hd / gs;
    for (uint32_t j = 0; j < n_q; j++) {
        float* o = out + (size_t)j * o_stride;
        const float* a = att + (size_t)j * a_stride;
        for (uint32_t d = 0; d < hd; d++) o[d] = 0.0f;
        for (uint32_t p = 0; p < n_pos; p++) {
            const int8_t* qp = q + (size_t)p * hd;
            const float* sp = s + (size_t)p * ng;
            for (uint32_t d = 0; d < hd; d++) {
                const float v = (float)qp[d] * sp[d / gs]; /* the dequantised value: one rounding */
                o[d] = QWEN3_FMAF(a[p], v, o[d]);
            }
        }
    }
}

/* attention keeps the dequantised chunks here: the reference above is the tests' oracle */
const Qwen3KvKernels qwen3_kv_kernels_scalar = {"scalar", dequant_groups_scalar, NULL};

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
