/**
 * Q8 quantisation per group (docs/numerics.md#w8a8-quantisation): the one implementation shared by the
 * checkpoint writers (weights) and the TypeScript engine (activations).
 * @module
 */

import { Qwen3Error } from "../errors.ts";

/** Int8 values and one fp32 scale per group of `groupSize` consecutive values. */
export interface Q8Data {
  /** Quantised values in [-127, 127]. */
  q: Int8Array;
  /** One scale per group: value ~= q * scale. */
  s: Float32Array;
}

const fround = Math.fround;

/**
 * Quantises `values` per group of `groupSize` into caller-owned buffers, with the C engine's
 * fp32 steps (csrc/src/quant.c): `scale = max|x| / 127` rounded to fp32, then
 * `q = roundf(x / scale)` (half away from zero) of the fp32 quotient. A group of zeros gets
 * scale 0 and q 0, so nothing is ever divided by zero and the scale stays finite.
 * `q` must hold `values.length` and `s` `values.length / groupSize` entries.
 *
 * @example
 * ```ts
 * import { quantizeQ8Into } from "./quant.ts";
 * const q = new Int8Array(4), s = new Float32Array(2);
 * quantizeQ8Into(new Float32Array([1, -0.5, 0, 0]), 2, q, s);
 * // q = [127, -64, 0, 0], s = [1 / 127, 0]
 * ```
 */
export function quantizeQ8Into(
  values: ArrayLike<number>,
  groupSize: number,
  q: Int8Array,
  s: Float32Array,
): void {
  const n = values.length;
  const nGroups = n / groupSize;
  for (let g = 0; g < nGroups; g++) {
    const base = g * groupSize;
    const end = base + groupSize;
    let max = 0;
    for (let i = base; i < end; i++) {
      const a = Math.abs(values[i]);
      if (a > max) max = a;
    }
    // Inputs are fp32 values, so max is one too; the division is the fp32 one.
    const scale = fround(fround(max) / 127);
    s[g] = scale;
    if (scale === 0) {
      q.fill(0, base, end);
      continue;
    }
    for (let i = base; i < end; i++) {
      const v = fround(fround(values[i]) / scale);
      // roundf: half away from zero (Math.round would take -2.5 to -2).
      q[i] = v < 0 ? -Math.floor(0.5 - v) : Math.floor(v + 0.5);
    }
  }
}

/**
 * Quantises `values` (length a multiple of `groupSize`) into new arrays; see
 * {@link quantizeQ8Into} for the exact rules. Throws a Qwen3Error "invalid_argument" when
 * the group size is not a positive integer dividing the length.
 *
 * @example
 * ```ts
 * import { quantizeQ8 } from "./quant.ts";
 * const { q, s } = quantizeQ8(new Float32Array([0.5, -1, 0.25, 0.125]), 4);
 * console.log(q, s); // Int8Array [64, -127, 32, 16], Float32Array [1 / 127]
 * ```
 */
export function quantizeQ8(values: ArrayLike<number>, groupSize: number): Q8Data {
  if (!Number.isInteger(groupSize) || groupSize <= 0 || values.length % groupSize !== 0) {
    throw new Qwen3Error(
      "invalid_argument",
      `quantizeQ8: group size ${groupSize} must be a positive integer dividing the length ${values.length}`,
    );
  }
  const q = new Int8Array(values.length);
  const s = new Float32Array(values.length / groupSize);
  quantizeQ8Into(values, groupSize, q, s);
  return { q, s };
}
