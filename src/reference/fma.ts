/**
 * The engines' fused multiply-add (docs/numerics.md#grouped-query-attention): `a * b + c`
 * for fp32 `a`, `b`, `c`, rounded once to fp32, as the FMA instructions of the C engine's
 * attention kernels round it; the same steps as its `qwen3_fmaf_soft`
 * (csrc/src/fmaf.h), which the C engine runs where the CPU has no FMA.
 * @module
 */

const fround = Math.fround;

/**
 * `a * b + c` with a single rounding to fp32 (round half to even), for fp32 inputs.
 *
 * The product of two fp32 values is exact in a double (24 + 24 significant bits), so the
 * only roundings are the double sum's and the final one. Rounding twice gives the single
 * rounding's result except when the double sum lands exactly halfway between two fp32
 * values while the exact sum does not: then the exact sum's side of that midpoint decides,
 * and the error of the double sum (Knuth's TwoSum, exact) tells which side it is.
 *
 * @example
 * ```ts
 * import { fmaf } from "./fma.ts";
 *
 * // 2^-25 (1 + 2^-23) * (1 - 2^-23) + c: the double sum is halfway between two fp32
 * // values, so rounding it again would go up; the exact sum is just below
 * const c = Math.fround(0.7083912491798401);
 * console.log(fmaf(2 ** -25 * (1 + 2 ** -23), 1 - 2 ** -23, c) === c); // true
 * console.log(Math.fround(2 ** -25 * (1 + 2 ** -23) * (1 - 2 ** -23) + c) === c); // false
 * ```
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = fround(s);
  if (r === s) return r; // the double sum is an fp32 value: no midpoint lies nearer the exact sum
  const d = s - r; // exact (Sterbenz)
  const other = r + 2 * d; // exact; an fp32 value exactly when s is halfway between r and it
  if (fround(other) !== other) return r;
  const bb = s - p;
  const e = (p - (s - bb)) + (c - bb); // the exact sum is s + e
  if (e === 0) return r; // a true tie: fround's round half to even is IEEE's
  return (e > 0) === (other > r) ? other : r;
}
