/**
 * The 32-value ggml block types Q4_1, Q5_0 and Q5_1: quantisation as llama.cpp's reference
 * functions define it (`quantize_row_q4_1_ref`, `quantize_row_q5_0_ref`,
 * `quantize_row_q5_1_ref` in ggml/src/ggml-quants.c, the ones `llama_model_quantize` runs when
 * no importance matrix is given); the engines' dequantiser, for these and every block type, is
 * ggml_types.ts. Every step is evaluated in
 * fp32, in the C source's order (`Math.fround` after each operation), so the blocks equal
 * llama.cpp's byte for byte (docs/formats.md#quantised-gguf-exports; the layouts are in
 * docs/formats.md#ggml-block-layouts).
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import { toHalf } from "./gguf.ts";
import { BLOCK, QK_32 } from "./kquant_blocks.ts";

const f = Math.fround;
const FLT_MAX = 3.4028234663852886e38;

/** Throws unless `n` values fill whole blocks of `per`. */
export function checkWholeBlocks(type: string, n: number, per: number): void {
  if (n % per !== 0) {
    throw new Qwen3Error("invalid_argument", `${type} needs a multiple of ${per} values, got ${n}`);
  }
}

/** Output buffer for `blocks` blocks of `bytes`, or `out` checked for size. */
export function blockOutput(
  type: string,
  blocks: number,
  bytes: number,
  out?: Uint8Array,
): Uint8Array {
  if (!out) return new Uint8Array(blocks * bytes);
  if (out.length < blocks * bytes) {
    throw new Qwen3Error(
      "invalid_argument",
      `${type}: output of ${out.length} bytes is smaller than the ${blocks * bytes} needed`,
    );
  }
  return out;
}

/** Min and max of a block, as the C loop finds them (NaN never replaces a value). */
function minMax(x: Float32Array, o: number, n: number): [number, number] {
  let min = FLT_MAX;
  let max = -FLT_MAX;
  for (let j = 0; j < n; j++) {
    const v = x[o + j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return [min, max];
}

/**
 * Quantises fp32 values to Q4_1 blocks: per 32 values d = (max - min) / 15 and m = min as
 * fp16, q = min(15, trunc((x - min) / d + 0.5)).
 *
 * @param values The values (whole rows, back to back).
 * @param out Where to write the blocks (default: a new array, 20 bytes per 32 values).
 * @returns The blocks (`out` when given).
 * @throws {Qwen3Error} `invalid_argument` when the count is not a multiple of 32.
 */
export function quantizeQ4_1(values: Float32Array, out?: Uint8Array): Uint8Array {
  const B = BLOCK.Q4_1;
  checkWholeBlocks("Q4_1", values.length, QK_32);
  const blocks = values.length / QK_32;
  const dst = blockOutput("Q4_1", blocks, B.bytes, out);
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  for (let b = 0; b < blocks; b++) {
    const x = b * QK_32;
    const o = b * B.bytes;
    const [min, max] = minMax(values, x, QK_32);
    const d = f(f(max - min) / 15);
    const id = d ? f(1 / d) : 0;
    view.setUint16(o + B.d, toHalf(d), true);
    view.setUint16(o + B.m, toHalf(min), true);
    for (let j = 0; j < QK_32 / 2; j++) {
      const x0 = f(f(values[x + j] - min) * id);
      const x1 = f(f(values[x + j + 16] - min) * id);
      const q0 = Math.min(15, Math.trunc(f(x0 + 0.5)));
      const q1 = Math.min(15, Math.trunc(f(x1 + 0.5)));
      dst[o + B.qs + j] = q0 | (q1 << 4);
    }
  }
  return dst;
}

/**
 * Quantises fp32 values to Q5_0 blocks: per 32 values d = max / -16 (max: the value of the
 * largest magnitude, the first one on a tie) as fp16, q = min(31, trunc(x / d + 16.5)).
 *
 * @param values The values (whole rows, back to back).
 * @param out Where to write the blocks (default: a new array, 22 bytes per 32 values).
 * @returns The blocks (`out` when given).
 * @throws {Qwen3Error} `invalid_argument` when the count is not a multiple of 32.
 */
export function quantizeQ5_0(values: Float32Array, out?: Uint8Array): Uint8Array {
  const B = BLOCK.Q5_0;
  checkWholeBlocks("Q5_0", values.length, QK_32);
  const blocks = values.length / QK_32;
  const dst = blockOutput("Q5_0", blocks, B.bytes, out);
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  for (let b = 0; b < blocks; b++) {
    const x = b * QK_32;
    const o = b * B.bytes;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK_32; j++) {
      const v = values[x + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = f(max / -16);
    const id = d ? f(1 / d) : 0;
    view.setUint16(o + B.d, toHalf(d), true);
    let qh = 0;
    for (let j = 0; j < QK_32 / 2; j++) {
      const q0 = Math.min(31, Math.trunc(f(f(values[x + j] * id) + 16.5)));
      const q1 = Math.min(31, Math.trunc(f(f(values[x + j + 16] * id) + 16.5)));
      dst[o + B.qs + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
      qh |= ((q0 & 0x10) >>> 4) << j;
      qh |= ((q1 & 0x10) >>> 4) << (j + 16);
    }
    view.setUint32(o + B.qh, qh >>> 0, true);
  }
  return dst;
}

/**
 * Quantises fp32 values to Q5_1 blocks: per 32 values d = (max - min) / 31 and m = min as
 * fp16, q = trunc((x - min) / d + 0.5).
 *
 * @param values The values (whole rows, back to back).
 * @param out Where to write the blocks (default: a new array, 24 bytes per 32 values).
 * @returns The blocks (`out` when given).
 * @throws {Qwen3Error} `invalid_argument` when the count is not a multiple of 32.
 */
export function quantizeQ5_1(values: Float32Array, out?: Uint8Array): Uint8Array {
  const B = BLOCK.Q5_1;
  checkWholeBlocks("Q5_1", values.length, QK_32);
  const blocks = values.length / QK_32;
  const dst = blockOutput("Q5_1", blocks, B.bytes, out);
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  for (let b = 0; b < blocks; b++) {
    const x = b * QK_32;
    const o = b * B.bytes;
    const [min, max] = minMax(values, x, QK_32);
    const d = f(f(max - min) / 31);
    const id = d ? f(1 / d) : 0;
    view.setUint16(o + B.d, toHalf(d), true);
    view.setUint16(o + B.m, toHalf(min), true);
    let qh = 0;
    for (let j = 0; j < QK_32 / 2; j++) {
      // C's (uint8_t) conversion: truncation, and the low 8 bits.
      const q0 = Math.trunc(f(f(f(values[x + j] - min) * id) + 0.5)) & 0xff;
      const q1 = Math.trunc(f(f(f(values[x + j + 16] - min) * id) + 0.5)) & 0xff;
      dst[o + B.qs + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
      qh |= ((q0 & 0x10) >>> 4) << j;
      qh |= ((q1 & 0x10) >>> 4) << (j + 16);
    }
    view.setUint32(o + B.qh, qh >>> 0, true);
  }
  return dst;
}

/** Output array for `n` dequantised values, or `out` checked for size. */
export function valueOutput(type: string, n: number, out?: Float32Array): Float32Array {
  if (!out) return new Float32Array(n);
  if (out.length < n) {
    throw new Qwen3Error(
      "invalid_argument",
      `${type}: output of ${out.length} values is smaller than the ${n} needed`,
    );
  }
  return out;
}

/** The number of whole blocks `bytes` holds, or an error naming the type. */
export function wholeBlocks(type: string, bytes: Uint8Array, blockBytes: number): number {
  if (bytes.length % blockBytes !== 0) {
    throw new Qwen3Error(
      "invalid_argument",
      `${type} data of ${bytes.length} bytes is not whole ${blockBytes}-byte blocks`,
    );
  }
  return bytes.length / blockBytes;
}
