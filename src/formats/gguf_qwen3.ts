/**
 * What makes a GGUF file a Qwen3 model, in one table (docs/formats.md#gguf-metadata-keys and
 * #gguf-tensor-names): the `general.*`, `qwen3.*` and `tokenizer.*` keys with the
 * configuration field each holds, which are required, their ranges and defaults; and the
 * tensor names. The reader (gguf_model.ts), the writers (gguf_convert.ts, the Hugging Face
 * exporter) and the test helpers all take the names from here; gguf.ts, the container,
 * knows nothing of Qwen3. The C engine has its own copy of the table in csrc/src/model_gguf.c.
 * @module
 */

import { quoteExcerpt, Qwen3Error } from "../errors.ts";
import type { GgufValue } from "./gguf.ts";
import {
  type CheckpointShape,
  checkpointTensorOrder,
  HEADER_LIMITS,
  type LayerMatrix,
  type LayerNorm,
  QWEN3_RMS_EPS,
  QWEN3_ROPE_THETA,
  type TensorSlot,
} from "./checkpoint.ts";
import type { ModelConfig } from "../types.ts";

/** `general.architecture` of a Qwen3 GGUF: the only one the engines run (dense Qwen3). */
export const QWEN3_ARCHITECTURE = "qwen3";

/** The `general.*` and `tokenizer.*` keys the Qwen3 readers and writers use. */
export const GGUF_KEYS = {
  /** Must be {@linkcode QWEN3_ARCHITECTURE}. Required. */
  architecture: "general.architecture",
  /** The model's name (written; not read). */
  name: "general.name",
  /** llama.cpp's `llama_ftype` of the weights (written; not read). */
  fileType: "general.file_type",
  /** Block format version of quantised files (written as 2 for Q8_0; not read). */
  quantizationVersion: "general.quantization_version",
  /** Tokenizer kind: must be "gpt2" (byte-level BPE). */
  tokenizerModel: "tokenizer.ggml.model",
  /** Pre-tokenizer name ("qwen2"; written, not read: the pre-tokenizer is always Qwen's). */
  tokenizerPre: "tokenizer.ggml.pre",
  /** Token strings in the GPT-2 byte alphabet, by id. */
  tokens: "tokenizer.ggml.tokens",
  /** One llama_token_type per token (i32). */
  tokenType: "tokenizer.ggml.token_type",
  /** `"left right"` merges in rank order. */
  merges: "tokenizer.ggml.merges",
  /** End-of-sequence token id. */
  eosId: "tokenizer.ggml.eos_token_id",
  /** Padding token id. */
  paddingId: "tokenizer.ggml.padding_token_id",
  /** Beginning-of-sequence token id. */
  bosId: "tokenizer.ggml.bos_token_id",
  /** Whether a BOS token is prepended (false for Qwen3). */
  addBos: "tokenizer.ggml.add_bos_token",
  /** The model's Jinja chat template. */
  chatTemplate: "tokenizer.chat_template",
} as const;

/**
 * What a `qwen3.*` key holds, named as {@linkcode ModelConfig} names it; `valueDim` and
 * `ropeDim` are not in the configuration: they must equal `headDim`.
 */
export type Qwen3GgufField =
  | "dim"
  | "hiddenDim"
  | "nLayers"
  | "nHeads"
  | "nKvHeads"
  | "headDim"
  | "valueDim"
  | "ropeDim"
  | "seqLen"
  | "ropeTheta"
  | "rmsEps";

/** The `qwen3.*` values of a file, by field. */
export type Qwen3GgufValues = Record<Qwen3GgufField, number>;

/** One `qwen3.*` hyper-parameter key. */
export interface Qwen3GgufKey {
  /** The full key, e.g. `qwen3.embedding_length`. */
  key: string;
  /** The value it holds. */
  field: Qwen3GgufField;
  /**
   * How the writers store it: "u32" for a count (readers accept any integer type, from 1 to
   * `max`), "f32" for a float (readers accept a positive finite float).
   */
  type: "u32" | "f32";
  /** Largest value accepted (counts only): the checkpoint header's limit. */
  max?: number;
  /**
   * The value when the key is absent, from the values read before it (the table is in
   * reading order). Absent: the key is required.
   */
  default?: (before: Readonly<Partial<Qwen3GgufValues>>) => number;
}

/**
 * The `qwen3.*` keys in the order the readers read them, which is also the order of the C
 * loader's checks (so a file with several faults gets the same message from both engines),
 * and the order the writers write them. The writers write every key, defaults included:
 * llama.cpp defaults `rope.dimension_count` to `embedding_length / head_count` (64 for
 * Qwen3-0.6B) where Qwen3 rotates the whole head (`key_length`, 128).
 */
export const QWEN3_GGUF_KEYS: readonly Qwen3GgufKey[] = [
  { key: "qwen3.embedding_length", field: "dim", type: "u32", max: HEADER_LIMITS.dim },
  {
    key: "qwen3.feed_forward_length",
    field: "hiddenDim",
    type: "u32",
    max: HEADER_LIMITS.hidden_dim,
  },
  { key: "qwen3.block_count", field: "nLayers", type: "u32", max: HEADER_LIMITS.n_layers },
  { key: "qwen3.attention.head_count", field: "nHeads", type: "u32", max: HEADER_LIMITS.n_heads },
  {
    key: "qwen3.attention.head_count_kv",
    field: "nKvHeads",
    type: "u32",
    max: HEADER_LIMITS.n_kv_heads,
    default: (v) => v.nHeads!,
  },
  {
    key: "qwen3.attention.key_length",
    field: "headDim",
    type: "u32",
    max: HEADER_LIMITS.head_dim,
    default: (v) => Math.floor(v.dim! / v.nHeads!),
  },
  {
    key: "qwen3.attention.value_length",
    field: "valueDim",
    type: "u32",
    max: HEADER_LIMITS.head_dim,
    default: (v) => v.headDim!,
  },
  {
    key: "qwen3.rope.dimension_count",
    field: "ropeDim",
    type: "u32",
    max: HEADER_LIMITS.head_dim,
    default: (v) => v.headDim!,
  },
  { key: "qwen3.context_length", field: "seqLen", type: "u32", max: HEADER_LIMITS.seq_len },
  {
    key: "qwen3.rope.freq_base",
    field: "ropeTheta",
    type: "f32",
    default: () => QWEN3_ROPE_THETA,
  },
  {
    key: "qwen3.attention.layer_norm_rms_epsilon",
    field: "rmsEps",
    type: "f32",
    default: () => QWEN3_RMS_EPS,
  },
];

/**
 * The key of a field, from {@linkcode QWEN3_GGUF_KEYS}.
 *
 * @param field The field.
 * @returns Its `qwen3.*` key.
 */
export function qwen3GgufKey(field: Qwen3GgufField): string {
  return QWEN3_GGUF_KEYS.find((k) => k.field === field)!.key;
}

/** The tensors outside the blocks. */
export const QWEN3_GGUF_TENSORS = {
  /** (vocab_size, dim) token embedding; its row count is the vocabulary size. */
  embed: "token_embd.weight",
  /** (dim) final RMSNorm weight. */
  finalNorm: "output_norm.weight",
  /** (vocab_size, dim) classifier; absent when tied to the embedding. */
  classifier: "output.weight",
} as const;

/**
 * The name inside `blk.N.<name>.weight` of each per-block tensor, by its checkpoint slot
 * name, in the order the writers write a block (llama.cpp's).
 */
export const QWEN3_GGUF_BLOCK_TENSORS: Readonly<Record<LayerNorm | LayerMatrix, string>> = {
  attn_norm: "attn_norm",
  wq: "attn_q",
  wk: "attn_k",
  wv: "attn_v",
  wo: "attn_output",
  q_norm: "attn_q_norm",
  k_norm: "attn_k_norm",
  ffn_norm: "ffn_norm",
  w1: "ffn_gate",
  w3: "ffn_up",
  w2: "ffn_down",
};

/**
 * The GGUF name of a per-block tensor.
 *
 * @param layer The block, from 0.
 * @param slot The tensor's checkpoint slot name.
 * @returns e.g. `blk.0.attn_q.weight` for (0, "wq").
 */
export function ggufBlockTensorName(layer: number, slot: LayerNorm | LayerMatrix): string {
  return `blk.${layer}.${QWEN3_GGUF_BLOCK_TENSORS[slot]}.weight`;
}

/** One tensor of a Qwen3 GGUF file: its GGUF name and the checkpoint slot it holds. */
export interface GgufSlot {
  /** e.g. `blk.0.attn_q.weight`. */
  name: string;
  /** The same tensor in the checkpoint's terms (norms are "f32", matrices "q8"). */
  slot: TensorSlot;
}

/**
 * The tensors of a Qwen3 GGUF file in the order the writers write them: `token_embd`,
 * `output_norm`, `output` (untied only), then each block's tensors in the order of
 * {@linkcode QWEN3_GGUF_BLOCK_TENSORS}.
 *
 * @param c The model's shape.
 * @returns Every tensor's name and checkpoint slot.
 */
export function qwen3GgufTensors(c: CheckpointShape): GgufSlot[] {
  const slots = new Map<string, TensorSlot>();
  for (const s of checkpointTensorOrder(c)) slots.set(`${s.name}/${s.layer}`, s);
  const get = (name: string, layer: number) => slots.get(`${name}/${layer}`)!;
  const out: GgufSlot[] = [{ name: QWEN3_GGUF_TENSORS.embed, slot: get("embed", -1) }];
  out.push({ name: QWEN3_GGUF_TENSORS.finalNorm, slot: get("final_norm", -1) });
  if (!c.sharedClassifier) {
    out.push({ name: QWEN3_GGUF_TENSORS.classifier, slot: get("classifier", -1) });
  }
  for (let l = 0; l < c.nLayers; l++) {
    for (const key of Object.keys(QWEN3_GGUF_BLOCK_TENSORS) as (LayerNorm | LayerMatrix)[]) {
      out.push({ name: ggufBlockTensorName(l, key), slot: get(key, l) });
    }
  }
  return out;
}

/**
 * The GGUF dims of a checkpoint slot.
 *
 * @param slot The slot.
 * @returns Its dims, innermost first: `[length]` or `[cols, rows]`.
 */
export function ggufDims(slot: TensorSlot): number[] {
  return slot.kind === "f32" ? [slot.length] : [slot.cols, slot.rows];
}

// ---------------------------------------------------------------------------------------------
// Metadata for the writers

/** The Jinja chat template stored in converted files: Qwen3's turn format, no tools. */
export const QWEN3_CHAT_TEMPLATE: string =
  "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";

/** The parts of a Hugging Face `tokenizer.json` the GGUF metadata needs. */
export interface TokenizerJson {
  /** BPE vocabulary and merges. */
  model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  /** Added (special) tokens. */
  added_tokens: { id: number; content: string; special: boolean }[];
}

/** GGUF token types (llama.cpp's llama_token_type). */
const TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5;

/** Token strings and types by id for `vocabSize` rows; rows past the tokenizer get `[PADi]`. */
function tokenLists(
  json: TokenizerJson,
  vocabSize: number,
): { tokens: string[]; types: Int32Array } {
  const tokens: string[] = new Array(vocabSize);
  const types = new Int32Array(vocabSize);
  for (const [text, id] of Object.entries(json.model.vocab)) {
    if (id < vocabSize) {
      tokens[id] = text;
      types[id] = TOKEN_NORMAL;
    }
  }
  for (const t of json.added_tokens) {
    if (t.id < vocabSize) {
      tokens[t.id] = t.content;
      types[t.id] = t.special ? TOKEN_CONTROL : TOKEN_USER_DEFINED;
    }
  }
  // Embedding rows beyond the tokenizer get placeholder names, as llama.cpp's converter does.
  for (let i = 0; i < vocabSize; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TOKEN_UNUSED;
    }
  }
  return { tokens, types };
}

/**
 * The `tokenizer.ggml.*` metadata for a vocabulary of `vocabSize` embedding rows, and
 * `tokenizer.chat_template`.
 *
 * @param json The Hugging Face tokenizer.json.
 * @param vocabSize Embedding rows: the length of the token lists.
 * @param chatTemplate The Jinja chat template (default {@linkcode QWEN3_CHAT_TEMPLATE}).
 * @param eosId The end-of-sequence id (default: `<|im_end|>`'s).
 * @returns The key/value pairs, in the order written.
 * @throws {Qwen3Error} `format` when the tokenizer lacks `<|im_end|>` (and no `eosId` is
 * given) or `<|endoftext|>`.
 */
export function tokenizerMetadata(
  json: TokenizerJson,
  vocabSize: number,
  chatTemplate: string = QWEN3_CHAT_TEMPLATE,
  eosId?: number,
): [string, GgufValue][] {
  const { tokens, types } = tokenLists(json, vocabSize);
  const merges = json.model.merges.map((m) => typeof m === "string" ? m : `${m[0]} ${m[1]}`);
  const id = (text: string) => {
    const t = json.added_tokens.find((a) => a.content === text);
    if (!t) throw new Qwen3Error("format", `tokenizer.json has no ${quoteExcerpt(text)} token`);
    return t.id;
  };
  const K = GGUF_KEYS;
  return [
    [K.tokenizerModel, { type: "string", value: "gpt2" }],
    [K.tokenizerPre, { type: "string", value: "qwen2" }],
    [K.tokens, { type: "string[]", value: tokens }],
    [K.tokenType, { type: "i32[]", value: types }],
    [K.merges, { type: "string[]", value: merges }],
    [K.eosId, { type: "u32", value: eosId ?? id("<|im_end|>") }],
    [K.paddingId, { type: "u32", value: id("<|endoftext|>") }],
    [K.bosId, { type: "u32", value: id("<|endoftext|>") }],
    [K.addBos, { type: "bool", value: false }],
    [K.chatTemplate, { type: "string", value: chatTemplate }],
  ];
}

/** llama.cpp's `general.file_type` values (llama_ftype) for the types written here. */
export const LLAMA_FILE_TYPE = {
  /** Every tensor F32. */
  ALL_F32: 0,
  /** Matrices F16. */
  MOSTLY_F16: 1,
  /** Matrices Q4_1 (output / tied embedding Q6_K). */
  MOSTLY_Q4_1: 3,
  /** Matrices Q8_0. */
  MOSTLY_Q8_0: 7,
  /** Matrices Q5_0 (output / tied embedding Q6_K). */
  MOSTLY_Q5_0: 8,
  /** Matrices Q5_1 (output / tied embedding Q6_K). */
  MOSTLY_Q5_1: 9,
  /** llama.cpp's Q4_K_M mixture: Q4_K, with Q6_K where it matters. */
  MOSTLY_Q4_K_M: 15,
  /** llama.cpp's Q5_K_M mixture: Q5_K, with Q6_K where it matters. */
  MOSTLY_Q5_K_M: 17,
  /** Matrices Q6_K. */
  MOSTLY_Q6_K: 18,
  /** Matrices BF16. */
  MOSTLY_BF16: 32,
} as const;

/** The file types whose matrices are block-quantised (stamped with the block format version). */
const QUANTIZED_FILE_TYPES: ReadonlySet<number> = new Set([
  LLAMA_FILE_TYPE.MOSTLY_Q4_1,
  LLAMA_FILE_TYPE.MOSTLY_Q8_0,
  LLAMA_FILE_TYPE.MOSTLY_Q5_0,
  LLAMA_FILE_TYPE.MOSTLY_Q5_1,
  LLAMA_FILE_TYPE.MOSTLY_Q4_K_M,
  LLAMA_FILE_TYPE.MOSTLY_Q5_K_M,
  LLAMA_FILE_TYPE.MOSTLY_Q6_K,
]);

/** The model shape fields the GGUF metadata and tensor table need. */
export type GgufModelShape = Pick<
  ModelConfig,
  | "dim"
  | "hiddenDim"
  | "nLayers"
  | "nHeads"
  | "nKvHeads"
  | "headDim"
  | "vocabSize"
  | "seqLen"
  | "sharedClassifier"
  | "ropeTheta"
  | "rmsEps"
>;

/** Options of {@linkcode qwen3GgufMetadata}. */
export interface Qwen3GgufMetadataOptions {
  /**
   * `general.name`.
   * @default {"qwen3"}
   */
  name?: string;
  /** `general.file_type`, a {@linkcode LLAMA_FILE_TYPE} value; not written when absent. */
  fileType?: number;
  /**
   * `tokenizer.chat_template`.
   * @default {QWEN3_CHAT_TEMPLATE}
   */
  chatTemplate?: string;
  /** `tokenizer.ggml.eos_token_id` (default: `<|im_end|>`'s id). */
  eosId?: number;
}

/**
 * The value a writer stores under a `qwen3.*` key.
 *
 * @param c The model's shape.
 * @param field The key's field.
 * @returns The value (`headDim` for `valueDim` and `ropeDim`).
 */
export function qwen3GgufValue(c: GgufModelShape, field: Qwen3GgufField): number {
  return field === "valueDim" || field === "ropeDim" ? c.headDim : c[field];
}

/**
 * Every metadata key/value of a Qwen3 GGUF file: architecture, name and file type, every
 * `qwen3.*` key of {@linkcode QWEN3_GGUF_KEYS}, and the tokenizer.
 *
 * @param c The model's shape.
 * @param json The Hugging Face tokenizer.json whose lists go in.
 * @param opts Name, file type, chat template, EOS id.
 * @returns The key/value pairs, in the order written.
 * @throws {Qwen3Error} `format` as {@linkcode tokenizerMetadata} says.
 */
export function qwen3GgufMetadata(
  c: GgufModelShape,
  json: TokenizerJson,
  opts: Qwen3GgufMetadataOptions = {},
): [string, GgufValue][] {
  const out: [string, GgufValue][] = [
    [GGUF_KEYS.architecture, { type: "string", value: QWEN3_ARCHITECTURE }],
    [GGUF_KEYS.name, { type: "string", value: opts.name ?? "qwen3" }],
  ];
  if (opts.fileType !== undefined) {
    out.push([GGUF_KEYS.fileType, { type: "u32", value: opts.fileType }]);
  }
  if (opts.fileType !== undefined && QUANTIZED_FILE_TYPES.has(opts.fileType)) {
    // llama.cpp's writer stamps quantised files with the block format version.
    out.push([GGUF_KEYS.quantizationVersion, { type: "u32", value: 2 }]);
  }
  for (const k of QWEN3_GGUF_KEYS) {
    out.push([k.key, { type: k.type, value: qwen3GgufValue(c, k.field) }]);
  }
  out.push(...tokenizerMetadata(json, c.vocabSize, opts.chatTemplate, opts.eosId));
  return out;
}
