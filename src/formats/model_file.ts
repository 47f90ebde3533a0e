/**
 * Readers for the qwen3.c `model.bin` (version 1) checkpoint and the qwen3-rs variant of it
 * (docs/formats.md#checkpoint-format): header validation, and typed-array views of every tensor without
 * copying the file. The tensor order lives here once ({@link checkpointTensorOrder}) and is
 * shared with the writers.
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import {
  fromHalf,
  GGML_TYPE_NAMES,
  GgmlType,
  type GgufFile,
  ggufShownString,
  type GgufTensorInfo,
  readGgufHeader,
  RUNNABLE_GGML_TYPES,
} from "./gguf.ts";
import { fileKind, ioReason, statRegularFile } from "./side_file.ts";
import type { ModelConfig } from "../types.ts";

/** `model.bin` magic: bytes `31 63 6A 61` on disk, read as a little-endian u32. */
export const CHECKPOINT_MAGIC = 0x616a6331;
/** The only checkpoint version there is. */
export const CHECKPOINT_VERSION = 1;
/** Bytes before the first tensor. */
export const HEADER_BYTES = 256;
/** qwen3-rs `architecture_id` of Qwen3ForCausalLM (2 is LlamaForCausalLM). */
export const QWEN3RS_ARCH_QWEN3 = 1;
/** RoPE base of every Qwen3 (not stored in the file). */
export const QWEN3_ROPE_THETA = 1e6;
/** RMSNorm epsilon of every Qwen3 (not stored in the file). */
export const QWEN3_RMS_EPS = 1e-6;

/** The ten i32 header fields, in file order. */
export const HEADER_FIELDS = [
  "dim",
  "hidden_dim",
  "n_layers",
  "n_heads",
  "n_kv_heads",
  "vocab_size",
  "seq_len",
  "head_dim",
  "shared_classifier",
  "group_size",
] as const;

/** A header field name as the C structs and this module's messages spell it. */
export type HeaderField = (typeof HEADER_FIELDS)[number];

/**
 * Upper bounds on header fields, the C loader's (csrc/src/model.h QWEN3_MAX_*): far above any
 * Qwen3 (8B: dim 4096, hidden 12288, 36 layers, 32 heads, seq_len 40960), low enough that
 * every size derived from them stays exact in a JavaScript number (below 2^53).
 * n_heads * head_dim is held to the dim limit as well.
 */
export const HEADER_LIMITS: Readonly<Record<Exclude<HeaderField, "shared_classifier">, number>> = {
  dim: 1 << 18,
  hidden_dim: 1 << 18,
  n_layers: 4096,
  n_heads: 4096,
  n_kv_heads: 4096,
  vocab_size: 1 << 24,
  seq_len: 1 << 24,
  head_dim: 16384,
  group_size: 1 << 18,
};

/** A Q8 matrix: int8 values row-major (HF `[out, in]`) and one fp32 scale per group. */
export interface Q8Tensor {
  /** (rows, cols) int8 values. */
  q: Int8Array;
  /** (rows, cols / groupSize) scales. */
  s: Float32Array;
  /** Output features. */
  rows: number;
  /** Input features. */
  cols: number;
  /** Values per scale. */
  groupSize: number;
}

/** One transformer block's weights. */
export interface LayerTensors {
  /** (dim) RMSNorm weight before attention. */
  attnNorm: Float32Array;
  /** (dim) RMSNorm weight before the feed-forward block. */
  ffnNorm: Float32Array;
  /** (head_dim) QK-norm weight shared by all query heads. */
  qNorm: Float32Array;
  /** (head_dim) QK-norm weight shared by all key heads. */
  kNorm: Float32Array;
  /** (n_heads * head_dim, dim) query projection. */
  wq: Q8Tensor;
  /** (n_kv_heads * head_dim, dim) key projection. */
  wk: Q8Tensor;
  /** (n_kv_heads * head_dim, dim) value projection. */
  wv: Q8Tensor;
  /** (dim, n_heads * head_dim) attention output projection. */
  wo: Q8Tensor;
  /** (hidden_dim, dim) gate projection. */
  w1: Q8Tensor;
  /** (dim, hidden_dim) down projection. */
  w2: Q8Tensor;
  /** (hidden_dim, dim) up projection. */
  w3: Q8Tensor;
}

/** Every tensor of a checkpoint, as views into its bytes. */
export interface CheckpointTensors {
  /** (vocab_size, dim) token embedding. */
  embed: Q8Tensor;
  /** (dim) final RMSNorm weight. */
  finalNorm: Float32Array;
  /** (vocab_size, dim) output projection: the same object as `embed` when tied. */
  classifier: Q8Tensor;
  /** Per-layer weights, n_layers entries. */
  layers: LayerTensors[];
}

/** A checkpoint read into memory. */
export interface Checkpoint {
  /** The file it was read from. */
  path: string;
  /** Its hyper-parameters. */
  config: ModelConfig;
  /** The whole file; the tensors view into it. */
  bytes: Uint8Array;
  /** Every tensor. */
  tensors: CheckpointTensors;
}

/** Names of the per-layer Q8 matrices, in file order. */
export const LAYER_MATRICES = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"] as const;

/** A per-layer Q8 matrix name. */
export type LayerMatrix = (typeof LAYER_MATRICES)[number];

/** One entry of the body, in file order. */
export type TensorSlot =
  | {
    kind: "f32";
    name: "attn_norm" | "ffn_norm" | "q_norm" | "k_norm";
    layer: number;
    length: number;
  }
  | { kind: "f32"; name: "final_norm"; layer: -1; length: number }
  | { kind: "q8"; name: LayerMatrix; layer: number; rows: number; cols: number }
  | { kind: "q8"; name: "embed" | "classifier"; layer: -1; rows: number; cols: number };

/** [rows, cols] of a per-layer matrix. */
export function layerMatrixShape(
  c: Pick<ModelConfig, "dim" | "hiddenDim" | "nHeads" | "nKvHeads" | "headDim">,
  name: LayerMatrix,
): [number, number] {
  switch (name) {
    case "wq":
      return [c.nHeads * c.headDim, c.dim];
    case "wk":
    case "wv":
      return [c.nKvHeads * c.headDim, c.dim];
    case "wo":
      return [c.dim, c.nHeads * c.headDim];
    case "w1":
    case "w3":
      return [c.hiddenDim, c.dim];
    case "w2":
      return [c.dim, c.hiddenDim];
  }
}

/**
 * The body's tensors in file order (docs/formats.md#checkpoint-body): fp32 attn_norm of every layer, ffn_norm,
 * final_norm, q_norm, k_norm; then Q8 embed, all layers' wq, all wk, wv, wo, w1, w2, w3; then
 * the classifier when not shared. Readers and writers both walk this list.
 */
export function* checkpointTensorOrder(
  c: Pick<
    ModelConfig,
    | "dim"
    | "hiddenDim"
    | "nLayers"
    | "nHeads"
    | "nKvHeads"
    | "headDim"
    | "vocabSize"
    | "sharedClassifier"
  >,
): Generator<TensorSlot> {
  for (const name of ["attn_norm", "ffn_norm"] as const) {
    for (let l = 0; l < c.nLayers; l++) yield { kind: "f32", name, layer: l, length: c.dim };
  }
  yield { kind: "f32", name: "final_norm", layer: -1, length: c.dim };
  for (const name of ["q_norm", "k_norm"] as const) {
    for (let l = 0; l < c.nLayers; l++) yield { kind: "f32", name, layer: l, length: c.headDim };
  }
  yield { kind: "q8", name: "embed", layer: -1, rows: c.vocabSize, cols: c.dim };
  for (const name of LAYER_MATRICES) {
    const [rows, cols] = layerMatrixShape(c, name);
    for (let l = 0; l < c.nLayers; l++) yield { kind: "q8", name, layer: l, rows, cols };
  }
  if (!c.sharedClassifier) {
    yield { kind: "q8", name: "classifier", layer: -1, rows: c.vocabSize, cols: c.dim };
  }
}

/** Bytes a tensor slot occupies: 4 per fp32 value; 1 per int8 value plus 4 per group scale. */
export function slotBytes(slot: TensorSlot, groupSize: number): number {
  if (slot.kind === "f32") return 4 * slot.length;
  const n = slot.rows * slot.cols;
  return n + 4 * (n / groupSize);
}

/** The exact size of a checkpoint with this configuration, header included. */
export function expectedFileSize(
  c: Pick<
    ModelConfig,
    | "dim"
    | "hiddenDim"
    | "nLayers"
    | "nHeads"
    | "nKvHeads"
    | "headDim"
    | "vocabSize"
    | "sharedClassifier"
    | "groupSize"
  >,
): number {
  let size = HEADER_BYTES;
  for (const slot of checkpointTensorOrder(c)) size += slotBytes(slot, c.groupSize);
  return size;
}

/**
 * The 256-byte header of a checkpoint in either layout (qwen3-rs puts `architecture_id` = 1
 * at offset 8 and shifts the ten fields by 4).
 */
export function encodeHeader(c: ModelConfig, layout: "qwen3.c" | "qwen3-rs"): Uint8Array {
  const header = new Uint8Array(HEADER_BYTES);
  const view = new DataView(header.buffer);
  view.setUint32(0, CHECKPOINT_MAGIC, true);
  view.setInt32(4, CHECKPOINT_VERSION, true);
  let off = 8;
  if (layout === "qwen3-rs") {
    view.setUint32(off, QWEN3RS_ARCH_QWEN3, true);
    off += 4;
  }
  const values = [
    c.dim,
    c.hiddenDim,
    c.nLayers,
    c.nHeads,
    c.nKvHeads,
    c.vocabSize,
    c.seqLen,
    c.headDim,
    c.sharedClassifier ? 1 : 0,
    c.groupSize,
  ];
  for (const v of values) {
    view.setInt32(off, v, true);
    off += 4;
  }
  return header;
}

function formatError(path: string, message: string): Qwen3Error {
  return new Qwen3Error("format", `${path}: ${message}`);
}

/**
 * Reads the ten fields of one layout and validates them, the file size included, in the C
 * loader's order and with its messages word for word (csrc/src/model.c parse_layout), so the
 * two engines reject the same files the same way.
 */
function parseLayout(
  view: DataView,
  fileSize: number,
  path: string,
  format: "qwen3.c" | "qwen3-rs",
): ModelConfig {
  const layout = `${format} layout`;
  if (format === "qwen3-rs") {
    const arch = view.getUint32(8, true);
    if (arch === 2) {
      throw new Qwen3Error(
        "unsupported",
        `${path}: architecture_id 2 (LlamaForCausalLM, qwen3-rs layout) is not supported; ` +
          `only ${QWEN3RS_ARCH_QWEN3} (Qwen3ForCausalLM)`,
      );
    }
    if (arch !== QWEN3RS_ARCH_QWEN3) {
      throw formatError(
        path,
        `architecture_id ${arch} at byte 8 is not ${QWEN3RS_ARCH_QWEN3} (Qwen3ForCausalLM) (${layout})`,
      );
    }
  }
  const base = format === "qwen3-rs" ? 12 : 8;
  const raw = {} as Record<HeaderField, number>;
  HEADER_FIELDS.forEach((name, i) => {
    const v = view.getInt32(base + 4 * i, true);
    raw[name] = v;
    if (name === "shared_classifier") {
      if (v !== 0 && v !== 1) {
        throw formatError(path, `header field shared_classifier = ${v} must be 0 or 1 (${layout})`);
      }
      return;
    }
    if (v <= 0) throw formatError(path, `header field ${name} = ${v} must be positive (${layout})`);
    if (v > HEADER_LIMITS[name]) {
      throw formatError(
        path,
        `header field ${name} = ${v} exceeds the limit of ${HEADER_LIMITS[name]} (${layout})`,
      );
    }
  });
  if (raw.n_heads % raw.n_kv_heads !== 0) {
    throw formatError(
      path,
      `n_heads ${raw.n_heads} is not a multiple of n_kv_heads ${raw.n_kv_heads} (${layout})`,
    );
  }
  if (raw.head_dim % 2 !== 0) {
    throw formatError(
      path,
      `head_dim ${raw.head_dim} must be even for rotate-half RoPE (${layout})`,
    );
  }
  const qDim = raw.n_heads * raw.head_dim;
  if (qDim > HEADER_LIMITS.dim) {
    throw formatError(
      path,
      `n_heads * head_dim = ${qDim} exceeds the limit of ${HEADER_LIMITS.dim} (${layout})`,
    );
  }
  const gs = raw.group_size;
  const divided: [string, number][] = [["dim", raw.dim], ["hidden_dim", raw.hidden_dim], [
    "n_heads * head_dim",
    qDim,
  ]];
  for (const [name, v] of divided) {
    if (v % gs !== 0) {
      throw formatError(path, `group_size ${gs} does not divide ${name} = ${v} (${layout})`);
    }
  }
  if (raw.dim % 4 !== 0) {
    // Every tensor has dim as a factor, so dim % 4 == 0 keeps every fp32 scale array 4-byte
    // aligned in the file; the C engine maps the file and cannot copy.
    throw new Qwen3Error(
      "unsupported",
      `${path}: dim ${raw.dim} is not a multiple of 4, so the fp32 scales would be misaligned (${layout})`,
    );
  }
  const config: ModelConfig = {
    format,
    dim: raw.dim,
    hiddenDim: raw.hidden_dim,
    nLayers: raw.n_layers,
    nHeads: raw.n_heads,
    nKvHeads: raw.n_kv_heads,
    headDim: raw.head_dim,
    vocabSize: raw.vocab_size,
    seqLen: raw.seq_len,
    groupSize: gs,
    sharedClassifier: raw.shared_classifier === 1,
    ropeTheta: QWEN3_ROPE_THETA,
    rmsEps: QWEN3_RMS_EPS,
  };
  const expected = expectedFileSize(config);
  if (fileSize !== expected) {
    throw formatError(
      path,
      `file size is ${fileSize} bytes but the header implies ${expected} (${layout}: ` +
        `dim ${config.dim}, hidden_dim ${config.hiddenDim}, n_layers ${config.nLayers}, ` +
        `n_heads ${config.nHeads}, n_kv_heads ${config.nKvHeads}, vocab_size ${config.vocabSize}, ` +
        `head_dim ${config.headDim}, shared_classifier ${raw.shared_classifier}, group_size ${gs}): ` +
        `the file is ${
          fileSize < expected ? "truncated" : "longer than its header says (corrupt or foreign)"
        }`,
    );
  }
  return config;
}

/**
 * Validates a checkpoint header and returns the model's configuration. `header` holds at
 * least the file's first 256 bytes (the whole file will do); `fileSize` is the file's size,
 * which must equal the size the header implies exactly. As in the C loader, the value at
 * offset 8 suggests the layout (1 or 2 is a qwen3-rs `architecture_id`; 0 reads as a qwen3.c
 * dim, whose error is the clearer), and the other layout is tried when the suggested one fails; the suggested layout's error is
 * the one reported. Errors are Qwen3Error code "format" naming the file, the field, the
 * expected and the actual value ("unsupported" for a valid file this engine cannot run: a
 * qwen3-rs Llama, or dim not a multiple of 4).
 *
 * @example
 * ```ts
 * import { encodeHeader, expectedFileSize, parseHeader } from "./model_file.ts";
 * const config = {
 *   format: "qwen3.c", dim: 64, hiddenDim: 192, nLayers: 2, nHeads: 4, nKvHeads: 2,
 *   headDim: 32, vocabSize: 1000, seqLen: 256, groupSize: 32, sharedClassifier: true,
 *   ropeTheta: 1e6, rmsEps: 1e-6,
 * } as const;
 * const parsed = parseHeader(encodeHeader(config, "qwen3.c"), expectedFileSize(config), "m.bin");
 * console.log(parsed.dim); // 64
 * ```
 */
export function parseHeader(header: Uint8Array, fileSize: number, path: string): ModelConfig {
  if (fileSize < HEADER_BYTES || header.length < HEADER_BYTES) {
    throw formatError(
      path,
      `file is ${Math.min(fileSize, header.length)} bytes, shorter than the ${HEADER_BYTES}-byte ` +
        `checkpoint header (truncated or not a Qwen3 checkpoint)`,
    );
  }
  const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
  const magic = view.getUint32(0, true);
  if (magic !== CHECKPOINT_MAGIC) {
    throw formatError(
      path,
      `magic is 0x${hex32(magic)}, expected 0x${
        hex32(CHECKPOINT_MAGIC)
      } ("1cja"): not a qwen3.c / qwen3-rs checkpoint`,
    );
  }
  const version = view.getInt32(4, true);
  if (version !== CHECKPOINT_VERSION) {
    throw formatError(path, `header field version = ${version}, expected ${CHECKPOINT_VERSION}`);
  }
  const at8 = view.getUint32(8, true);
  const first = at8 === 1 || at8 === 2 ? "qwen3-rs" : "qwen3.c";
  const second = first === "qwen3-rs" ? "qwen3.c" : "qwen3-rs";
  try {
    return parseLayout(view, fileSize, path, first);
  } catch (firstError) {
    try {
      return parseLayout(view, fileSize, path, second);
    } catch {
      throw firstError;
    }
  }
}

function hex32(v: number): string {
  return v.toString(16).toUpperCase().padStart(8, "0");
}

/**
 * fp32 values at `offset` of `bytes`: a view when the address is 4-byte aligned, else a copy.
 * Inside a valid file every fp32 array is aligned (norms are whole fp32 arrays from byte 256;
 * scales follow rows * cols int8 values and dim % 4 == 0 is required), so a copy happens only
 * when the caller's `bytes` itself starts at an unaligned byteOffset.
 */
function floatsAt(bytes: Uint8Array, offset: number, length: number): Float32Array {
  const address = bytes.byteOffset + offset;
  if (address % 4 === 0) return new Float32Array(bytes.buffer, address, length);
  return new Float32Array(bytes.slice(offset, offset + 4 * length).buffer);
}

/**
 * Views of every tensor of a validated checkpoint (`config` from {@link parseHeader} on the
 * same bytes). Only unaligned scale arrays are copied (see the note on alignment).
 */
export function checkpointTensors(bytes: Uint8Array, config: ModelConfig): CheckpointTensors {
  const gs = config.groupSize;
  const emptyQ8: Q8Tensor = {
    q: new Int8Array(0),
    s: new Float32Array(0),
    rows: 0,
    cols: 0,
    groupSize: gs,
  };
  const layers: LayerTensors[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    layers.push({
      attnNorm: new Float32Array(0),
      ffnNorm: new Float32Array(0),
      qNorm: new Float32Array(0),
      kNorm: new Float32Array(0),
      wq: emptyQ8,
      wk: emptyQ8,
      wv: emptyQ8,
      wo: emptyQ8,
      w1: emptyQ8,
      w2: emptyQ8,
      w3: emptyQ8,
    });
  }
  const out: CheckpointTensors = {
    embed: emptyQ8,
    finalNorm: new Float32Array(0),
    classifier: emptyQ8,
    layers,
  };
  const normKey = {
    attn_norm: "attnNorm",
    ffn_norm: "ffnNorm",
    q_norm: "qNorm",
    k_norm: "kNorm",
  } as const;
  let off = HEADER_BYTES;
  for (const slot of checkpointTensorOrder(config)) {
    if (slot.kind === "f32") {
      const values = floatsAt(bytes, off, slot.length);
      if (slot.name === "final_norm") out.finalNorm = values;
      else layers[slot.layer][normKey[slot.name]] = values;
    } else {
      const n = slot.rows * slot.cols;
      const t: Q8Tensor = {
        q: new Int8Array(bytes.buffer, bytes.byteOffset + off, n),
        s: floatsAt(bytes, off + n, n / gs),
        rows: slot.rows,
        cols: slot.cols,
        groupSize: gs,
      };
      if (slot.name === "embed") out.embed = t;
      else if (slot.name === "classifier") out.classifier = t;
      else layers[slot.layer][slot.name] = t;
    }
    off += slotBytes(slot, gs);
  }
  if (config.sharedClassifier) out.classifier = out.embed;
  return out;
}

/**
 * Reads a qwen3.c or qwen3-rs checkpoint into memory and validates it. A missing or
 * unreadable file is a Qwen3Error "io" naming the path; a bad header or size is "format".
 *
 * @example
 * ```ts ignore
 * import { readCheckpoint } from "./model_file.ts";
 * const ckpt = await readCheckpoint("Qwen3-0.6B.bin");
 * console.log(ckpt.config.nLayers, ckpt.tensors.layers[0].wq.rows);
 * ```
 */
export async function readCheckpoint(path: string): Promise<Checkpoint> {
  const bytes = await readWhole(path);
  const config = parseHeader(bytes.subarray(0, HEADER_BYTES), bytes.length, path);
  return { path, config, bytes, tensors: checkpointTensors(bytes, config) };
}

// ---------------------------------------------------------------------------------------------
// Weights of any storage type, and GGUF models

/**
 * An unquantised weight matrix (from GGUF F32, F16 or BF16 tensors): row-major (HF
 * `[out, in]`) values of `kind`, run without quantising the activations.
 */
export interface FloatTensor {
  /** Storage type of `data`. */
  kind: "f32" | "f16" | "bf16";
  /** (rows, cols) values: fp32, or the 16-bit codes of fp16 / bf16. */
  data: Float32Array | Uint16Array;
  /** Output features. */
  rows: number;
  /** Input features. */
  cols: number;
}

/** A weight matrix as an engine runs it: Q8 (W8A8 path) or unquantised. */
export type WeightTensor = Q8Tensor | FloatTensor;

/** True when `t` is an unquantised matrix. */
export function isFloatTensor(t: WeightTensor): t is FloatTensor {
  return "kind" in t;
}

/** One transformer block's weights, any storage type. */
export interface LayerWeights {
  /** (dim) RMSNorm weight before attention. */
  attnNorm: Float32Array;
  /** (dim) RMSNorm weight before the feed-forward block. */
  ffnNorm: Float32Array;
  /** (head_dim) QK-norm weight shared by all query heads. */
  qNorm: Float32Array;
  /** (head_dim) QK-norm weight shared by all key heads. */
  kNorm: Float32Array;
  /** (n_heads * head_dim, dim) query projection. */
  wq: WeightTensor;
  /** (n_kv_heads * head_dim, dim) key projection. */
  wk: WeightTensor;
  /** (n_kv_heads * head_dim, dim) value projection. */
  wv: WeightTensor;
  /** (dim, n_heads * head_dim) attention output projection. */
  wo: WeightTensor;
  /** (hidden_dim, dim) gate projection. */
  w1: WeightTensor;
  /** (dim, hidden_dim) down projection. */
  w2: WeightTensor;
  /** (hidden_dim, dim) up projection. */
  w3: WeightTensor;
}

/** Every tensor of a model, any storage type (a checkpoint's CheckpointTensors is one). */
export interface ModelWeights {
  /** (vocab_size, dim) token embedding. */
  embed: WeightTensor;
  /** (dim) final RMSNorm weight. */
  finalNorm: Float32Array;
  /** (vocab_size, dim) output projection: the same object as `embed` when tied. */
  classifier: WeightTensor;
  /** Per-layer weights, n_layers entries. */
  layers: LayerWeights[];
}

/** A model read from any supported file: its configuration and weights. */
export interface LoadedModel {
  /** The file it was read from. */
  path: string;
  /** Hyper-parameters (`format` says which file layout). */
  config: ModelConfig;
  /** Every tensor, as views into `bytes` or converted copies. */
  weights: ModelWeights;
  /** The whole file. */
  bytes: Uint8Array;
  /** The parsed GGUF header, for GGUF files (the tokenizer lists live in its metadata). */
  gguf?: GgufFile;
}

function ggufError(path: string, message: string): Qwen3Error {
  return new Qwen3Error("format", `${path}: GGUF ${message}`);
}

/** An integer metadata value in [min, max] (`def` when absent and not required). */
function ggufUint(
  g: GgufFile,
  path: string,
  key: string,
  min: number,
  max: number,
  def?: number,
): number {
  const v = g.metadata.get(key);
  if (v === undefined) {
    if (def === undefined) throw ggufError(path, `metadata lacks '${key}'`);
    return def;
  }
  const n = typeof v === "bigint" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n)) {
    const kind = typeof v === "string" ? "a string" : Array.isArray(v) ? "an array" : typeof v;
    throw ggufError(path, `metadata '${key}' is ${kind}, expected an integer`);
  }
  if (n < min || n > max) {
    throw ggufError(path, `metadata '${key}' = ${n} is outside [${min}, ${max}]`);
  }
  return n;
}

/** A positive finite float metadata value (`def` when absent). */
function ggufFloat(g: GgufFile, path: string, key: string, def: number): number {
  const v = g.metadata.get(key);
  if (v === undefined) return def;
  if (typeof v !== "number") throw ggufError(path, `metadata '${key}' is not a float`);
  const f = Math.fround(v);
  if (!(f > 0) || !Number.isFinite(f)) {
    throw ggufError(path, `metadata '${key}' = ${v} must be positive and finite`);
  }
  return f;
}

function ggufString(g: GgufFile, path: string, key: string): string {
  const v = g.metadata.get(key);
  if (v === undefined) throw ggufError(path, `metadata lacks '${key}'`);
  if (typeof v !== "string") throw ggufError(path, `metadata '${key}' is not a string`);
  return v;
}

/**
 * The hyper-parameters of a `qwen3` GGUF (docs/formats.md#gguf-metadata-keys), validated with the C loader's
 * rules and limits (csrc/src/gguf.c): architecture `qwen3`, positive counts under the .bin
 * limits, heads divisible by kv heads, even head size, value size equal to key size.
 */
export function ggufConfig(g: GgufFile, path: string): ModelConfig {
  const arch = ggufString(g, path, "general.architecture");
  if (arch !== "qwen3") {
    throw new Qwen3Error(
      "unsupported",
      `${path}: GGUF general.architecture is '${
        ggufShownString(g, "general.architecture")
      }'; this engine runs only 'qwen3' (dense Qwen3)`,
    );
  }
  const L = HEADER_LIMITS;
  const dim = ggufUint(g, path, "qwen3.embedding_length", 1, L.dim);
  const hiddenDim = ggufUint(g, path, "qwen3.feed_forward_length", 1, L.hidden_dim);
  const nLayers = ggufUint(g, path, "qwen3.block_count", 1, L.n_layers);
  const nHeads = ggufUint(g, path, "qwen3.attention.head_count", 1, L.n_heads);
  const nKvHeads = ggufUint(g, path, "qwen3.attention.head_count_kv", 1, L.n_kv_heads, nHeads);
  const headDim = ggufUint(
    g,
    path,
    "qwen3.attention.key_length",
    1,
    L.head_dim,
    Math.floor(dim / nHeads),
  );
  const valueDim = ggufUint(g, path, "qwen3.attention.value_length", 1, L.head_dim, headDim);
  const ropeDim = ggufUint(g, path, "qwen3.rope.dimension_count", 1, L.head_dim, headDim);
  const seqLen = ggufUint(g, path, "qwen3.context_length", 1, L.seq_len);
  const ropeTheta = ggufFloat(g, path, "qwen3.rope.freq_base", QWEN3_ROPE_THETA);
  const rmsEps = ggufFloat(g, path, "qwen3.attention.layer_norm_rms_epsilon", QWEN3_RMS_EPS);
  if (valueDim !== headDim) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: GGUF value_length ${valueDim} differs from key_length ${headDim}`,
    );
  }
  if (ropeDim !== headDim) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: GGUF rope.dimension_count ${ropeDim} differs from key_length ${headDim} ` +
        "(Qwen3 rotates whole heads; partial rotary is not supported)",
    );
  }
  if (nHeads % nKvHeads !== 0) {
    throw ggufError(path, `head_count ${nHeads} is not a multiple of head_count_kv ${nKvHeads}`);
  }
  if (headDim % 2 !== 0) {
    throw ggufError(path, `key_length ${headDim} must be even for rotate-half RoPE`);
  }
  if (nHeads * headDim > L.dim) {
    throw ggufError(
      path,
      `head_count * key_length = ${nHeads * headDim} exceeds the limit of ${L.dim}`,
    );
  }
  const embd = g.tensors.get("token_embd.weight");
  if (!embd) throw ggufError(path, "has no tensor 'token_embd.weight'");
  const vocabSize = embd.dims[1] ?? 1;
  if (vocabSize > L.vocab_size) {
    throw ggufError(
      path,
      `token_embd.weight has ${vocabSize} rows (vocabulary limit ${L.vocab_size})`,
    );
  }
  return {
    format: "gguf",
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    headDim,
    vocabSize,
    seqLen,
    groupSize: 0, // set by ggufWeights: 32 when any matrix is Q8_0 / Q4_0
    sharedClassifier: !g.tensors.has("output.weight"),
    ropeTheta,
    rmsEps,
  };
}

/** IEEE half code -> fp32 value, for all 65536 codes (exact). */
const HALF_TABLE: Float32Array = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = fromHalf(h);
  return t;
})();

/** bfloat16 code -> fp32 value (the top half of a binary32). */
const BF16_TABLE: Float32Array = (() => {
  const bits = new Uint32Array(65536);
  for (let b = 0; b < 65536; b++) bits[b] = b << 16;
  return new Float32Array(bits.buffer);
})();

/** The exact fp32 value of element `i` of a float tensor's data. */
export function floatTensorValue(t: FloatTensor, i: number): number {
  const v = t.data[i];
  return t.kind === "f32" ? v : t.kind === "f16" ? HALF_TABLE[v] : BF16_TABLE[v];
}

/** Widening tables for the engine's inner loops: fp16 and bf16 codes to fp32. */
export const WIDEN_TABLES: Readonly<{ f16: Float32Array; bf16: Float32Array }> = {
  f16: HALF_TABLE,
  bf16: BF16_TABLE,
};

/** A typed-array view of `n` elements at absolute `offset`, or a copy when misaligned. */
function viewAt<T extends Float32Array | Uint16Array>(
  bytes: Uint8Array,
  offset: number,
  n: number,
  Ctor: { new (b: ArrayBuffer, o: number, n: number): T; BYTES_PER_ELEMENT: number },
): T {
  const address = bytes.byteOffset + offset;
  const size = Ctor.BYTES_PER_ELEMENT;
  if (address % size === 0) return new Ctor(bytes.buffer as ArrayBuffer, address, n);
  const copy = bytes.slice(offset, offset + n * size);
  return new Ctor(copy.buffer, 0, n);
}

function checkShape(
  path: string,
  t: GgufTensorInfo,
  name: string,
  d0: number,
  d1: number,
): void {
  const want = [d0, d1, 1, 1];
  const got = [0, 1, 2, 3].map((i) => t.dims[i] ?? 1);
  if (got.some((v, i) => v !== want[i])) {
    throw ggufError(
      path,
      `tensor '${name}' has shape [${got.join(", ")}] (innermost first), expected [${d0}, ${d1}]`,
    );
  }
}

function cannotRun(path: string, t: GgufTensorInfo, name: string): Qwen3Error {
  return new Qwen3Error(
    "unsupported",
    `${path}: GGUF tensor '${name}' has ggml type ${t.type} (${
      GGML_TYPE_NAMES[t.type] ?? "unknown"
    }), which this engine cannot run (it runs ${RUNNABLE_GGML_TYPES})`,
  );
}

function ggufTensor(g: GgufFile, path: string, name: string): GgufTensorInfo {
  const t = g.tensors.get(name);
  if (!t) throw ggufError(path, `has no tensor '${name}'`);
  return t;
}

/** A norm vector as fp32: a view of F32 data, a widened copy of F16 / BF16. */
function ggufVector(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  name: string,
  n: number,
): Float32Array {
  const t = ggufTensor(g, path, name);
  checkShape(path, t, name, n, 1);
  if (t.type === GgmlType.F32) return viewAt(bytes, t.offset, n, Float32Array);
  if (t.type !== GgmlType.F16 && t.type !== GgmlType.BF16) throw cannotRun(path, t, name);
  const codes = viewAt(bytes, t.offset, n, Uint16Array);
  const table = t.type === GgmlType.F16 ? HALF_TABLE : BF16_TABLE;
  return Float32Array.from(codes, (c) => table[c]);
}

/** A (rows, cols) matrix: F32 / F16 / BF16 as views, Q8_0 / Q4_0 converted to Q8 (group 32). */
function ggufMatrix(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  name: string,
  rows: number,
  cols: number,
): WeightTensor {
  const t = ggufTensor(g, path, name);
  const kinds: Record<number, FloatTensor["kind"]> = {
    [GgmlType.F32]: "f32",
    [GgmlType.F16]: "f16",
    [GgmlType.BF16]: "bf16",
  };
  const kind = kinds[t.type];
  if (!kind && t.type !== GgmlType.Q8_0 && t.type !== GgmlType.Q4_0) throw cannotRun(path, t, name);
  checkShape(path, t, name, cols, rows);
  const n = rows * cols;
  if (kind) {
    const data = kind === "f32"
      ? viewAt(bytes, t.offset, n, Float32Array)
      : viewAt(bytes, t.offset, n, Uint16Array);
    return { kind, data, rows, cols };
  }
  const blocks = n / 32;
  const q = new Int8Array(n);
  const s = new Float32Array(blocks);
  const view = new DataView(bytes.buffer, bytes.byteOffset + t.offset, t.bytes);
  if (t.type === GgmlType.Q8_0) {
    const src = new Int8Array(bytes.buffer, bytes.byteOffset + t.offset, t.bytes);
    for (let b = 0; b < blocks; b++) {
      s[b] = HALF_TABLE[view.getUint16(b * 34, true)];
      q.set(src.subarray(b * 34 + 2, b * 34 + 34), b * 32);
    }
  } else {
    // Q4_0: byte i holds value i in its low nibble and value i + 16 in its high one, biased by 8.
    for (let b = 0; b < blocks; b++) {
      s[b] = HALF_TABLE[view.getUint16(b * 18, true)];
      for (let i = 0; i < 16; i++) {
        const byte = view.getUint8(b * 18 + 2 + i);
        q[b * 32 + i] = (byte & 15) - 8;
        q[b * 32 + i + 16] = (byte >> 4) - 8;
      }
    }
  }
  return { q, s, rows, cols, groupSize: 32 };
}

/**
 * Every tensor of a `qwen3` GGUF (names and shapes as docs/formats.md#gguf-tensor-names lists them), with the
 * C loader's rules: matrices F32 / F16 / BF16 in place or Q8_0 / Q4_0 converted without loss
 * to Q8 with group 32; norms F32 (F16 / BF16 widened); `output.weight` absent = tied. Sets
 * `config.groupSize` to 32 when any matrix is quantised (activations are then quantised per
 * 32 values, which needs every width to be a multiple of 32), else 0.
 */
export function ggufWeights(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  config: ModelConfig,
): ModelWeights {
  const c = config;
  const qDim = c.nHeads * c.headDim, kvDim = c.nKvHeads * c.headDim;
  const embed = ggufMatrix(bytes, g, path, "token_embd.weight", c.vocabSize, c.dim);
  const finalNorm = ggufVector(bytes, g, path, "output_norm.weight", c.dim);
  const classifier = c.sharedClassifier
    ? embed
    : ggufMatrix(bytes, g, path, "output.weight", c.vocabSize, c.dim);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const name = (suffix: string) => `blk.${l}.${suffix}.weight`;
    const vec = (suffix: string, n: number) => ggufVector(bytes, g, path, name(suffix), n);
    const mat = (suffix: string, rows: number, cols: number) =>
      ggufMatrix(bytes, g, path, name(suffix), rows, cols);
    layers.push({
      attnNorm: vec("attn_norm", c.dim),
      ffnNorm: vec("ffn_norm", c.dim),
      qNorm: vec("attn_q_norm", c.headDim),
      kNorm: vec("attn_k_norm", c.headDim),
      wq: mat("attn_q", qDim, c.dim),
      wk: mat("attn_k", kvDim, c.dim),
      wv: mat("attn_v", kvDim, c.dim),
      wo: mat("attn_output", c.dim, qDim),
      w1: mat("ffn_gate", c.hiddenDim, c.dim),
      w2: mat("ffn_down", c.dim, c.hiddenDim),
      w3: mat("ffn_up", c.hiddenDim, c.dim),
    });
  }
  const all: WeightTensor[] = [embed, classifier];
  for (const lw of layers) all.push(lw.wq, lw.wk, lw.wv, lw.wo, lw.w1, lw.w2, lw.w3);
  if (all.some((t) => !isFloatTensor(t))) {
    for (const width of [c.dim, c.hiddenDim, qDim]) {
      if (width % 32 !== 0) {
        throw new Qwen3Error(
          "unsupported",
          `${path}: GGUF has Q8_0/Q4_0 weights but a width of ${width}, not a multiple of 32`,
        );
      }
    }
    c.groupSize = 32;
  }
  return { embed, finalNorm, classifier, layers };
}

/**
 * Opens a model file for reading after checking that it is a regular file: opening a FIFO
 * would wait for a writer forever, and a device never ends. Throws a Qwen3Error "io" naming
 * the path and what it is (or why it cannot be opened).
 */
export async function openModelFile(path: string): Promise<{ file: Deno.FsFile; size: number }> {
  await statRegularFile(path, "model file");
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (e) {
    throw new Qwen3Error("io", `${path}: cannot read the model file (${ioReason(e)})`);
  }
  try {
    // The path may have been swapped since it was looked at: judge the file actually open.
    const info = await file.stat();
    if (!info.isFile) {
      throw new Qwen3Error(
        "io",
        `${path}: cannot read the model file: it is ${fileKind(info)}, not a regular file`,
      );
    }
    return { file, size: info.size };
  } catch (e) {
    file.close();
    if (e instanceof Qwen3Error) throw e;
    throw new Qwen3Error("io", `${path}: cannot read the model file (${ioReason(e)})`);
  }
}

/**
 * Reads a whole model file into one buffer of its size: Deno.readFile grows a buffer and
 * copies it, which doubled the peak memory (1.24 GB for a 633 MB file) and took 8x as long.
 * A file that shrank meanwhile is judged by what was read: the size checks reject it.
 */
async function readWhole(path: string): Promise<Uint8Array> {
  const { file, size } = await openModelFile(path);
  using _ = file;
  try {
    const bytes = new Uint8Array(size);
    let filled = 0;
    while (filled < size) {
      const n = await file.read(bytes.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    return bytes.subarray(0, filled);
  } catch (e) {
    throw new Qwen3Error("io", `${path}: cannot read the model file (${ioReason(e)})`);
  }
}

/** True when `bytes` start with the GGUF magic "GGUF". */
export function isGguf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x47 && bytes[1] === 0x47 && bytes[2] === 0x55 &&
    bytes[3] === 0x46;
}

/**
 * A model from its bytes: a GGUF file (by its magic) or a qwen3.c / qwen3-rs checkpoint.
 * Errors as {@link parseHeader} and {@link ggufConfig} / {@link ggufWeights} describe.
 */
export function modelFromBytes(bytes: Uint8Array, path: string): LoadedModel {
  if (isGguf(bytes)) {
    const gguf = readGgufHeader(bytes, bytes.length, path);
    const config = ggufConfig(gguf, path);
    const weights = ggufWeights(bytes, gguf, path, config);
    return { path, config, weights, bytes, gguf };
  }
  const config = parseHeader(bytes.subarray(0, HEADER_BYTES), bytes.length, path);
  return { path, config, weights: checkpointTensors(bytes, config), bytes };
}

/**
 * Reads any supported model file: GGUF (`qwen3` architecture; F32, F16, BF16, Q8_0, Q4_0
 * weights) or a qwen3.c / qwen3-rs checkpoint.
 *
 * @example
 * ```ts ignore
 * import { readModel } from "./model_file.ts";
 * const model = await readModel("Qwen3-0.6B-Q8_0.gguf");
 * console.log(model.config.format, model.config.groupSize); // "gguf" 32
 * ```
 */
export async function readModel(path: string): Promise<LoadedModel> {
  return modelFromBytes(await readWhole(path), path);
}

/**
 * The GGUF header (metadata and tensor table) of a file, reading only as much of it as the
 * header needs: 8 MiB first, doubling while the header runs past what was read. For the
 * tokenizer lists of a model that the C engine maps itself (a real Qwen3's lists are about
 * 6 MB; its weights are not read). Returns undefined when the file is not a GGUF.
 */
export async function readGgufMetadata(path: string): Promise<GgufFile | undefined> {
  const { file, size } = await openModelFile(path);
  using _ = file;
  let want = Math.min(size, 8 << 20);
  for (;;) {
    const bytes = new Uint8Array(want);
    await file.seek(0, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < want) {
      const n = await file.read(bytes.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    if (!isGguf(bytes.subarray(0, filled))) return undefined;
    try {
      return readGgufHeader(bytes.subarray(0, filled), size, path);
    } catch (e) {
      // Truncated inside what was read, but the file goes on: read more of it.
      const short = e instanceof Qwen3Error && /truncated/.test(e.message) && filled < size;
      if (!short) throw e;
      want = Math.min(size, want * 2);
    }
  }
}
