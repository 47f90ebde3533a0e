/* kernels_kv_neon.c - the int8 KV cache's dequantisation with AdvSIMD (kernels_kv.h):
 * sxtl twice widens int8 to int32, scvtf converts exactly, one fmul by the scales; and
 * the fp16 cache's conversions. */
#include <arm_neon.h>

#include "kernels_float.h"
#include "kernels_kv.h"

/* 8 int8 at q as two vectors of 4 floats. */
static inline void widen8(const int8_t* q, float32x4_t* lo, float32x4_t* hi) {
    const int16x8_t w = vmovl_s8(vld1_s8(q));
    *lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
    *hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(w)));
}

static void dequant_groups_neon(float* out, const int8_t* q, const float* s, uint32_t n, uint32_t gs) {
    for (uint32_t g = 0; g < n / gs; g++) {
        const float32x4_t sg = vdupq_n_f32(s[g]);
        uint32_t i = g * gs;
        const uint32_t end = (g + 1) * gs;
        for (; i + 8 <= end; i += 8) {
            float32x4_t a, b;
            widen8(q + i, &a, &b);
            vst1q_f32(out + i, vmulq_f32(a, sg));
            vst1q_f32(out + i + 4, vmulq_f32(b, sg));
        }
        for (; i < end; i++) out[i] = (float)q[i] * s[g];
    }
}

/* fp16 cache rows: fcvtn (the default rounding mode: to nearest, ties to even; FZ16 off)
 * and fcvtl, 4 at a time */
static void to_f16_neon(uint16_t* out, const float* x, uint32_t n) {
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(out + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++) out[i] = qwen3_f32_to_f16(x[i]);
}

static void from_f16_neon(float* out, const uint16_t* h, uint32_t n) {
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
    for (; i < n; i++) out[i] = qwen3_f16_to_f32(h[i]);
}

/* no attn_values_q8 (not measured on an ARM host yet): attention dequantises a chunk and
 * runs the f32 value kernel */
const Qwen3KvKernels qwen3_kv_kernels_neon = {"neon", dequant_groups_neon, NULL, to_f16_neon, from_f16_neon};
