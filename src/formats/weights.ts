/**
 * The weights as the engines see them, whatever file they came from: Q8 matrices (int8
 * groups with fp32 scales: model.bin, GGUF Q8_0 / Q4_0 after conversion), ggml block
 * matrices (GGUF Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, as stored), unquantised
 * matrices (GGUF F32 / F16 / BF16, kept in their storage type) and fp32 norm vectors; and
 * the tables that widen fp16 / bf16 codes to fp32. The readers (checkpoint.ts,
 * gguf_model.ts) build these; the TypeScript engine (src/reference/) runs them.
 * @module
 */

import { fromHalf, type GgufFile } from "./gguf.ts";
import type { ModelConfig } from "../types.ts";

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

/**
 * A matrix kept in a ggml block layout (GGUF Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K;
 * src/formats/ggml_types.ts), run with activations quantised per 32 values.
 */
export interface BlockTensor {
  /** ggml type number (a key of `GGML_BLOCK_LAYOUTS`). */
  ggmlType: number;
  /** The tensor's bytes: rows of blocks, `rowBytes` each. */
  blocks: Uint8Array;
  /** Bytes per row. */
  rowBytes: number;
  /** Output features. */
  rows: number;
  /** Input features (a whole number of blocks). */
  cols: number;
}

/** A weight matrix as an engine runs it: Q8 (W8A8 path), ggml blocks or unquantised. */
export type WeightTensor = Q8Tensor | FloatTensor | BlockTensor;

/**
 * Tells an unquantised matrix from a Q8 one.
 *
 * @param t The matrix.
 * @returns True when `t` is a {@linkcode FloatTensor}.
 */
export function isFloatTensor(t: WeightTensor): t is FloatTensor {
  return "kind" in t;
}

/**
 * Tells a ggml block matrix from the other kinds.
 *
 * @param t The matrix.
 * @returns True when `t` is a {@linkcode BlockTensor}.
 */
export function isBlockTensor(t: WeightTensor): t is BlockTensor {
  return "ggmlType" in t;
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
  /** (hidden_dim, dim) gate projection (a dense block's; absent in a sparse one). */
  w1?: WeightTensor;
  /** (dim, hidden_dim) down projection. */
  w2?: WeightTensor;
  /** (hidden_dim, dim) up projection. */
  w3?: WeightTensor;
  /** A sparse block's experts (Qwen3-MoE); absent in a dense block. */
  moe?: MoeLayerWeights;
}

/** The mixture of experts of one sparse block (docs/numerics.md#mixture-of-experts). */
export interface MoeLayerWeights {
  /** (n_experts, dim) router, fp32. */
  router: Float32Array;
  /** Per expert: (expert_hidden_dim, dim) gate projection. */
  gate: WeightTensor[];
  /** Per expert: (expert_hidden_dim, dim) up projection. */
  up: WeightTensor[];
  /** Per expert: (dim, expert_hidden_dim) down projection. */
  down: WeightTensor[];
}

/** Every tensor of a model, any storage type (a checkpoint's `CheckpointTensors` is one). */
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

/**
 * Widening tables for the engine's inner loops: `f16[code]` and `bf16[code]` are the exact
 * fp32 values of the 65536 codes of each 16-bit type.
 */
export const WIDEN_TABLES: Readonly<{ f16: Float32Array; bf16: Float32Array }> = {
  f16: HALF_TABLE,
  bf16: BF16_TABLE,
};

/**
 * One element of an unquantised matrix, widened to fp32 exactly.
 *
 * @param t The matrix.
 * @param i The element's index in `t.data` (row-major).
 * @returns Its fp32 value.
 */
export function floatTensorValue(t: FloatTensor, i: number): number {
  const v = t.data[i];
  return t.kind === "f32" ? v : t.kind === "f16" ? HALF_TABLE[v] : BF16_TABLE[v];
}
