/**
 * Converts a qwen3.c checkpoint (`model.bin`) into a llama.cpp GGUF file (Q8_0 weights, F32
 * norms) with the Qwen3 metadata and the tokenizer from a Hugging Face `tokenizer.json`, so
 * llama.cpp can run exactly the model our engines run (the benchmark peer and the
 * cross-checks use it). Each Q8 group is dequantised and requantised into 32-value Q8_0
 * blocks, row by row, so memory stays near one row of the largest tensor.
 *
 * The Qwen3 GGUF metadata ({@link qwen3GgufMetadata}), tensor names and order
 * ({@link qwen3GgufTensors}) and the streaming file writer ({@link writeGgufFile}) live here
 * once and are shared with the Hugging Face exporter (src/export/export.ts).
 * @module
 */

import { escapeForMessage, quoteBytes, quoteExcerpt, Qwen3Error } from "../errors.ts";
import {
  encodeGgufHeader,
  ggmlTensorBytes,
  GgmlType,
  type GgufTensorSpec,
  type GgufValue,
  quantizeQ8_0,
} from "./gguf.ts";
import {
  type Checkpoint,
  checkpointTensorOrder,
  type LayerMatrix,
  type Q8Tensor,
  type TensorSlot,
} from "./model_file.ts";
import { readSideText, TOKENIZER_JSON_LIMIT } from "./side_file.ts";
import type { ModelConfig } from "../types.ts";

/** The Jinja chat template stored in converted files: Qwen3's turn format, no tools. */
export const QWEN3_CHAT_TEMPLATE =
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

/**
 * The `tokenizer.ggml.*` metadata for a vocabulary of `vocabSize` embedding rows, and
 * `tokenizer.chat_template` (default: {@link QWEN3_CHAT_TEMPLATE}). `eosId` defaults to
 * `<|im_end|>`.
 */
export function tokenizerMetadata(
  json: TokenizerJson,
  vocabSize: number,
  chatTemplate: string = QWEN3_CHAT_TEMPLATE,
  eosId?: number,
): [string, GgufValue][] {
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
  const merges = json.model.merges.map((m) => typeof m === "string" ? m : `${m[0]} ${m[1]}`);
  const id = (text: string) => {
    const t = json.added_tokens.find((a) => a.content === text);
    if (!t) throw new Qwen3Error("format", `tokenizer.json has no ${quoteExcerpt(text)} token`);
    return t.id;
  };
  return [
    ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: "string", value: "qwen2" }],
    ["tokenizer.ggml.tokens", { type: "string[]", value: tokens }],
    ["tokenizer.ggml.token_type", { type: "i32[]", value: types }],
    ["tokenizer.ggml.merges", { type: "string[]", value: merges }],
    ["tokenizer.ggml.eos_token_id", { type: "u32", value: eosId ?? id("<|im_end|>") }],
    ["tokenizer.ggml.padding_token_id", { type: "u32", value: id("<|endoftext|>") }],
    ["tokenizer.ggml.bos_token_id", { type: "u32", value: id("<|endoftext|>") }],
    ["tokenizer.ggml.add_bos_token", { type: "bool", value: false }],
    ["tokenizer.chat_template", { type: "string", value: chatTemplate }],
  ];
}

/** llama.cpp's `general.file_type` values (llama_ftype) for the types written here. */
export const LLAMA_FILE_TYPE = {
  ALL_F32: 0,
  MOSTLY_F16: 1,
  MOSTLY_Q8_0: 7,
  MOSTLY_BF16: 32,
} as const;

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

/** Options of {@link qwen3GgufMetadata}. */
export interface Qwen3GgufMetadataOptions {
  /** general.name (default "qwen3"). */
  name?: string;
  /** general.file_type, a {@link LLAMA_FILE_TYPE} value. */
  fileType: number;
  /** tokenizer.chat_template (default {@link QWEN3_CHAT_TEMPLATE}). */
  chatTemplate?: string;
  /** tokenizer.ggml.eos_token_id (default `<|im_end|>`). */
  eosId?: number;
}

/** Every metadata key/value of a Qwen3 GGUF file: architecture, shapes and tokenizer. */
export function qwen3GgufMetadata(
  c: GgufModelShape,
  json: TokenizerJson,
  opts: Qwen3GgufMetadataOptions,
): [string, GgufValue][] {
  const out: [string, GgufValue][] = [
    ["general.architecture", { type: "string", value: "qwen3" }],
    ["general.name", { type: "string", value: opts.name ?? "qwen3" }],
    ["general.file_type", { type: "u32", value: opts.fileType }],
  ];
  if (opts.fileType === LLAMA_FILE_TYPE.MOSTLY_Q8_0) {
    // llama.cpp's writer stamps quantised files with the block format version.
    out.push(["general.quantization_version", { type: "u32", value: 2 }]);
  }
  out.push(
    ["qwen3.context_length", { type: "u32", value: c.seqLen }],
    ["qwen3.embedding_length", { type: "u32", value: c.dim }],
    ["qwen3.block_count", { type: "u32", value: c.nLayers }],
    ["qwen3.feed_forward_length", { type: "u32", value: c.hiddenDim }],
    ["qwen3.attention.head_count", { type: "u32", value: c.nHeads }],
    ["qwen3.attention.head_count_kv", { type: "u32", value: c.nKvHeads }],
    ["qwen3.attention.key_length", { type: "u32", value: c.headDim }],
    ["qwen3.attention.value_length", { type: "u32", value: c.headDim }],
    // llama.cpp defaults the rotated width to embedding_length / head_count (64 for 0.6B),
    // not head_dim (128): Qwen3 rotates the whole head.
    ["qwen3.rope.dimension_count", { type: "u32", value: c.headDim }],
    ["qwen3.rope.freq_base", { type: "f32", value: c.ropeTheta }],
    ["qwen3.attention.layer_norm_rms_epsilon", { type: "f32", value: c.rmsEps }],
    ...tokenizerMetadata(json, c.vocabSize, opts.chatTemplate, opts.eosId),
  );
  return out;
}

/** GGUF block-tensor names of the checkpoint's per-layer tensors. */
const GGUF_LAYER_NAMES: Readonly<
  Record<LayerMatrix | "attn_norm" | "ffn_norm" | "q_norm" | "k_norm", string>
> = {
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

/** One tensor of a Qwen3 GGUF file: its GGUF name and the checkpoint slot it holds. */
export interface GgufSlot {
  /** e.g. `blk.0.attn_q.weight`. */
  name: string;
  /** The same tensor in the checkpoint's terms (norms are "f32", matrices "q8"). */
  slot: TensorSlot;
}

/**
 * The tensors of a Qwen3 GGUF file in the order written here: `token_embd`, `output_norm`,
 * `output` (untied only), then per block attn_norm, attn_q, attn_k, attn_v, attn_output,
 * attn_q_norm, attn_k_norm, ffn_norm, ffn_gate, ffn_up, ffn_down.
 */
export function qwen3GgufTensors(c: Parameters<typeof checkpointTensorOrder>[0]): GgufSlot[] {
  const slots = new Map<string, TensorSlot>();
  for (const s of checkpointTensorOrder(c)) slots.set(`${s.name}/${s.layer}`, s);
  const get = (name: string, layer: number) => slots.get(`${name}/${layer}`)!;
  const out: GgufSlot[] = [{ name: "token_embd.weight", slot: get("embed", -1) }];
  out.push({ name: "output_norm.weight", slot: get("final_norm", -1) });
  if (!c.sharedClassifier) out.push({ name: "output.weight", slot: get("classifier", -1) });
  for (let l = 0; l < c.nLayers; l++) {
    for (const [key, gguf] of Object.entries(GGUF_LAYER_NAMES)) {
      out.push({ name: `blk.${l}.${gguf}.weight`, slot: get(key, l) });
    }
  }
  return out;
}

/** GGUF dims (innermost first) of a checkpoint slot. */
export function ggufDims(slot: TensorSlot): number[] {
  return slot.kind === "f32" ? [slot.length] : [slot.cols, slot.rows];
}

/** One tensor to write: its table entry and a producer of exactly its bytes, in order. */
export interface GgufTensorSource {
  /** Name, dims and ggml type. */
  spec: GgufTensorSpec;
  /** Yields the tensor's data in pieces (their total must equal the tensor's size). */
  data(): AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

/** Options of {@link writeGgufFile} and {@link writeGgufTo}. */
export interface WriteGgufOptions {
  /** Called with (bytes written, total bytes) as data is written. */
  onProgress?: (done: number, total: number) => void;
  /** Stops the write between pieces (the partial file is removed). */
  signal?: AbortSignal;
}

/**
 * Writes a GGUF file: header, then each source's data at its aligned offset. The file is
 * written as `${outPath}.partial-<pid>` and renamed at the end; on any failure (a source
 * throwing or yielding the wrong byte count, an abort, an I/O error) the partial file is
 * removed, so nothing half-written is left behind. Returns the file size.
 */
export async function writeGgufFile(
  outPath: string,
  metadata: ReadonlyArray<readonly [string, GgufValue]>,
  sources: readonly GgufTensorSource[],
  opts: WriteGgufOptions = {},
): Promise<number> {
  const tmp = `${outPath}.partial-${Deno.pid}`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    let total: number;
    try {
      total = await writeGgufTo(file, metadata, sources, opts);
    } finally {
      file.close();
    }
    await Deno.rename(tmp, outPath);
    return total;
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Writes a whole GGUF file into `file` from its start (header, then each source's data at
 * its aligned offset) and returns its size; the caller owns the file, its name and what
 * happens to it on failure ({@link writeGgufFile} is the partial-then-rename wrapper).
 */
export async function writeGgufTo(
  file: Deno.FsFile,
  metadata: ReadonlyArray<readonly [string, GgufValue]>,
  sources: readonly GgufTensorSource[],
  opts: WriteGgufOptions = {},
): Promise<number> {
  const { header, offsets, dataBytes } = encodeGgufHeader(metadata, sources.map((s) => s.spec));
  const total = header.length + dataBytes;
  const writeAll = async (b: Uint8Array) => {
    let off = 0;
    while (off < b.length) off += await file.write(b.subarray(off));
  };
  await writeAll(header);
  let written = 0;
  opts.onProgress?.(header.length, total);
  for (let i = 0; i < sources.length; i++) {
    const s = sources[i];
    if (written < offsets[i]) {
      await writeAll(new Uint8Array(offsets[i] - written));
      written = offsets[i];
    }
    const size = ggmlTensorBytes(s.spec.type, s.spec.dims, quoteBytes(s.spec.name));
    let produced = 0;
    for await (const piece of s.data()) {
      opts.signal?.throwIfAborted();
      produced += piece.length;
      if (produced > size) break;
      await writeAll(piece);
      written += piece.length;
      opts.onProgress?.(header.length + written, total);
    }
    if (produced !== size) {
      throw new Qwen3Error(
        "invalid_argument",
        `GGUF tensor '${
          quoteBytes(s.spec.name)
        }': its source gave ${produced} bytes, expected ${size}`,
      );
    }
  }
  if (written < dataBytes) await writeAll(new Uint8Array(dataBytes - written));
  return total;
}

/** Dequantises one row of a Q8 tensor into `out`. */
function dequantizeRow(t: Q8Tensor, row: number, out: Float32Array) {
  const groups = t.cols / t.groupSize;
  for (let g = 0; g < groups; g++) {
    const scale = t.s[row * groups + g];
    const base = row * t.cols + g * t.groupSize;
    for (let i = 0; i < t.groupSize; i++) {
      out[g * t.groupSize + i] = t.q[base + i] * scale;
    }
  }
}

/** Options of {@link checkpointToGguf}. */
export interface GgufConvertOptions {
  /** Path of the Hugging Face tokenizer.json whose vocabulary goes into the metadata. */
  tokenizerJson: string;
  /** Model name stored as general.name. */
  name?: string;
  /** Called with (bytes written, total bytes). */
  onProgress?: (done: number, total: number) => void;
}

/** Requantises a Q8 tensor into Q8_0 rows, about 4 MB per piece. */
function* q8ToQ8_0(q8: Q8Tensor): Generator<Uint8Array> {
  const rowBytes = (q8.cols / 32) * 34;
  const rowsPerChunk = Math.max(1, Math.floor((4 << 20) / rowBytes));
  const row = new Float32Array(q8.cols);
  for (let r0 = 0; r0 < q8.rows; r0 += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, q8.rows - r0);
    const chunk = new Uint8Array(n * rowBytes);
    for (let r = 0; r < n; r++) {
      dequantizeRow(q8, r0 + r, row);
      quantizeQ8_0(row, chunk.subarray(r * rowBytes, (r + 1) * rowBytes));
    }
    yield chunk;
  }
}

/**
 * Writes `ckpt` as a Q8_0 GGUF file at `outPath` (through a temporary name, renamed at
 * the end, so no half-written file is left behind on failure).
 */
export async function checkpointToGguf(
  ckpt: Checkpoint,
  outPath: string,
  opts: GgufConvertOptions,
): Promise<void> {
  const c = ckpt.config;
  if (c.dim % 32 !== 0 || c.hiddenDim % 32 !== 0 || (c.nHeads * c.headDim) % 32 !== 0) {
    throw new Qwen3Error(
      "unsupported",
      `Q8_0 needs widths that are multiples of 32 (dim ${c.dim})`,
    );
  }
  const path = opts.tokenizerJson;
  const text = await readSideText(path, { limit: TOKENIZER_JSON_LIMIT, what: "tokenizer" });
  let json: TokenizerJson;
  try {
    json = JSON.parse(text) as TokenizerJson;
  } catch (e) {
    throw new Qwen3Error("format", `${path}: not JSON (${escapeForMessage((e as Error).message)})`);
  }
  const vocab = json?.model?.vocab;
  if (
    vocab === null || typeof vocab !== "object" || !Array.isArray(json.model.merges) ||
    !Array.isArray(json.added_tokens)
  ) {
    throw new Qwen3Error(
      "format",
      `${path}: not a BPE tokenizer.json (model.vocab, model.merges and added_tokens are needed)`,
    );
  }
  const metadata = qwen3GgufMetadata(c, json, {
    name: opts.name,
    fileType: LLAMA_FILE_TYPE.MOSTLY_Q8_0,
  });
  const t = ckpt.tensors;
  const normKey = {
    attn_norm: "attnNorm",
    ffn_norm: "ffnNorm",
    q_norm: "qNorm",
    k_norm: "kNorm",
  } as const;
  const sources: GgufTensorSource[] = qwen3GgufTensors(c).map(({ name, slot }) => {
    if (slot.kind === "f32") {
      const v = slot.name === "final_norm" ? t.finalNorm : t.layers[slot.layer][normKey[slot.name]];
      return {
        spec: { name, dims: ggufDims(slot), type: GgmlType.F32 },
        data: () => [new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice()],
      };
    }
    const q8 = slot.name === "embed"
      ? t.embed
      : slot.name === "classifier"
      ? t.classifier
      : t.layers[slot.layer][slot.name];
    return { spec: { name, dims: ggufDims(slot), type: GgmlType.Q8_0 }, data: () => q8ToQ8_0(q8) };
  });
  await writeGgufFile(outPath, metadata, sources, { onProgress: opts.onProgress });
}
