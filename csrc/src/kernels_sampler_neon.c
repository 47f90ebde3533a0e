/* kernels_sampler_neon.c - the sampler's softmax (kernels.h: sampler_softmax) with AdvSIMD, for
 * the aarch64 tiers: kernels_sampler_avx512.c's steps (read its comment) two double lanes at a
 * time, four floats per step. Every lane does the reference's operations in its order (no
 * fused multiply-add: the build has -ffp-contract=off), so the bits are the reference's.
 * AdvSIMD's fmax returns NaN when either input is NaN, where the reference skips NaN, so the
 * maxima here are a compare and a select instead. */
#include <arm_neon.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "sampler.h"

/* qwen3_sampler_exp of 2 doubles (fp32 values widened), none NaN, before the -104 cut. */
static inline float32x2_t exp2_lanes(float64x2_t x) {
    const float64x2_t magic = vdupq_n_f64(QWEN3_SAMPLER_EXP_MAGIC);
    const float64x2_t m = vsubq_f64(vaddq_f64(vmulq_f64(x, vdupq_n_f64(QWEN3_SAMPLER_EXP_SCALE)), magic), magic);
    const float64x2_t r = vsubq_f64(vsubq_f64(x, vmulq_f64(m, vdupq_n_f64(QWEN3_SAMPLER_EXP_LN2_32_HI))),
                                    vmulq_f64(m, vdupq_n_f64(QWEN3_SAMPLER_EXP_LN2_32_LO)));
    float64x2_t poly = vmulq_f64(r, vdupq_n_f64(1.0 / 120.0));
    poly = vmulq_f64(r, vaddq_f64(vdupq_n_f64(1.0 / 24.0), poly));
    poly = vmulq_f64(r, vaddq_f64(vdupq_n_f64(1.0 / 6.0), poly));
    poly = vmulq_f64(r, vaddq_f64(vdupq_n_f64(1.0 / 2.0), poly));
    poly = vmulq_f64(r, vaddq_f64(vdupq_n_f64(1.0), poly));
    poly = vaddq_f64(vdupq_n_f64(1.0), poly);
    /* m = 32 k + j (fcvtzs saturates out-of-range lanes, which the caller replaces by 0) */
    const int64x2_t mi = vcvtq_s64_f64(m);
    const int64x2_t j = vandq_s64(mi, vdupq_n_s64(31));
    const int64x2_t k = vshrq_n_s64(vsubq_s64(mi, j), 5);
    const uint64x2_t pow2 = vshlq_n_u64(vreinterpretq_u64_s64(vaddq_s64(k, vdupq_n_s64(1023))), 52);
    float64x2_t t = vdupq_n_f64(qwen3_sampler_exp2_j32[vgetq_lane_s64(j, 0)]);
    t = vsetq_lane_f64(qwen3_sampler_exp2_j32[vgetq_lane_s64(j, 1)], t, 1);
    return vcvt_f32_f64(vmulq_f64(vmulq_f64(vreinterpretq_f64_u64(pow2), t), poly));
}

/* qwen3_sampler_exp of 4 floats, none NaN. */
static inline float32x4_t exp4(float32x4_t xf) {
    const float32x4_t e = vcombine_f32(exp2_lanes(vcvt_f64_f32(vget_low_f32(xf))), exp2_lanes(vcvt_high_f64_f32(xf)));
    return vbslq_f32(vcleq_f32(xf, vdupq_n_f32(-104.0f)), vdupq_n_f32(0.0f), e);
}

/* top = v where v > top, lane by lane (NaN v never wins). */
static inline float32x4_t keep_larger(float32x4_t top, float32x4_t v) { return vbslq_f32(vcgtq_f32(v, top), v, top); }

float qwen3_sampler_softmax_neon(float* p, const float* z, uint32_t n, float t) {
    float32x4_t top = vdupq_n_f32(-INFINITY);
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) top = keep_larger(top, vld1q_f32(z + i));
    float zmax = vmaxvq_f32(top);
    for (; i < n; i++) {
        if (z[i] > zmax) zmax = z[i];
    }
    const float m = zmax / t;
    if (!(m > -INFINITY && m < INFINITY)) return qwen3_sampler_softmax_ref(p, z, n, t);

    const float32x4_t vt = vdupq_n_f32(t), vm = vdupq_n_f32(m);
    float sum = 0.0f;
    for (i = 0; i + 4 <= n; i += 4) {
        const float32x4_t x = vsubq_f32(vdivq_f32(vld1q_f32(z + i), vt), vm);
        if (vminvq_u32(vceqq_f32(x, x)) == 0) { /* a NaN lane */
            float xs[4];
            vst1q_f32(xs, x);
            for (int l = 0; l < 4; l++) p[i + l] = qwen3_sampler_exp(xs[l]);
        } else {
            vst1q_f32(p + i, exp4(x));
        }
        for (int l = 0; l < 4; l++) sum += p[i + l];
    }
    for (; i < n; i++) {
        p[i] = qwen3_sampler_exp(z[i] / t - m);
        sum += p[i];
    }

    const float32x4_t vs = vdupq_n_f32(sum);
    float32x4_t best = vdupq_n_f32(0.0f);
    for (i = 0; i + 4 <= n; i += 4) {
        const float32x4_t q = vdivq_f32(vld1q_f32(p + i), vs);
        vst1q_f32(p + i, q);
        best = keep_larger(best, q);
    }
    float pmax = vmaxvq_f32(best);
    for (; i < n; i++) {
        p[i] = p[i] / sum;
        if (p[i] > pmax) pmax = p[i];
    }
    return pmax;
}
