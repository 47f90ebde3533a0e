/**
 * RoPE's frequencies and angles (docs/numerics.md#rope), step for step as the C engine's
 * csrc/src/rope.c: IEEE double additions, multiplications and divisions in a fixed order,
 * rounded to fp32 at the end, so both engines rotate by the same bits. `Math.pow`,
 * `Math.cos` and `Math.sin` are not used: they and the C library may differ in the last
 * bit. The constants are rope.c's (pi/2 and ln 2 in 33-bit pieces, reciprocal factorials).
 * @module
 */

const fround = Math.fround;

const PIO2_1 = 1.57079632673412561417e+00;
const PIO2_2 = 6.07710050630396597660e-11;
const PIO2_3 = 2.02226624871116645580e-21;
const PIO2_3T = 8.47842766036889956997e-32;
const INV_PIO2 = 6.36619772367581382433e-01;
const LN2_HI = 6.93147180369123816490e-01;
const LN2_LO = 1.90821492927058770002e-10;
const INV_LN2 = 1.44269504088896338700e+00;
const ROUND_MAGIC = 6755399441055744.0; // 1.5 * 2^52

const EXP_COEF = [
  1 / 1307674368000,
  1 / 87178291200,
  1 / 6227020800,
  1 / 479001600,
  1 / 39916800,
  1 / 3628800,
  1 / 362880,
  1 / 40320,
  1 / 5040,
  1 / 720,
  1 / 120,
  1 / 24,
  1 / 6,
  1 / 2,
  1,
  1,
];
const SIN_COEF = [1 / 6227020800, -1 / 39916800, 1 / 362880, -1 / 5040, 1 / 120, -1 / 6, 1];
const COS_COEF = [
  -1 / 87178291200,
  1 / 479001600,
  -1 / 3628800,
  1 / 40320,
  -1 / 720,
  1 / 24,
  -1 / 2,
  1,
];

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const f64 = new Float64Array(1);
const u64 = new Uint32Array(f64.buffer); // little-endian halves: [low, high]

/** 2^k, exact, for -1022 <= k <= 1023. */
function pow2i(k: number): number {
  u64[0] = 0;
  u64[1] = (k + 1023) << 20;
  return f64[0];
}

/** e^y for |y| < 700 (rope.c's exp_d). */
function expD(y: number): number {
  const k = (y * INV_LN2 + ROUND_MAGIC) - ROUND_MAGIC;
  const r = (y - k * LN2_HI) - k * LN2_LO;
  let p = 1 / 20922789888000;
  for (let i = 0; i < 16; i++) p = p * r + EXP_COEF[i];
  return p * pow2i(k);
}

/** ln x for a normal fp32 x > 0 (rope.c's log_f). */
function logF(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  let e = ((bits >>> 23) & 0xff) - 127;
  u32[0] = (bits & 0x7fffff) | 0x3f800000;
  let m = f32[0];
  if (m > 1.4142135623730951) {
    m = m * 0.5;
    e = e + 1;
  }
  const s = (m - 1) / (m + 1), z = s * s;
  let p = 1 / 25;
  for (let n = 23; n >= 1; n -= 2) p = p * z + 1 / n;
  return e * LN2_HI + (e * LN2_LO + 2 * s * p);
}

/**
 * theta^e for fp32 theta > 0 and e in [-1, 0], rounded to fp32 (csrc/src/rope.h's
 * `qwen3_rope_pow`).
 *
 * @example
 * ```ts
 * import { ropePow } from "./rope.ts";
 *
 * console.log(ropePow(Math.fround(1e6), -0.5)); // 0.0010000000474974513, fp32 0.001
 * ```
 */
export function ropePow(theta: number, e: number): number {
  if (e === 0) return 1;
  return fround(expD(e * logF(theta)));
}

/**
 * cos x and sin x of an fp32 angle x >= 0, each rounded to fp32 (csrc/src/rope.h's
 * `qwen3_rope_sincos`).
 *
 * @returns `[cos x, sin x]`.
 */
export function ropeSinCos(x: number): [number, number] {
  const k = (x * INV_PIO2 + ROUND_MAGIC) - ROUND_MAGIC;
  const r = (((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3) - k * PIO2_3T;
  const z = r * r;
  let s = -1 / 1307674368000, c = 1 / 20922789888000;
  for (let i = 0; i < 7; i++) s = s * z + SIN_COEF[i];
  for (let i = 0; i < 8; i++) c = c * z + COS_COEF[i];
  s = s * r;
  switch (k % 4) {
    case 0:
      return [fround(c), fround(s)];
    case 1:
      return [fround(-s), fround(c)];
    case 2:
      return [fround(-c), fround(-s)];
    default:
      return [fround(s), fround(-c)];
  }
}
