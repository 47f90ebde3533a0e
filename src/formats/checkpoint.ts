/**
 * The qwen3.c `model.bin` (version 1) checkpoint and the qwen3-rs variant of it
 * (docs/formats.md#checkpoint-format): the header's fields and limits, its encoder and its
 * validating parser, the body's tensor order and typed-array views of every tensor without
 * copying the file. The tensor order lives here once ({@linkcode checkpointTensorOrder}) and
 * is shared with the writers. Reading a file from disk is model_file.ts's
 * `readCheckpoint`; everything here works on bytes already in memory.
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import type { Q8Tensor } from "./weights.ts";
import type { ModelConfig, MoeConfig } from "../types.ts";

/** `model.bin` magic: bytes `31 63 6A 61` on disk, read as a little-endian u32. */
export const CHECKPOINT_MAGIC = 0x616a6331;
/** Bytes before the first tensor. */
export const HEADER_BYTES = 256;
/** The version of a dense checkpoint (qwen3.c's, the only one qwen3.c and qwen3-rs know). */
export const CHECKPOINT_VERSION = 1;
/**
 * The version of a Qwen3-MoE checkpoint (docs/formats.md#qwen3-moe-checkpoint): version 1's
 * fields, the mixture's fields after them and the experts after the dense body. A reader that
 * knows only version 1 refuses it by its version instead of misreading it.
 */
export const CHECKPOINT_MOE_VERSION = 2;
/**
 * Byte offsets of a version 2 header's mixture fields (i32 each), its reserved bytes (zero)
 * and its bitmap of sparse blocks (bit `l % 8` of byte `sparseBitmap + l / 8` set when block
 * `l` is sparse).
 */
export const MOE_HEADER = {
  nExperts: 48,
  nExpertsUsed: 52,
  expertHiddenDim: 56,
  normTopkProb: 60,
  reserved: 64,
  sparseBitmap: 128,
} as const;
/** Largest n_experts of a version 2 header (the GGUF readers' limit; Qwen3-MoE has 128). */
export const MAX_CHECKPOINT_EXPERTS = 1024;
/** Most blocks a version 2 checkpoint can have: one bit each in the header's last 128 bytes. */
export const MAX_MOE_CHECKPOINT_LAYERS = (HEADER_BYTES - MOE_HEADER.sparseBitmap) * 8;
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
 * n_heads * head_dim is held to the dim limit as well. The GGUF reader and the Hugging Face
 * exporter hold the same fields to the same limits.
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

/** One transformer block's weights in a checkpoint. */
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
  /**
   * A sparse block's experts (a Qwen3-MoE checkpoint); absent in a dense block. A sparse
   * block has no dense feed-forward: its `w1`, `w2`, `w3` are then empty (0 x 0).
   */
  moe?: CheckpointMoeLayer;
}

/** One sparse block of a Qwen3-MoE checkpoint, as views into its bytes. */
export interface CheckpointMoeLayer {
  /** (n_experts, dim) router, fp32. */
  router: Float32Array;
  /** Per expert: (expert_hidden_dim, dim) gate projection. */
  gate: Q8Tensor[];
  /** Per expert: (expert_hidden_dim, dim) up projection. */
  up: Q8Tensor[];
  /** Per expert: (dim, expert_hidden_dim) down projection. */
  down: Q8Tensor[];
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

/** A per-layer norm's slot name (as {@linkcode TensorSlot} spells it). */
export type LayerNorm = "attn_norm" | "ffn_norm" | "q_norm" | "k_norm";

/** The {@linkcode LayerTensors} field of each per-layer norm slot. */
export const LAYER_NORM_FIELDS: Readonly<
  Record<LayerNorm, "attnNorm" | "ffnNorm" | "qNorm" | "kNorm">
> = {
  attn_norm: "attnNorm",
  ffn_norm: "ffnNorm",
  q_norm: "qNorm",
  k_norm: "kNorm",
};

/** One entry of the body, in file order. */
export type TensorSlot =
  | { kind: "f32"; name: LayerNorm; layer: number; length: number }
  | { kind: "f32"; name: "final_norm"; layer: -1; length: number }
  | { kind: "q8"; name: LayerMatrix; layer: number; rows: number; cols: number }
  | { kind: "q8"; name: "embed" | "classifier"; layer: -1; rows: number; cols: number };

/** The expert projections of a sparse block, in file order. */
export const EXPERT_MATRICES = ["gate", "up", "down"] as const;

/**
 * One entry of a Qwen3-MoE checkpoint's experts section: a sparse block's fp32 router, or one
 * expert's Q8 projection.
 */
export type MoeSlot =
  | { kind: "router"; layer: number; rows: number; cols: number }
  | {
    kind: "expert";
    name: (typeof EXPERT_MATRICES)[number];
    layer: number;
    expert: number;
    rows: number;
    cols: number;
  };

/** Any entry of a checkpoint's body ({@linkcode checkpointFileOrder}). */
export type CheckpointSlot = TensorSlot | MoeSlot;

/** The configuration fields that fix the body's tensors and their shapes. */
export type CheckpointShape =
  & Pick<
    ModelConfig,
    | "dim"
    | "hiddenDim"
    | "nLayers"
    | "nHeads"
    | "nKvHeads"
    | "headDim"
    | "vocabSize"
    | "sharedClassifier"
  >
  & { moe?: MoeConfig };

/**
 * The shape of a per-layer matrix.
 *
 * @param c The model's widths.
 * @param name The matrix.
 * @returns `[rows, cols]` (HF `[out, in]`).
 */
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
 * The body's tensors in file order (docs/formats.md#checkpoint-body): fp32 attn_norm of
 * every layer, ffn_norm, final_norm, q_norm, k_norm; then Q8 embed, all layers' wq, all wk,
 * wv, wo, w1, w2, w3; then the classifier when not shared. Readers and writers both walk
 * this list.
 *
 * @param c The model's shape.
 * @returns A generator of every slot, in file order.
 */
export function* checkpointTensorOrder(c: CheckpointShape): Generator<TensorSlot> {
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

/**
 * The body of a checkpoint file in order (docs/formats.md#checkpoint-body): the slots of
 * {@linkcode checkpointTensorOrder} for a dense model; for a Qwen3-MoE model
 * (docs/formats.md#qwen3-moe-checkpoint) the same without the sparse blocks' `w1`, `w2`, `w3`,
 * followed by the experts section: per sparse block, in block order, its fp32 router, then
 * per expert its gate, up and down projections (Q8).
 *
 * @param c The model's shape.
 * @returns A generator of every slot, in file order.
 */
export function* checkpointFileOrder(c: CheckpointShape): Generator<CheckpointSlot> {
  const moe = c.moe;
  for (const slot of checkpointTensorOrder(c)) {
    const ffn = slot.name === "w1" || slot.name === "w2" || slot.name === "w3";
    if (!(moe && ffn && moe.sparse[slot.layer])) yield slot;
  }
  if (!moe) return;
  for (let l = 0; l < c.nLayers; l++) {
    if (!moe.sparse[l]) continue;
    yield { kind: "router", layer: l, rows: moe.nExperts, cols: c.dim };
    for (let e = 0; e < moe.nExperts; e++) {
      for (const name of EXPERT_MATRICES) {
        const [rows, cols] = name === "down"
          ? [c.dim, moe.expertHiddenDim]
          : [moe.expertHiddenDim, c.dim];
        yield { kind: "expert", name, layer: l, expert: e, rows, cols };
      }
    }
  }
}

/**
 * Bytes a tensor slot occupies: 4 per fp32 value; 1 per int8 value plus 4 per group scale.
 *
 * @param slot The slot.
 * @param groupSize Values per Q8 scale.
 * @returns Its size in bytes.
 */
export function slotBytes(slot: CheckpointSlot, groupSize: number): number {
  if (slot.kind === "f32") return 4 * slot.length;
  const n = slot.rows * slot.cols;
  if (slot.kind === "router") return 4 * n;
  return n + 4 * (n / groupSize);
}

/**
 * The exact size of a checkpoint with this configuration, header included.
 *
 * @param c The model's shape and group size.
 * @returns The file size in bytes.
 */
export function expectedFileSize(c: CheckpointShape & Pick<ModelConfig, "groupSize">): number {
  let size = HEADER_BYTES;
  // the experts section in closed form: a hostile header can ask for 1024 blocks of 1024
  // experts, 3 million slots to walk (0.3 s) before the size check refuses it
  for (const slot of checkpointTensorOrder(c)) {
    const ffn = slot.name === "w1" || slot.name === "w2" || slot.name === "w3";
    if (!(ffn && c.moe?.sparse[slot.layer])) size += slotBytes(slot, c.groupSize);
  }
  const m = c.moe;
  if (!m) return size;
  const expert = (r: number, cols: number) =>
    slotBytes({ kind: "expert", name: "gate", layer: 0, expert: 0, rows: r, cols }, c.groupSize);
  const block = 4 * m.nExperts * c.dim +
    m.nExperts * (2 * expert(m.expertHiddenDim, c.dim) + expert(c.dim, m.expertHiddenDim));
  return size + block * m.sparse.filter((s) => s).length;
}

/**
 * The 256-byte header of a checkpoint in either layout (qwen3-rs puts `architecture_id` = 1
 * at offset 8 and shifts the ten fields by 4). A Qwen3-MoE model (`c.moe`) gets a version 2
 * header (qwen3.c layout only) with the mixture's fields and its bitmap of sparse blocks.
 *
 * @param c The model's configuration (`format` is not read: `layout` decides).
 * @param layout Which header layout to write.
 * @returns The header bytes, zero-padded to {@linkcode HEADER_BYTES}.
 * @throws {Qwen3Error} `unsupported` for a Qwen3-MoE model in the qwen3-rs layout or with
 * more than {@linkcode MAX_MOE_CHECKPOINT_LAYERS} blocks.
 */
export function encodeHeader(c: ModelConfig, layout: "qwen3.c" | "qwen3-rs"): Uint8Array {
  const header = new Uint8Array(HEADER_BYTES);
  const view = new DataView(header.buffer);
  view.setUint32(0, CHECKPOINT_MAGIC, true);
  view.setInt32(4, c.moe ? CHECKPOINT_MOE_VERSION : CHECKPOINT_VERSION, true);
  if (c.moe) encodeMoeFields(view, c.moe, c.nLayers, layout);
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

/** Writes a version 2 header's mixture fields and sparse-block bitmap. */
function encodeMoeFields(view: DataView, moe: MoeConfig, nLayers: number, layout: string): void {
  if (layout !== "qwen3.c") {
    throw new Qwen3Error(
      "unsupported",
      "a Qwen3-MoE checkpoint has only the qwen3.c header layout",
    );
  }
  if (nLayers > MAX_MOE_CHECKPOINT_LAYERS) {
    throw new Qwen3Error(
      "unsupported",
      `a Qwen3-MoE checkpoint holds at most ${MAX_MOE_CHECKPOINT_LAYERS} blocks; the model has ${nLayers}`,
    );
  }
  view.setInt32(MOE_HEADER.nExperts, moe.nExperts, true);
  view.setInt32(MOE_HEADER.nExpertsUsed, moe.nExpertsUsed, true);
  view.setInt32(MOE_HEADER.expertHiddenDim, moe.expertHiddenDim, true);
  view.setInt32(MOE_HEADER.normTopkProb, moe.normTopkProb ? 1 : 0, true);
  for (let l = 0; l < nLayers; l++) {
    if (!moe.sparse[l]) continue;
    const at = MOE_HEADER.sparseBitmap + (l >> 3);
    view.setUint8(at, view.getUint8(at) | (1 << (l & 7)));
  }
}

function formatError(path: string, message: string): Qwen3Error {
  return new Qwen3Error("format", `${path}: ${message}`);
}

/** Refuses a qwen3-rs header whose `architecture_id` (byte 8) is not Qwen3ForCausalLM. */
function checkArchitectureId(view: DataView, path: string, layout: string): void {
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

/** Reads the ten fields from byte `base`, each checked alone: 0 or 1, or positive and in limit. */
function readHeaderFields(
  view: DataView,
  base: number,
  path: string,
  layout: string,
): Record<HeaderField, number> {
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
  return raw;
}

/** Checks the rules between fields: GQA ratio, even head_dim, q width, group size, dim % 4. */
function checkFieldRelations(
  raw: Record<HeaderField, number>,
  path: string,
  layout: string,
): void {
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
}

/** The configuration of checked header fields (RoPE base and epsilon are Qwen3's). */
function configFromFields(
  raw: Record<HeaderField, number>,
  format: "qwen3.c" | "qwen3-rs",
): ModelConfig {
  return {
    format,
    dim: raw.dim,
    hiddenDim: raw.hidden_dim,
    nLayers: raw.n_layers,
    nHeads: raw.n_heads,
    nKvHeads: raw.n_kv_heads,
    headDim: raw.head_dim,
    vocabSize: raw.vocab_size,
    seqLen: raw.seq_len,
    groupSize: raw.group_size,
    sharedClassifier: raw.shared_classifier === 1,
    ropeTheta: QWEN3_ROPE_THETA,
    rmsEps: QWEN3_RMS_EPS,
  };
}

/** Refuses a file whose size differs from the one the header implies, naming both. */
function checkFileSize(
  config: ModelConfig,
  fileSize: number,
  path: string,
  layout: string,
): void {
  const expected = expectedFileSize(config);
  if (fileSize === expected) return;
  throw formatError(
    path,
    `file size is ${fileSize} bytes but the header implies ${expected} (${layout}: ` +
      `dim ${config.dim}, hidden_dim ${config.hiddenDim}, n_layers ${config.nLayers}, ` +
      `n_heads ${config.nHeads}, n_kv_heads ${config.nKvHeads}, vocab_size ${config.vocabSize}, ` +
      `head_dim ${config.headDim}, shared_classifier ${
        config.sharedClassifier ? 1 : 0
      }, group_size ${config.groupSize}): ` +
      `the file is ${
        fileSize < expected ? "truncated" : "longer than its header says (corrupt or foreign)"
      }`,
  );
}

/**
 * Reads the ten fields of one layout and validates them, the file size included, in the C
 * loader's order and with its messages word for word (csrc/src/model_checkpoint.c parse_layout), so the
 * two engines reject the same files the same way.
 */
function parseLayout(
  view: DataView,
  fileSize: number,
  path: string,
  format: "qwen3.c" | "qwen3-rs",
): ModelConfig {
  const layout = `${format} layout`;
  if (format === "qwen3-rs") checkArchitectureId(view, path, layout);
  const raw = readHeaderFields(view, format === "qwen3-rs" ? 12 : 8, path, layout);
  checkFieldRelations(raw, path, layout);
  const config = configFromFields(raw, format);
  checkFileSize(config, fileSize, path, layout);
  return config;
}

/**
 * Validates a checkpoint header and returns the model's configuration. As in the C loader,
 * the value at offset 8 suggests the layout (1 or 2 is a qwen3-rs `architecture_id`; 0 reads
 * as a qwen3.c dim, whose error is the clearer), and the other layout is tried when the
 * suggested one fails; the suggested layout's error is the one reported.
 *
 * @param header At least the file's first {@linkcode HEADER_BYTES} bytes (the whole file
 * will do).
 * @param fileSize The file's size, which must equal the size the header implies exactly.
 * @param path The file's name, for messages.
 * @returns The model's configuration (`format` "qwen3.c" or "qwen3-rs").
 * @throws {Qwen3Error} `format` naming the file, the field, the expected and the actual
 * value: a short file, a wrong magic or version, a field out of range, fields that do not
 * fit together, a size that differs from the header's.
 * @throws {Qwen3Error} `unsupported` for a valid file this engine cannot run: a qwen3-rs
 * Llama, or dim not a multiple of 4.
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
  if (version === CHECKPOINT_MOE_VERSION) return parseMoeLayout(view, fileSize, path);
  if (version !== CHECKPOINT_VERSION) {
    throw formatError(
      path,
      `header field version = ${version}, expected ${CHECKPOINT_VERSION} (dense) or ` +
        `${CHECKPOINT_MOE_VERSION} (Qwen3-MoE)`,
    );
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

/**
 * A version 2 (Qwen3-MoE) header: the qwen3.c layout's ten fields and their rules, then the
 * mixture's fields, the reserved bytes and the sparse-block bitmap, then the file size, in
 * the C loader's order and words (csrc/src/model_checkpoint.c parse_moe_fields).
 */
function parseMoeLayout(view: DataView, fileSize: number, path: string): ModelConfig {
  const layout = "qwen3.c layout, version 2 (Qwen3-MoE)";
  const raw = readHeaderFields(view, 8, path, layout);
  checkFieldRelations(raw, path, layout);
  const moe = readMoeFields(view, raw, path, layout);
  const config = { ...configFromFields(raw, "qwen3.c"), moe };
  checkFileSize(config, fileSize, path, layout);
  return config;
}

/** The mixture's fields of a version 2 header, each checked. */
function readMoeFields(
  view: DataView,
  raw: Record<HeaderField, number>,
  path: string,
  layout: string,
): MoeConfig {
  const field = (name: string, at: number, max: number) => {
    const v = view.getInt32(at, true);
    if (v <= 0 || v > max) {
      throw formatError(path, `header field ${name} = ${v} is not in 1..${max} (${layout})`);
    }
    return v;
  };
  const nExperts = field("n_experts", MOE_HEADER.nExperts, MAX_CHECKPOINT_EXPERTS);
  const nExpertsUsed = field("n_experts_used", MOE_HEADER.nExpertsUsed, nExperts);
  const expertHiddenDim = field("expert_hidden_dim", MOE_HEADER.expertHiddenDim, HEADER_LIMITS.dim);
  const norm = view.getInt32(MOE_HEADER.normTopkProb, true);
  if (norm !== 0 && norm !== 1) {
    throw formatError(path, `header field norm_topk_prob = ${norm} must be 0 or 1 (${layout})`);
  }
  if (expertHiddenDim % raw.group_size !== 0) {
    throw formatError(
      path,
      `group_size ${raw.group_size} does not divide expert_hidden_dim = ${expertHiddenDim} (${layout})`,
    );
  }
  for (let at = MOE_HEADER.reserved; at < MOE_HEADER.sparseBitmap; at++) {
    if (view.getUint8(at) !== 0) {
      throw formatError(
        path,
        `header byte ${at} is ${view.getUint8(at)}, must be 0 (reserved) (${layout})`,
      );
    }
  }
  if (raw.n_layers > MAX_MOE_CHECKPOINT_LAYERS) {
    throw formatError(
      path,
      `header field n_layers = ${raw.n_layers} exceeds the limit of ${MAX_MOE_CHECKPOINT_LAYERS} (${layout})`,
    );
  }
  const sparse: boolean[] = [];
  for (let l = 0; l < MAX_MOE_CHECKPOINT_LAYERS; l++) {
    const bit = (view.getUint8(MOE_HEADER.sparseBitmap + (l >> 3)) >> (l & 7)) & 1;
    if (l < raw.n_layers) sparse.push(bit === 1);
    else if (bit) {
      throw formatError(
        path,
        `sparse-block bit ${l} is set but the model has ${raw.n_layers} blocks (${layout})`,
      );
    }
  }
  if (!sparse.includes(true)) throw formatError(path, `no block is marked sparse (${layout})`);
  return { nExperts, nExpertsUsed, expertHiddenDim, normTopkProb: norm === 1, sparse };
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

/** Tensors with every slot empty, for {@linkcode checkpointTensors} to fill in. */
function emptyTensors(config: ModelConfig): CheckpointTensors {
  const emptyQ8: Q8Tensor = {
    q: new Int8Array(0),
    s: new Float32Array(0),
    rows: 0,
    cols: 0,
    groupSize: config.groupSize,
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
  return { embed: emptyQ8, finalNorm: new Float32Array(0), classifier: emptyQ8, layers };
}

/**
 * Views of every tensor of a validated checkpoint. Only scale arrays that are not 4-byte
 * aligned in memory are copied (possible only when `bytes` itself starts unaligned).
 *
 * @param bytes The whole file.
 * @param config Its configuration, from {@linkcode parseHeader} on the same bytes.
 * @returns Every tensor; `classifier` is `embed` when the classifier is shared.
 */
export function checkpointTensors(bytes: Uint8Array, config: ModelConfig): CheckpointTensors {
  const gs = config.groupSize;
  const out = emptyTensors(config);
  let off = HEADER_BYTES;
  for (const slot of checkpointFileOrder(config)) {
    if (slot.kind === "router") {
      out.layers[slot.layer].moe = {
        router: floatsAt(bytes, off, slot.rows * slot.cols),
        gate: [],
        up: [],
        down: [],
      };
    } else if (slot.kind === "expert") {
      const n = slot.rows * slot.cols;
      out.layers[slot.layer].moe![slot.name].push({
        q: new Int8Array(bytes.buffer, bytes.byteOffset + off, n),
        s: floatsAt(bytes, off + n, n / gs),
        rows: slot.rows,
        cols: slot.cols,
        groupSize: gs,
      });
    } else if (slot.kind === "f32") {
      const values = floatsAt(bytes, off, slot.length);
      if (slot.name === "final_norm") out.finalNorm = values;
      else out.layers[slot.layer][LAYER_NORM_FIELDS[slot.name]] = values;
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
      else out.layers[slot.layer][slot.name] = t;
    }
    off += slotBytes(slot, gs);
  }
  if (config.sharedClassifier) out.classifier = out.embed;
  return out;
}

/**
 * The norm vector an "f32" slot names in a checkpoint's tensors.
 *
 * @param t The checkpoint's tensors.
 * @param slot A norm slot of {@linkcode checkpointTensorOrder} for the same checkpoint.
 * @returns The vector.
 */
export function slotTensor(
  t: CheckpointTensors,
  slot: Extract<TensorSlot, { kind: "f32" }>,
): Float32Array;
/**
 * The Q8 matrix a "q8" slot names in a checkpoint's tensors.
 *
 * @param t The checkpoint's tensors.
 * @param slot A matrix slot of {@linkcode checkpointTensorOrder} for the same checkpoint.
 * @returns The matrix (`embed` for a shared classifier).
 */
export function slotTensor(
  t: CheckpointTensors,
  slot: Extract<TensorSlot, { kind: "q8" }>,
): Q8Tensor;
/**
 * The tensor any slot names in a checkpoint's tensors.
 *
 * @param t The checkpoint's tensors.
 * @param slot A slot of {@linkcode checkpointTensorOrder} for the same checkpoint.
 * @returns The norm vector or the Q8 matrix.
 */
export function slotTensor(t: CheckpointTensors, slot: TensorSlot): Float32Array | Q8Tensor;
export function slotTensor(t: CheckpointTensors, slot: TensorSlot): Float32Array | Q8Tensor {
  if (slot.kind === "f32") {
    return slot.name === "final_norm"
      ? t.finalNorm
      : t.layers[slot.layer][LAYER_NORM_FIELDS[slot.name]];
  }
  return slot.name === "embed"
    ? t.embed
    : slot.name === "classifier"
    ? t.classifier
    : t.layers[slot.layer][slot.name];
}
