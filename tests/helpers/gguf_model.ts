/**
 * GGUF files for tests: a checkpoint's weights (dequantised to fp32) written as a `qwen3` GGUF
 * of any weight type the engines run (F32, F16, BF16, Q8_0, Q4_0), with the real Qwen3
 * tokenizer lists in the metadata. A hook may damage the metadata or tensor table first, for
 * the malformed-file tests. Built on src/formats/gguf.ts's header encoder; the encodings of the
 * weight types are written here, following llama.cpp's rules.
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

type TokenizerJson = Parameters<typeof tokenizerMetadata>[0];
import { tokenizerMetadata } from "../../src/formats/gguf_convert.ts";
import type { Checkpoint, Q8Tensor } from "../../src/formats/model_file.ts";

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
  const metadata: [string, GgufValue][] = [
    ["general.architecture", { type: "string", value: "qwen3" }],
    ["general.name", { type: "string", value: `test-${kind}` }],
    ["qwen3.context_length", { type: "u32", value: c.seqLen }],
    ["qwen3.embedding_length", { type: "u32", value: c.dim }],
    ["qwen3.feed_forward_length", { type: "u32", value: c.hiddenDim }],
    ["qwen3.block_count", { type: "u32", value: c.nLayers }],
    ["qwen3.attention.head_count", { type: "u32", value: c.nHeads }],
    ["qwen3.attention.head_count_kv", { type: "u32", value: c.nKvHeads }],
    ["qwen3.attention.key_length", { type: "u32", value: c.headDim }],
    ["qwen3.attention.value_length", { type: "u32", value: c.headDim }],
    // llama.cpp rotates only rope.dimension_count dims (default embedding_length / head_count)
    ["qwen3.rope.dimension_count", { type: "u32", value: c.headDim }],
    ["qwen3.rope.freq_base", { type: "f32", value: c.ropeTheta }],
    ["qwen3.attention.layer_norm_rms_epsilon", { type: "f32", value: c.rmsEps }],
    ...tokenizerMetadata(json, c.vocabSize),
  ];
  const tensors: GgufTensorData[] = [];
  const vec = (name: string, v: Float32Array) =>
    tensors.push({
      spec: { name, dims: [v.length], type: GgmlType.F32 },
      data: new Uint8Array(v.slice().buffer),
    });
  const mat = (name: string, w: Q8Tensor) => {
    const values = dequantize(w);
    const k = scale[name];
    if (k !== undefined) values.forEach((v, i) => values[i] = Math.fround(v * k));
    const e = encodeMatrix(values, kind);
    tensors.push({ spec: { name, dims: [w.cols, w.rows], type: e.type }, data: e.data });
  };
  mat("token_embd.weight", t.embed);
  vec("output_norm.weight", t.finalNorm);
  if (!c.sharedClassifier) mat("output.weight", t.classifier);
  t.layers.forEach((lw, l) => {
    const b = `blk.${l}.`;
    vec(`${b}attn_norm.weight`, lw.attnNorm);
    mat(`${b}attn_q.weight`, lw.wq);
    mat(`${b}attn_k.weight`, lw.wk);
    mat(`${b}attn_v.weight`, lw.wv);
    mat(`${b}attn_output.weight`, lw.wo);
    vec(`${b}attn_q_norm.weight`, lw.qNorm);
    vec(`${b}attn_k_norm.weight`, lw.kNorm);
    vec(`${b}ffn_norm.weight`, lw.ffnNorm);
    mat(`${b}ffn_gate.weight`, lw.w1);
    mat(`${b}ffn_up.weight`, lw.w3);
    mat(`${b}ffn_down.weight`, lw.w2);
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
