/* kernels_kv.c - the scalar conversions of the compact KV caches and the choice of tier
 * (kernels_kv.h). */
#include "kernels_kv.h"

#include <string.h>

#include "cpu.h"
#include "fmaf.h"
#include "kernels_float.h"

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

uint16_t qwen3_f32_to_f16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    const uint32_t sign = (bits >> 16) & 0x8000u, ax = bits & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu)); /* NaN, made quiet */
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* 65520 (half way to 2^16) and up */
    if (ax < 0x38800000u) {
        /* below 2^-14: a subnormal, r units of 2^-24; up to 2^-25 (a tie with 0) gives 0 */
        if (ax <= 0x33000000u) return (uint16_t)sign;
        const uint32_t e = ax >> 23, m = (ax & 0x7FFFFFu) | 0x800000u, shift = 126u - e; /* 14 .. 24 */
        uint32_t r = m >> shift;
        const uint32_t rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rest > half || (rest == half && (r & 1u))) r++; /* 0x400 is the smallest normal */
        return (uint16_t)(sign | r);
    }
    /* normal: the exponent rebased from 127 to 15, 13 mantissa bits rounded off (a carry
     * into the exponent is the right result, up to 65504 -> 0x7BFF) */
    uint32_t r = (ax - 0x38000000u) >> 13;
    const uint32_t rest = ax & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}

static void to_f16_scalar(uint16_t* out, const float* x, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) out[i] = qwen3_f32_to_f16(x[i]);
}

static void from_f16_scalar(float* out, const uint16_t* h, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) out[i] = qwen3_f16_to_f32(h[i]);
}

/* attention keeps the dequantised chunks here: the reference above is the tests' oracle */
const Qwen3KvKernels qwen3_kv_kernels_scalar = {"scalar", dequant_groups_scalar, NULL, to_f16_scalar,
                                                from_f16_scalar};

const Qwen3KvKernels* qwen3_kv_kernels_for(const Qwen3KernelTable* k) {
#if defined(__x86_64__) || defined(_M_X64)
    if (k == &qwen3_kernels_avx512vnni || k == &qwen3_kernels_amx) return &qwen3_kv_kernels_avx512;
    if ((k == &qwen3_kernels_avx2 || k == &qwen3_kernels_avxvnni) && (qwen3_cpu_flags() & QWEN3_CPU_F16C)) {
        return &qwen3_kv_kernels_avx2;
    }
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
    if (qwen3_kernels_find("avx2") != NULL && (qwen3_cpu_flags() & QWEN3_CPU_F16C)) list[n++] = &qwen3_kv_kernels_avx2;
    if (qwen3_kernels_find("avx512vnni") != NULL) list[n++] = &qwen3_kv_kernels_avx512;
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    list[n++] = &qwen3_kv_kernels_neon;
#endif
    list[n] = NULL;
    return list;
}
