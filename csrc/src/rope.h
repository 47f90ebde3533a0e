/*
 * rope.h - RoPE's frequencies and angles (docs/numerics.md#rope) from IEEE double additions,
 * multiplications and divisions only, in a fixed order: no libm. The C library's powf,
 * cosf and sinf and JavaScript's Math.pow, Math.cos and Math.sin may differ in the last
 * bit (Zig's sinf and V8's Math.sin do, at position 4 of a 32-wide head), and one flipped
 * bit in a query can move an int8 activation across a rounding edge; src/reference/rope.ts
 * takes exactly these steps, so both engines rotate by the same fp32 cos and sin.
 */
#ifndef QWEN3_ROPE_H
#define QWEN3_ROPE_H

/* theta^e for fp32 theta > 0 and e in [-1, 0], as exp(e * ln(theta)) in double, rounded
 * to fp32 (within 1 fp32 ulp of the exact power). */
float qwen3_rope_pow(float theta, float e);

/* cos(x) and sin(x) of an fp32 angle x >= 0, each rounded to fp32 (within 1 fp32 ulp for
 * |x| < 2^20; deterministic, and still far under an ulp off, above that). */
void qwen3_rope_sincos(float x, float* cos_out, float* sin_out);

#endif
