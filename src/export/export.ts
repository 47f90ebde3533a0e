/**
 * `qwen3 export`: a Hugging Face Qwen3 folder (`config.json`, safetensors, `tokenizer.json`,
 * `tokenizer_config.json`) to a qwen3.c `model.bin` (Q8 groups, with its `.tokenizer` and
 * four `.template*` side files and the model's `tokenizer.json` copied as
 * `<model>.tokenizer.json`, so two models can share a folder) or to a GGUF file (Q8_0, F16,
 * BF16 or F32 weights; norms always F32).
 *
 * Everything that can be checked is checked before the first byte is written: the config
 * fields, every tensor's presence, shape and dtype, the chat template's rendering, the
 * output names (never an input, never anything but a regular file, an existing one only with
 * `force`) and the tokenizer. Weights then stream one block of rows at a time (a few MB), so
 * peak memory stays near the largest tensor's scales and one block, far below the model.
 * Outputs are written under `<name>.partial-<pid>` and renamed in together at the end; on any
 * failure or abort the renamed ones are removed, the files they replaced are put back and
 * the partials are removed: all outputs or none. A process that wants the same on SIGTERM
 * aborts the export from a signal listener (the CLI does).
 *
 * ```ts ignore
 * import { exportHfModel } from "./export.ts";
 * await exportHfModel("Qwen3-0.6B", "qwen3-0.6b.bin");                       // model.bin, Q8 groups of 64
 * await exportHfModel("Qwen3-0.6B", "qwen3-0.6b.gguf", { format: "gguf", type: "q8_0" });
 * ```
 * @module
 */

import { basename, dirname, join, resolve } from "node:path";
import { renderChatTemplates } from "../text/chat_template.ts";
import { Qwen3Error } from "../errors.ts";
import {
  GgmlType,
  type GgufTensorSpec,
  type GgufValue,
  quantizeQ8_0,
  writeGgufTo,
} from "../formats/gguf.ts";
import {
  ggufDims,
  LLAMA_FILE_TYPE,
  QWEN3_CHAT_TEMPLATE,
  qwen3GgufMetadata,
  qwen3GgufTensors,
  type TokenizerJson,
} from "../formats/gguf_qwen3.ts";
import {
  checkpointTensorOrder,
  encodeHeader,
  expectedFileSize,
  HEADER_LIMITS,
  QWEN3_RMS_EPS,
  QWEN3_ROPE_THETA,
  type TensorSlot,
} from "../formats/checkpoint.ts";
import { quantizeQ8Into } from "../reference/quant.ts";
import {
  CONVERTIBLE_DTYPES,
  float32ToBf16,
  float32ToF16,
  SAFETENSORS_INDEX,
  SafetensorsModel,
} from "../formats/safetensors.ts";
import { type ChatTemplates, STOCK_TEMPLATES, TEMPLATE_SUFFIXES } from "../text/template.ts";
import { Tokenizer } from "../text/tokenizer.ts";
import { qwen3cSideFiles } from "../formats/tokenizer_file.ts";
import type { ModelConfig } from "../types.ts";

/** Output formats of {@link exportHfModel}. */
export type ExportFormat = "bin" | "gguf";

/** Weight types of a GGUF export. */
export type GgufWeightType = "q8_0" | "f16" | "bf16" | "f32";

/** The GGUF weight types, as `--type` spells them. */
export const GGUF_WEIGHT_TYPES: readonly GgufWeightType[] = ["q8_0", "f16", "bf16", "f32"];

/** Default quantisation group of a model.bin export (every real Qwen3 uses it). */
export const DEFAULT_GROUP_SIZE = 64;

/** Options of {@link exportHfModel}. */
export interface ExportOptions {
  /** "bin" (default): qwen3.c model.bin with side files; "gguf": a GGUF file. */
  format?: ExportFormat;
  /** model.bin quantisation group (default 64), halved until it divides every row width. */
  groupSize?: number;
  /** GGUF weight type (default "q8_0"); norms are F32 whatever this says. */
  type?: GgufWeightType;
  /** Called with (bytes written, total bytes) as the weights stream out. */
  onProgress?: (done: number, total: number) => void;
  /** Called with a line for each thing the user should know (group size halved, stock templates). */
  onNote?: (message: string) => void;
  /** Stops the export between blocks; nothing is left behind and nothing is replaced. */
  signal?: AbortSignal;
  /**
   * Replace output files that exist (default false: an existing output is refused). Only
   * regular files are ever replaced, and never one of the export's inputs.
   */
  force?: boolean;
}

/** What {@link exportHfModel} wrote. */
export interface ExportResult {
  /** The model file. */
  path: string;
  /** Its format. */
  format: ExportFormat;
  /** Its size in bytes. */
  bytes: number;
  /** Every file written (the model file first). */
  files: string[];
  /** The model's hyper-parameters (groupSize 0 for an unquantised GGUF). */
  config: ModelConfig;
  /** GGUF weight type, for a GGUF export. */
  type?: GgufWeightType;
  /** Where the chat templates came from: a file of the folder, or "stock" when it has none. */
  templateSource: string;
}

/** A Hugging Face Qwen3 config.json, checked and reduced to what the exporter needs. */
export interface HfQwen3Config {
  /** Shapes, with format "qwen3.c" and groupSize 0 (chosen at export). */
  config: ModelConfig;
  /** bos_token_id (default `<|endoftext|>` when absent). */
  bosId?: number;
  /** eos_token_id (the first, when a list). */
  eosId?: number;
  /** The weights' dtype as the config states it (informational). */
  dtype?: string;
}

function configError(path: string, message: string): Qwen3Error {
  return new Qwen3Error("format", `${path}: ${message}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

async function readJson(path: string, what: string, hint: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Qwen3Error("io", `${path}: no ${what} (${hint})`);
    }
    throw new Qwen3Error("io", `${path}: cannot read ${what} (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Qwen3Error("format", `${path}: ${what} is not valid JSON (${(e as Error).message})`);
  }
}

/**
 * Reads and checks `config.json` of a Hugging Face Qwen3 folder: `architectures` must name
 * Qwen3ForCausalLM; hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
 * num_key_value_heads, head_dim, vocab_size and max_position_embeddings must be positive
 * integers within the checkpoint limits (heads divisible by kv heads, head_dim even);
 * rope_theta (top level or in rope_parameters) and rms_norm_eps are read; rope scaling,
 * sliding windows, attention biases and activations other than SiLU are refused, since the
 * engines implement none of them. Errors name the file, the field and its value.
 */
export async function readHfConfig(dir: string): Promise<HfQwen3Config> {
  const path = join(dir, "config.json");
  const json = await readJson(path, "config.json", "is this a Hugging Face model folder?");
  if (!isRecord(json)) throw configError(path, "is not a JSON object");
  const arch = json.architectures;
  if (!Array.isArray(arch) || !arch.includes("Qwen3ForCausalLM")) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: architectures is ${JSON.stringify(arch ?? null)}; only Qwen3ForCausalLM ` +
        "(dense Qwen3) can be exported",
    );
  }
  if (json.model_type !== undefined && json.model_type !== "qwen3") {
    throw new Qwen3Error(
      "unsupported",
      `${path}: model_type is ${JSON.stringify(json.model_type)}, expected "qwen3"`,
    );
  }
  const int = (field: string, limit: number): number => {
    const v = json[field];
    if (v === undefined || v === null) throw configError(path, `${field} is missing`);
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
      throw configError(path, `${field} = ${JSON.stringify(v)} is not a positive integer`);
    }
    if (v > limit) throw configError(path, `${field} = ${v} exceeds the limit of ${limit}`);
    return v;
  };
  const dim = int("hidden_size", HEADER_LIMITS.dim);
  const hiddenDim = int("intermediate_size", HEADER_LIMITS.hidden_dim);
  const nLayers = int("num_hidden_layers", HEADER_LIMITS.n_layers);
  const nHeads = int("num_attention_heads", HEADER_LIMITS.n_heads);
  const nKvHeads = int("num_key_value_heads", HEADER_LIMITS.n_kv_heads);
  const headDim = int("head_dim", HEADER_LIMITS.head_dim);
  const vocabSize = int("vocab_size", HEADER_LIMITS.vocab_size);
  const seqLen = int("max_position_embeddings", HEADER_LIMITS.seq_len);
  if (nHeads % nKvHeads !== 0) {
    throw configError(
      path,
      `num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`,
    );
  }
  if (headDim % 2 !== 0) throw configError(path, `head_dim ${headDim} must be even for RoPE`);
  if (nHeads * headDim > HEADER_LIMITS.dim) {
    throw configError(
      path,
      `num_attention_heads * head_dim = ${
        nHeads * headDim
      } exceeds the limit of ${HEADER_LIMITS.dim}`,
    );
  }
  const num = (v: unknown, field: string): number => {
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw configError(path, `${field} = ${JSON.stringify(v)} is not a positive number`);
    }
    return v;
  };
  const params = isRecord(json.rope_parameters) ? json.rope_parameters : undefined;
  const thetaRaw = json.rope_theta ?? params?.rope_theta;
  const ropeTheta = thetaRaw === undefined ? QWEN3_ROPE_THETA : num(thetaRaw, "rope_theta");
  const rmsEps = json.rms_norm_eps === undefined
    ? QWEN3_RMS_EPS
    : num(json.rms_norm_eps, "rms_norm_eps");
  const scaling = json.rope_scaling ?? params;
  if (isRecord(scaling)) {
    const kind = scaling.rope_type ?? scaling.type ?? "default";
    if (kind !== "default") {
      throw new Qwen3Error(
        "unsupported",
        `${path}: rope scaling "${kind}" is not supported (the engines use plain RoPE)`,
      );
    }
  } else if (scaling !== undefined && scaling !== null) {
    throw configError(path, `rope_scaling = ${JSON.stringify(scaling)} is not an object or null`);
  }
  if (json.hidden_act !== undefined && json.hidden_act !== "silu") {
    throw new Qwen3Error(
      "unsupported",
      `${path}: hidden_act ${JSON.stringify(json.hidden_act)} is not supported (only "silu")`,
    );
  }
  if (json.attention_bias === true) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: attention_bias is true; the engines have no attention biases`,
    );
  }
  if (json.use_sliding_window === true) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: use_sliding_window is true; the engines attend over the whole context`,
    );
  }
  const tie = json.tie_word_embeddings;
  if (tie !== undefined && typeof tie !== "boolean") {
    throw configError(path, `tie_word_embeddings = ${JSON.stringify(tie)} is not true or false`);
  }
  const tokenId = (field: string): number | undefined => {
    let v = json[field];
    if (Array.isArray(v)) v = v[0];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= vocabSize) {
      throw configError(path, `${field} = ${JSON.stringify(json[field])} is not a token id`);
    }
    return v;
  };
  const dtype = json.torch_dtype ?? json.dtype;
  return {
    config: {
      format: "qwen3.c",
      dim,
      hiddenDim,
      nLayers,
      nHeads,
      nKvHeads,
      headDim,
      vocabSize,
      seqLen,
      groupSize: 0,
      // Qwen3Config's default is untied: a config without the field has an lm_head.
      sharedClassifier: tie === true,
      ropeTheta,
      rmsEps,
    },
    bosId: tokenId("bos_token_id"),
    eosId: tokenId("eos_token_id"),
    dtype: typeof dtype === "string" ? dtype : undefined,
  };
}

/** The Hugging Face name of a checkpoint tensor slot. */
export function hfTensorName(slot: Pick<TensorSlot, "name" | "layer">): string {
  const p = `model.layers.${slot.layer}.`;
  switch (slot.name) {
    case "embed":
      return "model.embed_tokens.weight";
    case "classifier":
      return "lm_head.weight";
    case "final_norm":
      return "model.norm.weight";
    case "attn_norm":
      return p + "input_layernorm.weight";
    case "ffn_norm":
      return p + "post_attention_layernorm.weight";
    case "q_norm":
      return p + "self_attn.q_norm.weight";
    case "k_norm":
      return p + "self_attn.k_norm.weight";
    case "wq":
      return p + "self_attn.q_proj.weight";
    case "wk":
      return p + "self_attn.k_proj.weight";
    case "wv":
      return p + "self_attn.v_proj.weight";
    case "wo":
      return p + "self_attn.o_proj.weight";
    case "w1":
      return p + "mlp.gate_proj.weight";
    case "w2":
      return p + "mlp.down_proj.weight";
    case "w3":
      return p + "mlp.up_proj.weight";
  }
}

function slotShape(slot: TensorSlot): number[] {
  return slot.kind === "f32" ? [slot.length] : [slot.rows, slot.cols];
}

/** Tensors a Qwen3 folder may hold that the model does not use (old RoPE caches). */
const IGNORED_TENSOR = /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/;

/**
 * Checks that `weights` holds exactly the tensors of `config` with the right shapes and a
 * convertible dtype (a tied model's stray `lm_head.weight` is ignored). Errors name the
 * tensor, the expected and the actual shape or dtype.
 */
export function checkHfTensors(weights: SafetensorsModel, config: ModelConfig): void {
  const used = new Set<string>();
  for (const slot of checkpointTensorOrder(config)) {
    const name = hfTensorName(slot);
    used.add(name);
    const t = weights.tensors.get(name);
    if (!t) {
      const hint = slot.name === "classifier"
        ? " (config.json says tie_word_embeddings is false, so the model needs its own lm_head)"
        : "";
      throw new Qwen3Error("format", `${weights.dir}: tensor ${name} is missing${hint}`);
    }
    const want = slotShape(slot);
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
      throw new Qwen3Error(
        "format",
        `${t.file}: tensor ${name} has shape [${t.shape.join(", ")}], expected [${
          want.join(", ")
        }] from config.json`,
      );
    }
    if (!(CONVERTIBLE_DTYPES as readonly string[]).includes(t.dtype)) {
      throw new Qwen3Error(
        "unsupported",
        `${t.file}: tensor ${name} has dtype ${t.dtype}; the exporter reads ${
          CONVERTIBLE_DTYPES.join(", ")
        }`,
      );
    }
  }
  for (const name of weights.tensors.keys()) {
    if (used.has(name) || IGNORED_TENSOR.test(name)) continue;
    if (name === "lm_head.weight" && config.sharedClassifier) continue;
    throw new Qwen3Error(
      "unsupported",
      `${weights.tensors.get(name)!.file}: unexpected tensor ${name}; a dense Qwen3 has no such ` +
        "weight (biases, MoE experts or another architecture?)",
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Chat templates

/** The model's Jinja chat template and where it came from. */
export interface HfChatTemplate {
  /** Jinja source. */
  source: string;
  /** The file it was read from. */
  file: string;
  /** Special token strings the template may use (bos_token, eos_token, ...). */
  tokens: Record<string, string>;
}

/**
 * The chat template of a Hugging Face folder: `chat_template.jinja` (how newer transformers
 * save it) or `tokenizer_config.json`'s `chat_template` (a string, or a list of named
 * templates: "default"); undefined when the folder has neither.
 */
export async function readHfChatTemplate(dir: string): Promise<HfChatTemplate | undefined> {
  const configPath = join(dir, "tokenizer_config.json");
  let config: Record<string, unknown> = {};
  try {
    const json = JSON.parse(await Deno.readTextFile(configPath));
    if (!isRecord(json)) throw new SyntaxError("not a JSON object");
    config = json;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      const code = e instanceof SyntaxError ? "format" : "io";
      throw new Qwen3Error(code, `${configPath}: cannot read (${(e as Error).message})`);
    }
  }
  const tokens: Record<string, string> = {};
  for (const key of ["bos_token", "eos_token", "pad_token", "unk_token"]) {
    const v = config[key];
    if (typeof v === "string") tokens[key] = v;
    else if (isRecord(v) && typeof v.content === "string") tokens[key] = v.content;
  }
  const jinjaPath = join(dir, "chat_template.jinja");
  try {
    return { source: await Deno.readTextFile(jinjaPath), file: jinjaPath, tokens };
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Qwen3Error("io", `${jinjaPath}: cannot read (${(e as Error).message})`);
    }
  }
  let t = config.chat_template;
  if (Array.isArray(t)) {
    const named = t.find((x) => isRecord(x) && x.name === "default");
    t = isRecord(named) ? named.template : undefined;
  }
  if (t === undefined || t === null) return undefined;
  if (typeof t !== "string") {
    throw new Qwen3Error("format", `${configPath}: chat_template is not a string`);
  }
  return { source: t, file: configPath, tokens };
}

// ---------------------------------------------------------------------------------------------
// Streaming the weights

/** Values converted per block: 4 Mi (16 MB as fp32), whole rows. */
const BLOCK_VALUES = 1 << 22;

/**
 * Streams `name` as fp32 blocks of whole rows in `buf` (at least one row long; the values
 * are overwritten by the next block). One buffer serves the whole export, so streaming a
 * model allocates nothing per block.
 */
async function* rowBlocks(
  weights: SafetensorsModel,
  name: string,
  rows: number,
  cols: number,
  buf: Float32Array,
  signal?: AbortSignal,
): AsyncGenerator<{ row0: number; values: Float32Array }> {
  const step = Math.max(1, Math.floor(buf.length / cols));
  for (let r = 0; r < rows; r += step) {
    signal?.throwIfAborted();
    const n = Math.min(step, rows - r);
    const values = buf.subarray(0, n * cols);
    await weights.readRows(name, r, n, values);
    yield { row0: r, values };
  }
}

/** The largest power-of-two-halving of `requested` that divides every row width of `c`. */
export function fitGroupSize(
  requested: number,
  c: Pick<ModelConfig, "dim" | "hiddenDim" | "nHeads" | "headDim">,
): number {
  let gs = requested;
  const widths = [c.dim, c.hiddenDim, c.nHeads * c.headDim];
  while (gs > 1 && widths.some((w) => w % gs !== 0)) gs = Math.floor(gs / 2);
  return gs;
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

function bytesOf(a: Float32Array | Int8Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Writes the model.bin body in checkpoint order, Q8-quantising each matrix block by block. */
async function writeCheckpoint(
  file: Deno.FsFile,
  weights: SafetensorsModel,
  config: ModelConfig,
  progress: (bytes: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  const gs = config.groupSize;
  const block = new Float32Array(Math.max(BLOCK_VALUES, config.dim, config.hiddenDim));
  const q = new Int8Array(block.length);
  // The scales follow a whole matrix, so they are the one per-tensor buffer (4 bytes per
  // group: 9.7 MB for a 0.6B embedding), sized for the largest.
  let largest = 0;
  for (const slot of checkpointTensorOrder(config)) {
    if (slot.kind === "q8") largest = Math.max(largest, slot.rows * slot.cols);
  }
  const allScales = new Float32Array(largest / gs);
  const header = encodeHeader(config, "qwen3.c");
  await writeAll(file, header);
  progress(header.length);
  for (const slot of checkpointTensorOrder(config)) {
    signal?.throwIfAborted();
    const name = hfTensorName(slot);
    if (slot.kind === "f32") {
      const v = await weights.readTensor(name);
      await writeAll(file, bytesOf(v));
      progress(v.byteLength);
      continue;
    }
    const scales = allScales.subarray(0, (slot.rows * slot.cols) / gs);
    const blocks = rowBlocks(weights, name, slot.rows, slot.cols, block, signal);
    for await (const { row0, values } of blocks) {
      const qs = q.subarray(0, values.length);
      quantizeQ8Into(values, gs, qs, scales.subarray((row0 * slot.cols) / gs));
      await writeAll(file, bytesOf(qs));
      progress(qs.length);
    }
    await writeAll(file, bytesOf(scales));
    progress(scales.byteLength);
  }
}

const GGML_OF: Readonly<Record<GgufWeightType, number>> = {
  q8_0: GgmlType.Q8_0,
  f16: GgmlType.F16,
  bf16: GgmlType.BF16,
  f32: GgmlType.F32,
};

const FILE_TYPE_OF: Readonly<Record<GgufWeightType, number>> = {
  q8_0: LLAMA_FILE_TYPE.MOSTLY_Q8_0,
  f16: LLAMA_FILE_TYPE.MOSTLY_F16,
  bf16: LLAMA_FILE_TYPE.MOSTLY_BF16,
  f32: LLAMA_FILE_TYPE.ALL_F32,
};

/** Encodes fp32 rows as one GGUF weight type (a fresh buffer: the writer may keep it). */
function encodeRows(values: Float32Array, type: GgufWeightType): Uint8Array {
  switch (type) {
    case "q8_0":
      return quantizeQ8_0(values);
    case "f32":
      return bytesOf(values).slice();
    case "f16":
    case "bf16": {
      const out = new Uint16Array(values.length);
      const conv = type === "f16" ? float32ToF16 : float32ToBf16;
      for (let i = 0; i < values.length; i++) out[i] = conv(values[i]);
      return bytesOf(out);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The export

/**
 * Reads and checks `tokenizer.json` (it must parse as a Qwen3 tokenizer and fit the
 * embedding), then returns what `make` builds from it, so the parsed tokenizer can be
 * collected before the weights stream.
 */
async function tokenizerProducts<T>(
  path: string,
  vocabSize: number,
  make: (tok: Tokenizer, json: TokenizerJson) => T,
): Promise<T> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message;
    throw new Qwen3Error(
      "io",
      `${path}: cannot read the tokenizer (${why}); the export needs the model's tokenizer.json`,
    );
  }
  let json: TokenizerJson;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Qwen3Error("format", `${path}: not valid JSON (${(e as Error).message})`);
  }
  const tok = Tokenizer.fromJson(json, path);
  if (tok.size > vocabSize) {
    throw new Qwen3Error(
      "format",
      `${path}: has ${tok.size} tokens, more than config.json's vocab_size ${vocabSize}`,
    );
  }
  return make(tok, json);
}

function asQwen3Error(e: unknown, path: string): unknown {
  if (e instanceof Qwen3Error || (e instanceof DOMException && e.name === "AbortError")) return e;
  return new Qwen3Error("io", `${path}: write failed (${(e as Error).message ?? e})`);
}

// ---------------------------------------------------------------------------------------------
// The outputs: checked, written as partials, committed together

/** Suffix of the copy of the model's tokenizer.json a model.bin export writes beside OUT. */
export const TOKENIZER_JSON_SUFFIX = ".tokenizer.json";

/** What a directory entry is, for a refusal: everything but a regular file. */
function entryKind(info: Deno.FileInfo): string {
  if (info.isSymlink) return "a symbolic link";
  if (info.isDirectory) return "a folder";
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice || info.isBlockDevice) return "a device";
  if (info.isSocket) return "a socket";
  return "not a regular file";
}

/** lstat, or undefined when nothing is there. */
async function entry(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Qwen3Error("io", `${path}: cannot check the output (${(e as Error).message})`);
  }
}

/** `path` with its folder resolved (symbolic links followed), whether or not it exists. */
async function resolvedPath(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    try {
      return join(await Deno.realPath(dirname(resolve(path))), basename(path));
    } catch {
      return resolve(path);
    }
  }
}

/**
 * The files of one export. Each is written as `NAME.partial-<pid>` (created new, so nothing
 * planted under that name is followed), then {@link OutputFiles.commit} renames them all in,
 * the model last; if any step fails or the export is aborted, every file renamed in is
 * removed, every file it replaced (moved aside as `NAME.replaced-<pid>` first) is put back
 * and every partial is removed: all outputs or none.
 */
class OutputFiles {
  /** Partials created and not yet renamed in. */
  readonly #partials = new Set<string>();
  /** Existing outputs moved aside during the commit: [name, aside]. */
  readonly #moved: [string, string][] = [];
  /** Outputs renamed in during the commit. */
  readonly #placed: string[] = [];

  private constructor(readonly paths: readonly string[], readonly force: boolean) {}

  /**
   * Checks `paths` (the model first) before anything is written: the folder exists; no
   * output is one of `inputs` (same file by device and inode, or same resolved path); none
   * is anything but a regular file (a symbolic link, folder, device or FIFO is never
   * replaced); none exists unless `force`; no partial name is taken.
   */
  static async check(
    paths: readonly string[],
    inputs: readonly string[],
    force: boolean,
  ): Promise<OutputFiles> {
    const outPath = paths[0];
    const dir = dirname(resolve(outPath));
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(dir);
    } catch {
      throw new Qwen3Error("io", `${outPath}: the output folder ${dir} does not exist`);
    }
    if (!info.isDirectory) throw new Qwen3Error("io", `${outPath}: ${dir} is not a folder`);
    const sources: { path: string; real: string; info: Deno.FileInfo }[] = [];
    for (const path of inputs) {
      try {
        sources.push({ path, real: await Deno.realPath(path), info: await Deno.stat(path) });
      } catch { /* absent: nothing to protect (its reader reports it) */ }
    }
    const existing: string[] = [];
    for (const path of paths) {
      const info = await entry(path);
      if (info && !info.isFile) {
        const hint = path === outPath && info.isDirectory ? "; give the model file's path" : "";
        throw new Qwen3Error(
          "invalid_argument",
          `${path}: is ${entryKind(info)}; the export replaces only regular files, even with ` +
            `--force${hint}`,
        );
      }
      const real = await resolvedPath(path);
      const input = sources.find((s) =>
        s.real === real ||
        (info !== undefined && s.info.ino !== null && s.info.dev === info.dev &&
          s.info.ino === info.ino)
      );
      if (input) {
        throw new Qwen3Error(
          "invalid_argument",
          `${path}: is the export's input ${input.path}; write the output elsewhere`,
        );
      }
      if (info) existing.push(path);
      const partial = partialName(path);
      if (await entry(partial)) {
        throw new Qwen3Error(
          "io",
          `${partial}: already exists (another export's partial file?); remove it first`,
        );
      }
    }
    if (existing.length > 0 && !force) {
      throw new Qwen3Error(
        "invalid_argument",
        `${existing.join(", ")}: already ${existing.length === 1 ? "exists" : "exist"}; ` +
          "pass --force to replace (regular files only)",
      );
    }
    return new OutputFiles(paths, force);
  }

  /** Creates `path`'s partial file (it must not exist) for writing. */
  async create(path: string): Promise<Deno.FsFile> {
    if (!this.paths.includes(path)) throw new Error(`${path} is not one of the planned outputs`);
    const partial = partialName(path);
    const file = await Deno.open(partial, { write: true, createNew: true });
    this.#partials.add(partial);
    return file;
  }

  /** Writes `bytes` as `path`'s partial file. */
  async write(path: string, bytes: Uint8Array): Promise<void> {
    using file = await this.create(path);
    await writeAll(file, bytes);
  }

  /** Copies the file `from` as `path`'s partial file. */
  async copy(from: string, path: string): Promise<void> {
    const src = await Deno.open(from);
    const dst = await this.create(path);
    await src.readable.pipeTo(dst.writable); // closes both
  }

  /**
   * Renames every partial in, the model last. An output that appeared since the check is
   * refused like one that was there (not a regular file; present without --force); one
   * replaced with --force is moved aside first and removed once all are in. On a failure or
   * an abort everything is undone before the error is rethrown.
   */
  async commit(signal?: AbortSignal): Promise<void> {
    try {
      for (const path of [...this.paths.slice(1), this.paths[0]]) {
        signal?.throwIfAborted();
        const info = await entry(path);
        if (info) {
          if (!info.isFile) {
            throw new Qwen3Error(
              "invalid_argument",
              `${path}: appeared as ${entryKind(info)} during the export; nothing was replaced`,
            );
          }
          if (!this.force) {
            throw new Qwen3Error(
              "invalid_argument",
              `${path}: appeared during the export; pass --force to replace it`,
            );
          }
          const aside = `${path}.replaced-${Deno.pid}`;
          if (await entry(aside)) {
            throw new Qwen3Error(
              "io",
              `${aside}: already exists, so ${path} cannot be moved aside; remove it first`,
            );
          }
          await Deno.rename(path, aside);
          this.#moved.push([path, aside]);
        }
        const partial = partialName(path);
        await Deno.rename(partial, path);
        this.#partials.delete(partial);
        this.#placed.push(path);
      }
      signal?.throwIfAborted();
    } catch (e) {
      await this.discard();
      throw e;
    }
    for (const [, aside] of this.#moved.splice(0)) await Deno.remove(aside).catch(() => {});
    this.#placed.length = 0;
  }

  /**
   * Undoes everything: removes the partials and the outputs renamed in, and puts back what
   * they replaced. A file that cannot be put back is named in the error, so it is not lost.
   */
  async discard(): Promise<void> {
    for (const partial of this.#partials) await Deno.remove(partial).catch(() => {});
    this.#partials.clear();
    for (const path of this.#placed.splice(0)) await Deno.remove(path).catch(() => {});
    const stranded: string[] = [];
    for (const [path, aside] of this.#moved.splice(0).reverse()) {
      await Deno.rename(aside, path).catch(() => stranded.push(`${path} (now ${aside})`));
    }
    if (stranded.length > 0) {
      throw new Qwen3Error(
        "io",
        `the export failed and could not put back the files it replaced: ${stranded.join(", ")}`,
      );
    }
  }
}

function partialName(path: string): string {
  return `${path}.partial-${Deno.pid}`;
}

/**
 * Exports the Hugging Face Qwen3 folder `hfDir` to `outPath`: a qwen3.c model.bin with its
 * side files (default) or a GGUF file. See the module documentation for what is checked and
 * how memory stays small. Errors are one Qwen3Error naming the file, tensor or field; after
 * an error (or an abort) the output names hold what they held before.
 *
 * @example
 * ```ts ignore
 * import { exportHfModel } from "./export.ts";
 * const r = await exportHfModel("Qwen3-0.6B", "out/qwen3-0.6b.bin", {
 *   onProgress: (done, total) => console.log(`${done} / ${total}`),
 * });
 * console.log(r.files); // model.bin, .tokenizer, four .template files, .tokenizer.json
 * ```
 */
export async function exportHfModel(
  hfDir: string,
  outPath: string,
  opts: ExportOptions = {},
): Promise<ExportResult> {
  const format = opts.format ?? "bin";
  if (format !== "bin" && format !== "gguf") {
    throw new Qwen3Error("invalid_argument", `format must be "bin" or "gguf", got "${format}"`);
  }
  const type = opts.type ?? "q8_0";
  if (!GGUF_WEIGHT_TYPES.includes(type)) {
    throw new Qwen3Error(
      "invalid_argument",
      `GGUF type must be one of ${GGUF_WEIGHT_TYPES.join(", ")}, got "${type}"`,
    );
  }
  const requestedGs = opts.groupSize ?? DEFAULT_GROUP_SIZE;
  if (
    !Number.isInteger(requestedGs) || requestedGs <= 0 || requestedGs > HEADER_LIMITS.group_size
  ) {
    throw new Qwen3Error(
      "invalid_argument",
      `group size must be an integer in 1..${HEADER_LIMITS.group_size}, got ${requestedGs}`,
    );
  }
  const note = opts.onNote ?? (() => {});

  // 1. Everything that can fail on the input, before any output exists.
  const hf = await readHfConfig(hfDir);
  const config = hf.config;
  // Headers only (cheap): shape and dtype errors come before the slow tokenizer parse.
  using weights = await SafetensorsModel.open(hfDir);
  checkHfTensors(weights, config);
  const chat = await readHfChatTemplate(hfDir);
  let templates: ChatTemplates = STOCK_TEMPLATES;
  let templateSource = "stock";
  if (chat) {
    templates = renderChatTemplates(chat.source, chat.file, chat.tokens);
    templateSource = chat.file;
  } else {
    note(
      `${hfDir} has no chat_template (tokenizer_config.json or chat_template.jinja): ` +
        "writing the stock Qwen3 templates",
    );
  }
  const widthText = `hidden_size ${config.dim}, intermediate_size ${config.hiddenDim}, ` +
    `heads x head_dim ${config.nHeads * config.headDim}`;
  if (format === "bin") {
    if (config.ropeTheta !== QWEN3_ROPE_THETA || config.rmsEps !== QWEN3_RMS_EPS) {
      // model.bin does not store them: the engines assume Qwen3's values.
      throw new Qwen3Error(
        "unsupported",
        `${join(hfDir, "config.json")}: rope_theta ${config.ropeTheta} / rms_norm_eps ` +
          `${config.rmsEps} differ from Qwen3's ${QWEN3_ROPE_THETA} / ${QWEN3_RMS_EPS}, which ` +
          "model.bin cannot record; export with --format gguf",
      );
    }
    if (config.dim % 4 !== 0) {
      throw new Qwen3Error(
        "unsupported",
        `${join(hfDir, "config.json")}: hidden_size ${config.dim} is not a multiple of 4, ` +
          "which model.bin needs to keep its fp32 scales aligned",
      );
    }
    config.groupSize = fitGroupSize(requestedGs, config);
    if (config.groupSize !== requestedGs) {
      note(
        `group size ${requestedGs} does not divide every row width (${widthText}): ` +
          `using ${config.groupSize}`,
      );
    }
  } else if (type === "q8_0") {
    const widths = [config.dim, config.hiddenDim, config.nHeads * config.headDim];
    if (widths.some((w) => w % 32 !== 0)) {
      throw new Qwen3Error(
        "unsupported",
        `Q8_0 needs row widths that are multiples of 32; this model has ${widthText} ` +
          "(use --type f16, bf16 or f32)",
      );
    }
  }

  // Every file the export reads: no output may be one of them.
  const tokenizerPath = join(hfDir, "tokenizer.json");
  const inputs = [
    join(hfDir, "config.json"),
    ...weights.files,
    join(hfDir, SAFETENSORS_INDEX),
    tokenizerPath,
    join(hfDir, "tokenizer_config.json"),
    join(hfDir, "chat_template.jinja"),
  ];
  const paths = format === "bin" ? [outPath, ...BIN_SIDE_FILES.map((s) => outPath + s)] : [outPath];
  const outputs = await OutputFiles.check(paths, inputs, opts.force ?? false);
  // The slowest check last. Only its products stay: the parsed tokenizer (~170 MB for
  // Qwen3's 11 MB JSON) is garbage before the weights stream.
  const side = await tokenizerProducts(
    tokenizerPath,
    config.vocabSize,
    (tok, json) =>
      format === "bin"
        ? qwen3cSideFiles(tok, templates, { bosId: hf.bosId, eosId: hf.eosId })
        : qwen3GgufMetadata(config, json, {
          name: hfDir.replace(/\/+$/, "").split("/").pop() || "qwen3",
          fileType: FILE_TYPE_OF[type],
          chatTemplate: chat?.source ?? QWEN3_CHAT_TEMPLATE,
          eosId: hf.eosId,
        }),
  );
  opts.signal?.throwIfAborted();

  let lastReport = 0;
  const report = (done: number, total: number) => {
    const now = performance.now();
    if (done === total || now - lastReport > 100) {
      lastReport = now;
      opts.onProgress?.(done, total);
    }
  };

  // 2. The outputs, as partials, then committed together.
  try {
    if (format === "gguf") {
      const metadata = side as [string, GgufValue][];
      const block = new Float32Array(Math.max(BLOCK_VALUES, config.dim, config.hiddenDim));
      const sources = qwen3GgufTensors(config).map(({ name, slot }) => {
        const hfName = hfTensorName(slot);
        const spec: GgufTensorSpec = {
          name,
          dims: ggufDims(slot),
          type: slot.kind === "f32" ? GgmlType.F32 : GGML_OF[type],
        };
        const data = async function* () {
          if (slot.kind === "f32") {
            yield bytesOf(await weights.readTensor(hfName));
            return;
          }
          const blocks = rowBlocks(weights, hfName, slot.rows, slot.cols, block, opts.signal);
          for await (const { values } of blocks) {
            yield encodeRows(values, type);
          }
        };
        return { spec, data };
      });
      let bytes: number;
      {
        using file = await outputs.create(outPath);
        bytes = await writeGgufTo(file, metadata, sources, {
          onProgress: report,
          signal: opts.signal,
        });
      }
      await outputs.commit(opts.signal);
      return {
        path: outPath,
        format,
        bytes,
        files: [outPath],
        config: { ...config, format: "gguf", groupSize: type === "q8_0" ? 32 : 0 },
        type,
        templateSource,
      };
    }

    const total = expectedFileSize(config);
    let done = 0;
    {
      using file = await outputs.create(outPath);
      await writeCheckpoint(file, weights, config, (n) => report(done += n, total), opts.signal);
    }
    if (done !== total) {
      throw new Qwen3Error("io", `${outPath}: wrote ${done} bytes, expected ${total}`);
    }
    for (const [ext, bytes] of side as Map<string, Uint8Array>) {
      opts.signal?.throwIfAborted();
      await outputs.write(outPath + ext, bytes);
    }
    opts.signal?.throwIfAborted();
    await outputs.copy(tokenizerPath, outPath + TOKENIZER_JSON_SUFFIX);
    await outputs.commit(opts.signal);
    return { path: outPath, format, bytes: total, files: paths, config, templateSource };
  } catch (e) {
    await outputs.discard();
    throw asQwen3Error(e, outPath);
  }
}

/** The side-file suffixes a model.bin export writes, in order. */
export const BIN_SIDE_FILES: readonly string[] = [
  ".tokenizer",
  ...Object.values(TEMPLATE_SUFFIXES),
  TOKENIZER_JSON_SUFFIX,
];
