/* kernels_sampler_avx512.c - the sampler's softmax (kernels.h: sampler_softmax) with AVX-512,
 * for the avx512vnni and amx tiers.
 *
 * The reference (sampler.c) spends most of a pick of 151936 logits on qwen3_sampler_exp, one
 * double-precision evaluation per token, and on two scalar divisions per token. Here eight
 * lanes run the same double steps (multiplies and adds as separate instructions, the 2^(j/32)
 * table from two vpermt2pd, the same truncations and bit tricks), so each lane gets the
 * reference's bits; the divisions and maxima are 16 lanes wide. The sum stays one running fp32
 * sum in index order, as the contract fixes it: its chain of dependent adds is what the loop
 * waits on, and the exps of the next lanes run beside it.
 *
 * The largest p = z / t is found as the largest z divided once by t: division by a positive t
 * rounds monotonically, so it is the same value (qwen3_argmax's, NaN skipped). When it is not
 * finite (every z is NaN or -inf, or +inf or an overflow is present) the reference runs
 * instead; lanes whose p - m is NaN take the reference's exp one by one.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "sampler.h"

#define TARGET __attribute__((target("avx512f,avx512vl,evex512")))

/* qwen3_sampler_exp of 8 floats, none NaN (kernels.h: the same steps, lane by lane). */
TARGET static inline __m256 exp8(__m256 xf, const __m512d table[4]) {
    const __m512d x = _mm512_cvtps_pd(xf);
    const __m512d magic = _mm512_set1_pd(QWEN3_SAMPLER_EXP_MAGIC);
    const __m512d m =
        _mm512_sub_pd(_mm512_add_pd(_mm512_mul_pd(x, _mm512_set1_pd(QWEN3_SAMPLER_EXP_SCALE)), magic), magic);
    const __m512d r = _mm512_sub_pd(_mm512_sub_pd(x, _mm512_mul_pd(m, _mm512_set1_pd(QWEN3_SAMPLER_EXP_LN2_32_HI))),
                                    _mm512_mul_pd(m, _mm512_set1_pd(QWEN3_SAMPLER_EXP_LN2_32_LO)));
    /* 1 + r (1 + r (1/2 + r (1/6 + r (1/24 + r / 120)))), innermost first */
    __m512d poly = _mm512_mul_pd(r, _mm512_set1_pd(1.0 / 120.0));
    poly = _mm512_mul_pd(r, _mm512_add_pd(_mm512_set1_pd(1.0 / 24.0), poly));
    poly = _mm512_mul_pd(r, _mm512_add_pd(_mm512_set1_pd(1.0 / 6.0), poly));
    poly = _mm512_mul_pd(r, _mm512_add_pd(_mm512_set1_pd(1.0 / 2.0), poly));
    poly = _mm512_mul_pd(r, _mm512_add_pd(_mm512_set1_pd(1.0), poly));
    poly = _mm512_add_pd(_mm512_set1_pd(1.0), poly);
    /* m = 32 k + j; lanes at or below -104 (where m is out of range, -inf included) are
     * replaced by 0 at the end */
    const __m256i mi = _mm512_cvttpd_epi32(m);
    const __m256i j = _mm256_and_si256(mi, _mm256_set1_epi32(31));
    const __m256i k = _mm256_srai_epi32(_mm256_sub_epi32(mi, j), 5);
    const __m512i pow2 =
        _mm512_slli_epi64(_mm512_add_epi64(_mm512_cvtepi32_epi64(k), _mm512_set1_epi64(1023)), 52);
    const __m512i j64 = _mm512_cvtepi32_epi64(j);
    const __m512d low = _mm512_permutex2var_pd(table[0], j64, table[1]);   /* j 0 .. 15 */
    const __m512d high = _mm512_permutex2var_pd(table[2], j64, table[3]);  /* j 16 .. 31 */
    const __m512d t = _mm512_mask_blend_pd(_mm512_test_epi64_mask(j64, _mm512_set1_epi64(16)), low, high);
    const __m256 e = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_mul_pd(_mm512_castsi512_pd(pow2), t), poly));
    return _mm256_mask_blend_ps(_mm256_cmp_ps_mask(xf, _mm256_set1_ps(-104.0f), _CMP_LE_OQ), e,
                                _mm256_setzero_ps());
}

TARGET float qwen3_sampler_softmax_avx512(float* p, const float* z, uint32_t n, float t) {
    __m512 top = _mm512_set1_ps(-INFINITY);
    uint32_t i = 0;
    for (; i + 16 <= n; i += 16) top = _mm512_max_ps(_mm512_loadu_ps(z + i), top); /* NaN z: top */
    if (i < n) {
        const __mmask16 live = (__mmask16)((1u << (n - i)) - 1);
        top = _mm512_mask_max_ps(top, live, _mm512_maskz_loadu_ps(live, z + i), top);
    }
    const float m = _mm512_reduce_max_ps(top) / t;
    if (!(m > -INFINITY && m < INFINITY)) return qwen3_sampler_softmax_ref(p, z, n, t);

    __m512d table[4];
    for (int q = 0; q < 4; q++) table[q] = _mm512_loadu_pd(qwen3_sampler_exp2_j32 + 8 * q);
    const __m256 vt = _mm256_set1_ps(t), vm = _mm256_set1_ps(m);
    float sum = 0.0f;
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_sub_ps(_mm256_div_ps(_mm256_loadu_ps(z + i), vt), vm);
        if (_mm256_cmp_ps_mask(x, x, _CMP_UNORD_Q)) {
            float xs[8];
            _mm256_storeu_ps(xs, x);
            for (int l = 0; l < 8; l++) p[i + l] = qwen3_sampler_exp(xs[l]);
        } else {
            _mm256_storeu_ps(p + i, exp8(x, table));
        }
        for (int l = 0; l < 8; l++) sum += p[i + l];
    }
    for (; i < n; i++) {
        p[i] = qwen3_sampler_exp(z[i] / t - m);
        sum += p[i];
    }

    const __m512 vs = _mm512_set1_ps(sum);
    __m512 best = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 q = _mm512_div_ps(_mm512_loadu_ps(p + i), vs);
        _mm512_storeu_ps(p + i, q);
        best = _mm512_max_ps(q, best); /* NaN q: best */
    }
    if (i < n) {
        const __mmask16 live = (__mmask16)((1u << (n - i)) - 1);
        const __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(live, p + i), vs);
        _mm512_mask_storeu_ps(p + i, live, q);
        best = _mm512_mask_max_ps(best, live, q, best);
    }
    return _mm512_reduce_max_ps(best);
}
