/**
 * The engines' e^x (docs/numerics.md#exp-softmax-and-silu): the fp32 steps of the C
 * engine's qwen3_exp_ref (csrc/src/kernels_exp_loops.h), each rounded to fp32, so both engines
 * get the same bits from the same input.
 * @module
 */

const fround = Math.fround;
const bits = new Uint32Array(1);
const float = new Float32Array(bits.buffer);

const MAGIC = 1.5 * 2 ** 23; // adding it rounds to an integer
const MAGIC_BITS = 0x4b400000;
const LOG2E = fround(1.4426950408889634); // 0x1.715476p+0
const LN2_HI = 0.693145751953125; // 0x1.62e4p-1: ln 2 to 16 significant bits
const LN2_LO = fround(1.428606765330187e-6); // 0x1.7f7d1cp-20: ln 2 - LN2_HI
const C3 = fround(1 / 6);
const C4 = fround(1 / 24);
const C5 = fround(1 / 120);
const C6 = fround(1 / 720);
const C7 = fround(1 / 5040);

/** e^x of an fp32 `x`, as an fp32 value (within about 1 ulp of the exact e^x). */
export function exp32(x: number): number {
  x = fround(x);
  if (x < -120) x = -120;
  if (x > 100) x = 100;
  const shifted = fround(fround(x * LOG2E) + MAGIC);
  const kf = fround(shifted - MAGIC);
  const r = fround(fround(x - fround(kf * LN2_HI)) - fround(kf * LN2_LO));
  let p = C7;
  p = fround(fround(p * r) + C6);
  p = fround(fround(p * r) + C5);
  p = fround(fround(p * r) + C4);
  p = fround(fround(p * r) + C3);
  p = fround(fround(p * r) + 0.5);
  p = fround(fround(p * fround(r * r)) + r);
  p = fround(p + 1);
  // 2^k = 2^k1 * 2^k2 from exponent bits, k1 = floor(k / 2) (C's comment explains why).
  float[0] = shifted;
  const k = (bits[0] - MAGIC_BITS) | 0;
  const k1 = k >> 1, k2 = k - k1;
  bits[0] = (k1 + 127) << 23;
  const s1 = float[0];
  bits[0] = (k2 + 127) << 23;
  const s2 = float[0];
  return fround(fround(p * s1) * s2);
}
