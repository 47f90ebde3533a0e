/*
 * rope.c - RoPE's frequencies and angles in double arithmetic with a fixed order of IEEE
 * operations (rope.h). The C library is built with -ffp-contract=off, so no step is fused;
 * src/reference/rope.ts repeats every step, constant and loop bound.
 *
 * The constants are facts, not code: pi/2 split into 33-bit pieces (fdlibm's pio2_1,
 * pio2_2, pio2_3 and the tail pio2_3t), ln 2 split the same way (ln2_hi, ln2_lo), and the
 * reciprocal factorials and odd reciprocals of the Taylor series, each one division that
 * C and JavaScript both round correctly.
 */
#include "rope.h"

#include <stdint.h>
#include <string.h>

#define PIO2_1 1.57079632673412561417e+00  /* first 33 bits of pi/2 */
#define PIO2_2 6.07710050630396597660e-11  /* next 33 bits */
#define PIO2_3 2.02226624871116645580e-21  /* next 33 bits */
#define PIO2_3T 8.47842766036889956997e-32 /* pi/2 - (PIO2_1 + PIO2_2 + PIO2_3) */
#define INV_PIO2 6.36619772367581382433e-01 /* 2/pi */
#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10
#define INV_LN2 1.44269504088896338700e+00
#define ROUND_MAGIC 6755399441055744.0 /* 1.5 * 2^52: x + it - it rounds x to an integer */

static double pow2i(int k) { /* 2^k, exact, for -1022 <= k <= 1023 */
    const uint64_t bits = (uint64_t)(k + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* e^y for |y| < 700: y = k ln2 + r, |r| <= ln2 / 2, Taylor to r^16 / 16!. */
static double exp_d(double y) {
    const double k = (y * INV_LN2 + ROUND_MAGIC) - ROUND_MAGIC;
    const double r = (y - k * LN2_HI) - k * LN2_LO;
    double p = 1.0 / 20922789888000.0; /* 1 / 16! */
    static const double inv_fact[16] = {
        1.0 / 1307674368000.0, 1.0 / 87178291200.0, 1.0 / 6227020800.0, 1.0 / 479001600.0,
        1.0 / 39916800.0,      1.0 / 3628800.0,     1.0 / 362880.0,     1.0 / 40320.0,
        1.0 / 5040.0,          1.0 / 720.0,         1.0 / 120.0,        1.0 / 24.0,
        1.0 / 6.0,             1.0 / 2.0,           1.0,                1.0,
    };
    for (int i = 0; i < 16; i++) p = p * r + inv_fact[i];
    return p * pow2i((int)k);
}

/* ln(x) for a normal fp32 x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
 * ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, the series to s^25 / 25. */
static double log_f(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int e = (int)((bits >> 23) & 0xffu) - 127;
    const uint32_t mbits = (bits & 0x7fffffu) | 0x3f800000u; /* m in [1, 2) */
    float mf;
    memcpy(&mf, &mbits, sizeof mf);
    double m = (double)mf;
    if (m > 1.4142135623730951) {
        m = m * 0.5;
        e = e + 1;
    }
    const double s = (m - 1.0) / (m + 1.0), z = s * s;
    double p = 1.0 / 25.0;
    for (int n = 23; n >= 1; n -= 2) p = p * z + 1.0 / (double)n;
    return (double)e * LN2_HI + ((double)e * LN2_LO + 2.0 * s * p);
}

float qwen3_rope_pow(float theta, float e) {
    if (e == 0.0f) return 1.0f;
    return (float)exp_d((double)e * log_f(theta));
}

void qwen3_rope_sincos(float x, float* cos_out, float* sin_out) {
    const double xd = (double)x;
    const double k = (xd * INV_PIO2 + ROUND_MAGIC) - ROUND_MAGIC; /* nearest multiple of pi/2 */
    const double r = (((xd - k * PIO2_1) - k * PIO2_2) - k * PIO2_3) - k * PIO2_3T; /* |r| <= pi/4 */
    const double z = r * r;
    /* sin r = r - r^3/3! + ... - r^15/15!, cos r = 1 - r^2/2! + ... + r^16/16! */
    double s = -1.0 / 1307674368000.0, c = 1.0 / 20922789888000.0;
    static const double sin_coef[7] = {1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0, -1.0 / 5040.0,
                                       1.0 / 120.0,        -1.0 / 6.0,        1.0};
    static const double cos_coef[8] = {-1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0, 1.0 / 40320.0,
                                       -1.0 / 720.0,         1.0 / 24.0,        -1.0 / 2.0,       1.0};
    for (int i = 0; i < 7; i++) s = s * z + sin_coef[i];
    for (int i = 0; i < 8; i++) c = c * z + cos_coef[i];
    s = s * r;
    double co, si;
    switch ((int64_t)k & 3) {
    case 0: co = c; si = s; break;
    case 1: co = -s; si = c; break;
    case 2: co = -c; si = -s; break;
    default: co = s; si = -c; break;
    }
    *cos_out = (float)co;
    *sin_out = (float)si;
}
