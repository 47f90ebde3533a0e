/**
 * GGUF files for tests: a checkpoint's weights (dequantised to fp32) written as a `qwen3` GGUF
 * of any weight type the engines run (F32, F16, BF16, Q8_0, Q4_0), with the real Qwen3
 * tokenizer lists in the metadata. A hook may damage the metadata or tensor table first, for
 * the malformed-file tests. The keys, tensor names and their order are src/formats/gguf_qwen3.ts's
 * (the writers' own), the header encoder is src/formats/gguf.ts's; the encodings of the weight
 * types are written here, following llama.cpp's rules.
 * @module
 */

import {
  encodeGgufHeader,
  GgmlType,
  type GgufTensorSpec,
  type GgufValue,
  quantizeQ8_0,
  toHalf,
} from "../../src/formats/gguf.ts";
import {
  ggufDims,
  qwen3GgufMetadata,
  qwen3GgufTensors,
  type TokenizerJson,
} from "../../src/formats/gguf_qwen3.ts";
import { type Checkpoint, slotTensor } from "../../src/formats/checkpoint.ts";
import type { Q8Tensor } from "../../src/formats/weights.ts";

/** Weight types of {@link writeCheckpointGguf}. */
export type GgufWeightKind = "f32" | "f16" | "bf16" | "q8_0" | "q4_0";

/** A tensor about to be written: table entry and bytes. */
export interface GgufTensorData {
  /** Name, dims (innermost first) and ggml type. */
  spec: GgufTensorSpec;
  /** Exactly the tensor's bytes. */
  data: Uint8Array;
  /** Written into the tensor table instead of spec.type (layout still follows spec). */
  tableType?: number;
}

/** Options of {@link writeCheckpointGguf}. */
export interface WriteGgufOptions {
  /** The Hugging Face tokenizer.json whose lists go into the metadata. */
  tokenizerJson: string;
  /** Multiplies the named matrices' values before encoding (e.g. `{ "output.weight": 8 }`
   * for a peaked next-token distribution). */
  scale?: Readonly<Record<string, number>>;
  /** Changes the metadata or tensors before they are encoded (malformed-file tests). */
  mutate?: (metadata: [string, GgufValue][], tensors: GgufTensorData[]) => void;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** fp32 -> IEEE half: src/formats/gguf.ts's toHalf (kept under this name for the callers here). */
export const toHalfFast: (v: number) => number = toHalf;

/** fp32 -> bfloat16, round to nearest even (NaN stays a quiet NaN). */
export function toBf16(v: number): number {
  f32[0] = v;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** ggml Q4_0 (llama.cpp's quantize_row_q4_0_ref): per 32 values d = max / -8 (max = the
 * value of largest magnitude), q = min(15, trunc(v / d + 8.5)), fp16 d then 16 packed bytes. */
function quantizeQ4_0(values: Float32Array): Uint8Array {
  const blocks = values.length / 32;
  const out = new Uint8Array(blocks * 18);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    let amax = 0, max = 0;
    for (let i = 0; i < 32; i++) {
      const v = values[b * 32 + i];
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * 18, toHalf(d), true);
    for (let i = 0; i < 16; i++) {
      const q0 = Math.min(15, Math.trunc(Math.fround(values[b * 32 + i] * id) + 8.5));
      const q1 = Math.min(15, Math.trunc(Math.fround(values[b * 32 + 16 + i] * id) + 8.5));
      out[b * 18 + 2 + i] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** A copy of an fp32 vector's bytes. */
function bytesOf(v: Float32Array): Uint8Array {
  return new Uint8Array(v.slice().buffer);
}

function dequantize(t: Q8Tensor): Float32Array {
  const out = new Float32Array(t.rows * t.cols);
  const groups = t.cols / t.groupSize;
  for (let r = 0; r < t.rows; r++) {
    for (let j = 0; j < t.cols; j++) {
      out[r * t.cols + j] = Math.fround(
        t.q[r * t.cols + j] * t.s[r * groups + Math.floor(j / t.groupSize)],
      );
    }
  }
  return out;
}

/** A matrix's fp32 values encoded as `kind`, with its ggml type. */
export function encodeMatrix(
  values: Float32Array,
  kind: GgufWeightKind,
): { type: number; data: Uint8Array } {
  switch (kind) {
    case "f32":
      return { type: GgmlType.F32, data: new Uint8Array(values.slice().buffer) };
    case "f16":
      return {
        type: GgmlType.F16,
        data: new Uint8Array(Uint16Array.from(values, toHalfFast).buffer),
      };
    case "bf16":
      return { type: GgmlType.BF16, data: new Uint8Array(Uint16Array.from(values, toBf16).buffer) };
    case "q8_0":
      return { type: GgmlType.Q8_0, data: quantizeQ8_0(values) };
    case "q4_0":
      return { type: GgmlType.Q4_0, data: quantizeQ4_0(values) };
  }
}

const tokenizerJsons = new Map<string, Promise<TokenizerJson>>();

/** The metadata and tensors {@link writeCheckpointGguf} writes, before any mutation. */
export async function checkpointGgufParts(
  ckpt: Checkpoint,
  kind: GgufWeightKind,
  tokenizerJson: string,
  scale: Readonly<Record<string, number>> = {},
): Promise<{ metadata: [string, GgufValue][]; tensors: GgufTensorData[] }> {
  const c = ckpt.config;
  const t = ckpt.tensors;
  if (!tokenizerJsons.has(tokenizerJson)) {
    tokenizerJsons.set(tokenizerJson, Deno.readTextFile(tokenizerJson).then((s) => JSON.parse(s)));
  }
  const json = await tokenizerJsons.get(tokenizerJson)!;
  const metadata = qwen3GgufMetadata(c, json, { name: `test-${kind}` });
  const tensors: GgufTensorData[] = qwen3GgufTensors(c).map(({ name, slot }) => {
    if (slot.kind === "f32") {
      const v = slotTensor(t, slot);
      return { spec: { name, dims: ggufDims(slot), type: GgmlType.F32 }, data: bytesOf(v) };
    }
    const values = dequantize(slotTensor(t, slot));
    const k = scale[name];
    if (k !== undefined) values.forEach((v, i) => values[i] = Math.fround(v * k));
    const e = encodeMatrix(values, kind);
    return { spec: { name, dims: ggufDims(slot), type: e.type }, data: e.data };
  });
  return { metadata, tensors };
}

/**
 * Writes `ckpt` as a `qwen3` GGUF at `out`: every matrix dequantised (q * scale) and encoded as
 * `kind`, norms F32, `output.weight` only when the classifier is not tied, the tokenizer lists
 * of `opts.tokenizerJson`. Returns the file's bytes (also written to `out`).
 */
export async function writeCheckpointGguf(
  ckpt: Checkpoint,
  out: string,
  kind: GgufWeightKind,
  opts: WriteGgufOptions,
): Promise<Uint8Array> {
  const { metadata, tensors } = await checkpointGgufParts(
    ckpt,
    kind,
    opts.tokenizerJson,
    opts.scale,
  );
  opts.mutate?.(metadata, tensors);
  return await writeGguf(out, metadata, tensors);
}

/**
 * Encodes and writes a GGUF of these entries (data at 32-byte aligned offsets). A tensor with
 * `tableType` is laid out by its spec but listed with that ggml type (a type the encoder
 * cannot size, for the unknown-type tests).
 */
export async function writeGguf(
  out: string,
  metadata: [string, GgufValue][],
  tensors: GgufTensorData[],
): Promise<Uint8Array> {
  const { header, offsets } = encodeGgufHeader(metadata, tensors.map((x) => x.spec));
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const enc = new TextEncoder();
  let from = 0;
  for (const x of tensors) {
    const name = enc.encode(x.spec.name);
    let at = from;
    // the table entry: u64 name length, name, u32 n_dims, dims, u32 type, u64 offset
    while (
      !(view.getUint32(at, true) === name.length && view.getUint32(at + 4, true) === 0 &&
        name.every((b, k) => header[at + 8 + k] === b))
    ) at++;
    const typeAt = at + 8 + name.length + 4 + 8 * x.spec.dims.length;
    if (x.tableType !== undefined) view.setUint32(typeAt, x.tableType, true);
    from = typeAt + 12;
  }
  const last = tensors.length - 1;
  const bytes = new Uint8Array(header.length + offsets[last] + tensors[last].data.length);
  bytes.set(header, 0);
  tensors.forEach((x, i) => bytes.set(x.data, header.length + offsets[i]));
  await Deno.writeFile(out, bytes);
  return bytes;
}
