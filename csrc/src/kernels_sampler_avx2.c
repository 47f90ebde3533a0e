/* kernels_sampler_avx2.c - the sampler's softmax (kernels.h: sampler_softmax) with AVX2, for
 * the avx2 and avxvnni tiers: kernels_sampler_avx512.c's steps (read its comment) four double
 * lanes at a time, the 2^(j/32) table through a gather. Every lane does the reference's
 * operations in its order, so the bits are the reference's. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "sampler.h"

#define TARGET_AVX2 __attribute__((target("avx2")))

/* qwen3_sampler_exp of 4 floats, none NaN. */
TARGET_AVX2 static inline __m128 exp4(__m128 xf) {
    const __m256d x = _mm256_cvtps_pd(xf);
    const __m256d magic = _mm256_set1_pd(QWEN3_SAMPLER_EXP_MAGIC);
    const __m256d m =
        _mm256_sub_pd(_mm256_add_pd(_mm256_mul_pd(x, _mm256_set1_pd(QWEN3_SAMPLER_EXP_SCALE)), magic), magic);
    const __m256d r = _mm256_sub_pd(_mm256_sub_pd(x, _mm256_mul_pd(m, _mm256_set1_pd(QWEN3_SAMPLER_EXP_LN2_32_HI))),
                                    _mm256_mul_pd(m, _mm256_set1_pd(QWEN3_SAMPLER_EXP_LN2_32_LO)));
    __m256d poly = _mm256_mul_pd(r, _mm256_set1_pd(1.0 / 120.0));
    poly = _mm256_mul_pd(r, _mm256_add_pd(_mm256_set1_pd(1.0 / 24.0), poly));
    poly = _mm256_mul_pd(r, _mm256_add_pd(_mm256_set1_pd(1.0 / 6.0), poly));
    poly = _mm256_mul_pd(r, _mm256_add_pd(_mm256_set1_pd(1.0 / 2.0), poly));
    poly = _mm256_mul_pd(r, _mm256_add_pd(_mm256_set1_pd(1.0), poly));
    poly = _mm256_add_pd(_mm256_set1_pd(1.0), poly);
    /* lanes at or below -104 get an out-of-range m here (a gather index masked to 0 .. 31
     * all the same) and are replaced by 0 at the end */
    const __m128i mi = _mm256_cvttpd_epi32(m);
    const __m128i j = _mm_and_si128(mi, _mm_set1_epi32(31));
    const __m128i k = _mm_srai_epi32(_mm_sub_epi32(mi, j), 5);
    const __m256i pow2 =
        _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k), _mm256_set1_epi64x(1023)), 52);
    const __m256d t = _mm256_i32gather_pd(qwen3_sampler_exp2_j32, j, 8);
    const __m128 e = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_mul_pd(_mm256_castsi256_pd(pow2), t), poly));
    return _mm_blendv_ps(e, _mm_setzero_ps(), _mm_cmple_ps(xf, _mm_set1_ps(-104.0f)));
}

/* The largest of 8 lanes holding no NaN. */
TARGET_AVX2 static inline float max8(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

TARGET_AVX2 float qwen3_sampler_softmax_avx2(float* p, const float* z, uint32_t n, float t) {
    __m256 top = _mm256_set1_ps(-INFINITY);
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) top = _mm256_max_ps(_mm256_loadu_ps(z + i), top); /* NaN z: top */
    float zmax = max8(top);
    for (; i < n; i++) {
        if (z[i] > zmax) zmax = z[i];
    }
    const float m = zmax / t;
    if (!(m > -INFINITY && m < INFINITY)) return qwen3_sampler_softmax_ref(p, z, n, t);

    const __m128 vt = _mm_set1_ps(t), vm = _mm_set1_ps(m);
    float sum = 0.0f;
    for (i = 0; i + 4 <= n; i += 4) {
        const __m128 x = _mm_sub_ps(_mm_div_ps(_mm_loadu_ps(z + i), vt), vm);
        if (_mm_movemask_ps(_mm_cmpunord_ps(x, x))) {
            float xs[4];
            _mm_storeu_ps(xs, x);
            for (int l = 0; l < 4; l++) p[i + l] = qwen3_sampler_exp(xs[l]);
        } else {
            _mm_storeu_ps(p + i, exp4(x));
        }
        for (int l = 0; l < 4; l++) sum += p[i + l];
    }
    for (; i < n; i++) {
        p[i] = qwen3_sampler_exp(z[i] / t - m);
        sum += p[i];
    }

    const __m256 vs = _mm256_set1_ps(sum);
    __m256 best = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 q = _mm256_div_ps(_mm256_loadu_ps(p + i), vs);
        _mm256_storeu_ps(p + i, q);
        best = _mm256_max_ps(q, best); /* NaN q: best */
    }
    float pmax = max8(best);
    for (; i < n; i++) {
        p[i] = p[i] / sum;
        if (p[i] > pmax) pmax = p[i];
    }
    return pmax;
}
