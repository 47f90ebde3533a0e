/**
 * Reading the block formats of ggml's quantised tensor types (docs/formats.md#ggml-block-layouts):
 * each runnable type's geometry and field offsets (those of the K-quants and Q4_1 / Q5_0 / Q5_1
 * from kquant_blocks.ts, where the exporter's quantisers take them too), and the one unpacker
 * that both the weight readers and the TypeScript engine use. The formats are llama.cpp's
 * (ggml-common.h `block_q4_0` ... `block_q6_K`, dequantised as ggml-quants.c's
 * `dequantize_row_*` does); this code is written from that description, not copied.
 *
 * Every block unpacks to the same shape: per value an integer `q`, per 16 values an integer
 * multiplier `m16` (Q6_K's int8 sub-block scales; 1 elsewhere), and per 32 values an fp32
 * scale `scale` and offset `offset`, so that value i is `scale * (m16 * q) + offset`
 * (fp32 product, then fp32 sum; the offset is only added for the types that have one). The
 * products `scale` (d * sc of a K-quant) and `offset` (dmin * m) are exact in fp32, so this
 * equals ggml's own dequantisation bit for bit.
 * @module
 */

import { fromHalf, GgmlType } from "./gguf.ts";
import { BLOCK, KQuantType, QK_32 } from "./kquant_blocks.ts";
import { valueOutput, wholeBlocks } from "./block32_quants.ts";

/** The ggml type numbers of the block types the engines run natively. */
export const GgmlBlockType = {
  Q4_0: GgmlType.Q4_0,
  Q8_0: GgmlType.Q8_0,
  ...KQuantType,
} as const;

/** One block type's geometry and the byte offset of each field inside a block. */
export interface GgmlBlockLayout {
  /** ggml's name, e.g. "Q4_K". */
  name: string;
  /** Values per block (32 or 256). */
  values: number;
  /** Bytes per block. */
  bytes: number;
  /** Whether values carry an offset (`d * q + m` or `d * sc * q - dmin * m`). */
  hasOffset: boolean;
  /** Field name -> byte offset in the block (fp16 fields are little-endian codes). */
  fields: Readonly<Record<string, number>>;
}

/** A layout from kquant_blocks.ts's offsets (the one place they are written). */
function layoutOf(name: keyof typeof BLOCK, hasOffset: boolean): GgmlBlockLayout {
  const { values, bytes, ...fields } = BLOCK[name];
  return { name, values, bytes, hasOffset, fields };
}

/**
 * The layouts, by ggml type number (docs/formats.md#ggml-block-layouts; Q4_0 and Q8_0 here,
 * the others from `BLOCK` in kquant_blocks.ts):
 * - Q4_0: d f16, qs[16] (value i low nibble of qs[i], value i + 16 high nibble) - 8.
 * - Q8_0: d f16, qs[32] int8.
 * - Q4_1, Q5_1: value = d * q + m; Q5_0: q = 5 bits - 16 (qh bit i = fifth bit of value i).
 * - Q4_K / Q5_K: per 64 values, 32 low nibbles then 32 high nibbles of the same 32 bytes,
 *   Q5_K's fifth bits in bits 2j / 2j+1 of qh[l]; value = d*sc*q - dmin*m.
 * - Q6_K: per 128 values, chunks of 32 take the low nibbles of ql[0..32), ql[32..64), then
 *   their high nibbles, and bits (0,1), (2,3), (4,5), (6,7) of qh[0..32); q = 6 bits - 32,
 *   one int8 scale per 16 values.
 */
export const GGML_BLOCK_LAYOUTS: Readonly<Record<number, GgmlBlockLayout>> = {
  [GgmlBlockType.Q4_0]: {
    name: "Q4_0",
    values: QK_32,
    bytes: 18,
    hasOffset: false,
    fields: { d: 0, qs: 2 },
  },
  [GgmlBlockType.Q8_0]: {
    name: "Q8_0",
    values: QK_32,
    bytes: 34,
    hasOffset: false,
    fields: { d: 0, qs: 2 },
  },
  [GgmlBlockType.Q4_1]: layoutOf("Q4_1", true),
  [GgmlBlockType.Q5_0]: layoutOf("Q5_0", false),
  [GgmlBlockType.Q5_1]: layoutOf("Q5_1", true),
  [GgmlBlockType.Q4_K]: layoutOf("Q4_K", true),
  [GgmlBlockType.Q5_K]: layoutOf("Q5_K", true),
  [GgmlBlockType.Q6_K]: layoutOf("Q6_K", false),
};

/** A block unpacked: value i = scale[i >> 5] * (m16[i >> 4] * q[i]) + offset[i >> 5]. */
export interface UnpackedBlock {
  /** (values) integer values, signed. */
  q: Int8Array;
  /** (values / 16) integer multipliers (Q6_K's scales; 1 for the other types). */
  m16: Int32Array;
  /** (values / 32) fp32 scales. */
  scale: Float32Array;
  /** (values / 32) fp32 offsets (0 for types without one). */
  offset: Float32Array;
}

/**
 * Room for one unpacked block of up to 256 values.
 *
 * @returns Fresh buffers sized for a K-quant super-block.
 */
export function newUnpackedBlock(): UnpackedBlock {
  return {
    q: new Int8Array(256),
    m16: new Int32Array(256 / 16),
    scale: new Float32Array(256 / 32),
    offset: new Float32Array(256 / 32),
  };
}

const f16 = (b: Uint8Array, o: number): number => fromHalf(b[o] | (b[o + 1] << 8));

/** Scale and min j (0..7) of a Q4_K / Q5_K block's 12 packed bytes at `s`. */
function scaleMinK4(b: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [b[s + j] & 63, b[s + j + 4] & 63];
  return [
    (b[s + j + 4] & 0xf) | ((b[s + j - 4] >> 6) << 4),
    (b[s + j + 4] >> 4) | ((b[s + j] >> 6) << 4),
  ];
}

/**
 * Unpacks the block of ggml type `type` at `b[o]` into `out` (see {@linkcode UnpackedBlock}).
 *
 * @param type A key of {@linkcode GGML_BLOCK_LAYOUTS}.
 * @param b Bytes holding the block.
 * @param o The block's offset in `b`.
 * @param out Where the values go (from {@linkcode newUnpackedBlock}).
 * @throws {Error} for a type that is not a block type listed here.
 */
export function unpackBlock(type: number, b: Uint8Array, o: number, out: UnpackedBlock): void {
  const { q, m16, scale, offset } = out;
  const fr = Math.fround;
  switch (type) {
    case GgmlBlockType.Q4_0:
    case GgmlBlockType.Q4_1:
    case GgmlBlockType.Q5_0:
    case GgmlBlockType.Q5_1:
    case GgmlBlockType.Q8_0: {
      const L = GGML_BLOCK_LAYOUTS[type].fields;
      scale[0] = f16(b, o + L.d);
      offset[0] = L.m === undefined ? 0 : f16(b, o + L.m);
      m16[0] = m16[1] = 1;
      if (type === GgmlBlockType.Q8_0) {
        for (let i = 0; i < 32; i++) q[i] = (b[o + L.qs + i] << 24) >> 24;
        return;
      }
      const qh = L.qh === undefined
        ? 0
        : (b[o + L.qh] | (b[o + L.qh + 1] << 8) | (b[o + L.qh + 2] << 16) |
          (b[o + L.qh + 3] << 24)) >>> 0;
      const five = L.qh !== undefined;
      const bias = type === GgmlBlockType.Q4_0 ? 8 : type === GgmlBlockType.Q5_0 ? 16 : 0;
      for (let i = 0; i < 16; i++) {
        const byte = b[o + L.qs + i];
        const h0 = five ? ((qh >>> i) & 1) << 4 : 0;
        const h1 = five ? ((qh >>> (i + 16)) & 1) << 4 : 0;
        q[i] = ((byte & 15) | h0) - bias;
        q[i + 16] = ((byte >> 4) | h1) - bias;
      }
      return;
    }
    case GgmlBlockType.Q4_K:
    case GgmlBlockType.Q5_K: {
      const L = GGML_BLOCK_LAYOUTS[type].fields;
      const d = f16(b, o + L.d), dmin = f16(b, o + L.dmin);
      m16.fill(1, 0, 16);
      for (let j = 0; j < 8; j++) {
        const [sc, m] = scaleMinK4(b, o + L.scales, j);
        scale[j] = fr(d * sc);
        offset[j] = -fr(dmin * m);
      }
      for (let c = 0; c < 4; c++) { // 64 values per pass: low nibbles, then high nibbles
        for (let l = 0; l < 32; l++) {
          const byte = b[o + L.qs + 32 * c + l];
          let lo = byte & 15, hi = byte >> 4;
          if (type === GgmlBlockType.Q5_K) {
            const h = b[o + L.qh + l];
            lo |= ((h >> (2 * c)) & 1) << 4;
            hi |= ((h >> (2 * c + 1)) & 1) << 4;
          }
          q[64 * c + l] = lo;
          q[64 * c + 32 + l] = hi;
        }
      }
      return;
    }
    case GgmlBlockType.Q6_K: {
      const L = GGML_BLOCK_LAYOUTS[type].fields;
      const d = f16(b, o + L.d);
      scale.fill(d, 0, 8);
      offset.fill(0, 0, 8);
      for (let i = 0; i < 16; i++) m16[i] = (b[o + L.scales + i] << 24) >> 24;
      for (let h = 0; h < 2; h++) { // 128 values per half
        const ql = o + L.ql + 64 * h, qh = o + L.qh + 32 * h, y = 128 * h;
        for (let l = 0; l < 32; l++) {
          const bits = b[qh + l];
          q[y + l] = ((b[ql + l] & 15) | ((bits & 3) << 4)) - 32;
          q[y + 32 + l] = ((b[ql + 32 + l] & 15) | (((bits >> 2) & 3) << 4)) - 32;
          q[y + 64 + l] = ((b[ql + l] >> 4) | (((bits >> 4) & 3) << 4)) - 32;
          q[y + 96 + l] = ((b[ql + 32 + l] >> 4) | (((bits >> 6) & 3) << 4)) - 32;
        }
      }
      return;
    }
    default:
      throw new Error(`ggml type ${type} is not a block type the engines run`);
  }
}

/**
 * Dequantises `n` values (a whole number of blocks) of ggml block type `type` starting at
 * `b[o]`, exactly as ggml does.
 *
 * @param type A key of {@linkcode GGML_BLOCK_LAYOUTS}.
 * @param b The bytes.
 * @param o Offset of the first block.
 * @param n Values to produce, a multiple of the type's block size.
 * @param out Where they go (at least `n` entries).
 * @returns `out`.
 */
export function dequantizeBlocks(
  type: number,
  b: Uint8Array,
  o: number,
  n: number,
  out: Float32Array = new Float32Array(n),
): Float32Array {
  const layout = GGML_BLOCK_LAYOUTS[type];
  const u = newUnpackedBlock();
  const fr = Math.fround;
  for (let blk = 0; blk * layout.values < n; blk++) {
    unpackBlock(type, b, o + blk * layout.bytes, u);
    const base = blk * layout.values;
    for (let i = 0; i < layout.values; i++) {
      const v = fr(u.scale[i >> 5] * (u.m16[i >> 4] * u.q[i]));
      out[base + i] = layout.hasOffset ? fr(v + u.offset[i >> 5]) : v;
    }
  }
  return out;
}

/**
 * Dequantises `bytes`, whole blocks of the ggml block type `name`, checked: a partial block or
 * a short `out` is an error naming the type ({@linkcode dequantizeBlocks} without the checks).
 *
 * @param name The type's name, a key of {@linkcode GgmlBlockType}.
 * @param bytes Whole blocks.
 * @param out Where to write the values (default: a new array).
 * @returns The values (`out` when given).
 * @throws {Qwen3Error} `invalid_argument` for a partial block or a short `out`.
 */
export function dequantizeGgml(
  name: keyof typeof GgmlBlockType,
  bytes: Uint8Array,
  out?: Float32Array,
): Float32Array {
  const type = GgmlBlockType[name];
  const layout = GGML_BLOCK_LAYOUTS[type];
  const n = wholeBlocks(name, bytes, layout.bytes) * layout.values;
  return dequantizeBlocks(type, bytes, 0, n, valueOutput(name, n, out));
}
