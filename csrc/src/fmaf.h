/* fmaf.h - the fused multiply-add of attention's sums (docs/numerics.md#grouped-query-attention):
 * QWEN3_FMAF(a, b, c), the FMA instruction where the compiler targets it and qwen3_fmaf_soft,
 * the same rounding without it. A file whose functions carry an FMA target attribute (the
 * compiler does not define __FMA__ for those) defines QWEN3_FMAF as __builtin_fmaf before
 * including this. */
#ifndef QWEN3_FMAF_H
#define QWEN3_FMAF_H

/* a * b + c for fp32 a, b, c, rounded once to fp32 (IEEE fusedMultiplyAdd, round half to
 * even), without an FMA instruction and without libm: the fmaf that Zig links from its
 * compiler runtime rounds the double sum again, which is wrong in the rare case below.
 * The product is exact in a double (24 + 24 significant bits), so the double sum s is the
 * only rounding before the last one. Rounding s to fp32 is right unless s lies exactly
 * halfway between two fp32 values while the exact sum does not; then the exact sum's
 * side decides, and TwoSum's error term e (exact: a + b = s + e) tells which side.
 * src/reference/fma.ts is the same function for the TypeScript engine. */
static inline float qwen3_fmaf_soft(float a, float b, float c) {
    const double p = (double)a * (double)b;
    const double s = p + (double)c;
    const float r = (float)s;
    if ((double)r == s) return r;
    const double d = s - (double)r;             /* exact */
    const double other = (double)r + 2.0 * d;   /* exact; an fp32 value when s is halfway */
    if ((double)(float)other != other) return r;
    const double bb = s - p;
    const double e = (p - (s - bb)) + ((double)c - bb);
    if (e == 0.0) return r; /* a true tie: the conversion rounded half to even */
    return (e > 0.0) == (other > (double)r) ? (float)other : r;
}

#ifndef QWEN3_FMAF
#if defined(__FMA__) || defined(__aarch64__) || defined(_M_ARM64)
#define QWEN3_FMAF(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define QWEN3_FMAF(a, b, c) qwen3_fmaf_soft((a), (b), (c))
#endif
#endif

#endif
