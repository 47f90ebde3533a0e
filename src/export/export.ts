/**
 * `qwen3 export`: a Hugging Face Qwen3 folder (`config.json`, safetensors, `tokenizer.json`,
 * `tokenizer_config.json`) to a qwen3.c `model.bin` (Q8 groups, with its `.tokenizer` and
 * four `.template*` side files and the model's `tokenizer.json` copied as
 * `<model>.tokenizer.json`, so two models can share a folder) or to a GGUF file (Q8_0, F16,
 * BF16 or F32 weights, or one of llama.cpp's quantised mixtures Q4_K_M, Q5_K_M, Q6_K, Q5_0,
 * Q5_1, Q4_1 with the tensor types llama.cpp's own quantiser picks (gguf_mixture.ts); norms
 * always F32).
 *
 * Everything that can be checked is checked before the first byte is written: the config
 * fields, every tensor's presence, shape and dtype (hf_folder.ts), the chat template's
 * rendering, the output names (output_files.ts: never an input, never anything but a
 * regular file, an existing one only with `force`) and the tokenizer. Weights then stream
 * one block of rows at a time (a few MB), so peak memory stays near the largest tensor's
 * scales and one block, far below the model. Outputs are written under
 * `<name>.partial-<pid>` and renamed in together at the end; on any failure or abort the
 * renamed ones are removed, the files they replaced are put back and the partials are
 * removed: all outputs or none. A process that wants the same on SIGTERM aborts the export
 * from a signal listener (the CLI does).
 *
 * ```sh
 * qwen3 export Qwen3-0.6B qwen3-0.6b.bin                        # model.bin, Q8 groups of 64
 * qwen3 export Qwen3-0.6B qwen3-0.6b.gguf --format gguf --type q8_0
 * qwen3 export Qwen3-0.6B qwen3-0.6b-q4_k_m.gguf --format gguf --type q4_k_m
 * ```
 * @module
 */

import { join } from "node:path";
import { renderChatTemplates } from "../text/chat_template.ts";
import { Qwen3Error } from "../errors.ts";
import {
  GGML_TYPE_NAMES,
  GgmlType,
  type GgufTensorSource,
  type GgufTensorSpec,
  type GgufValue,
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
  checkpointFileOrder,
  type CheckpointSlot,
  encodeHeader,
  expectedFileSize,
  HEADER_LIMITS,
  MAX_MOE_CHECKPOINT_LAYERS,
  QWEN3_RMS_EPS,
  QWEN3_ROPE_THETA,
  type TensorSlot,
} from "../formats/checkpoint.ts";
import { quantizeQ8Into } from "../reference/quant.ts";
import {
  float32ToBf16,
  float32ToF16,
  SAFETENSORS_INDEX,
  SafetensorsModel,
} from "../formats/safetensors.ts";
import { type ChatTemplates, STOCK_TEMPLATES, TEMPLATE_SUFFIXES } from "../text/template.ts";
import { Tokenizer } from "../text/tokenizer.ts";
import { qwen3cSideFiles } from "../formats/tokenizer_file.ts";
import {
  checkHfTensors,
  type HfChatTemplate,
  type HfQwen3Config,
  hfTensorName,
  type HfTensorPrefix,
  hfTensorPrefix,
  readHfChatTemplate,
  readHfConfig,
} from "./hf_folder.ts";
import { OutputFiles, writeAll } from "./output_files.ts";
import { type GgufQuantMixture, MIXTURES, mixtureTensorType } from "./gguf_mixture.ts";
import { isQuantizedType, QuantPool } from "./quant_pool.ts";
import { hfMoeTensorName, moeGgufMetadata, moeGgufTensors, moeTensorValues } from "./moe_export.ts";
import type { ModelConfig } from "../types.ts";

/** Output formats of {@linkcode exportHfModel}. */
export type ExportFormat = "bin" | "gguf";

/**
 * Weight types of a GGUF export: one type for every matrix, or one of llama.cpp's quantised
 * mixtures ({@linkcode GgufQuantMixture}).
 */
export type GgufWeightType = "q8_0" | "f16" | "bf16" | "f32" | GgufQuantMixture;

/** The GGUF weight types, as `--type` spells them. */
export const GGUF_WEIGHT_TYPES: readonly GgufWeightType[] = [
  "q8_0",
  "f16",
  "bf16",
  "f32",
  ...(Object.keys(MIXTURES) as GgufQuantMixture[]),
];

/**
 * The GGUF weight types that are llama.cpp's quantised mixtures (K-quants, Q5_0, Q5_1, Q4_1;
 * both engines run them, docs/formats.md#gguf-tensor-types).
 */
export const GGUF_MIXTURE_TYPES: readonly GgufWeightType[] = Object.keys(
  MIXTURES,
) as GgufQuantMixture[];

/** Default quantisation group of a model.bin export (every real Qwen3 uses it). */
export const DEFAULT_GROUP_SIZE = 64;

/** Options of {@linkcode exportHfModel}. */
export interface ExportOptions {
  /**
   * "bin": qwen3.c model.bin with side files; "gguf": a GGUF file.
   * @default {"bin"}
   */
  format?: ExportFormat;
  /**
   * model.bin quantisation group, halved until it divides every row width.
   * @default {64}
   */
  groupSize?: number;
  /**
   * GGUF weight type; norms are F32 whatever this says.
   * @default {"q8_0"}
   */
  type?: GgufWeightType;
  /**
   * Threads that quantise the blocks of a quantised mixture (`q4_k_m`, ...); the bytes do not
   * depend on it.
   * @default {navigator.hardwareConcurrency}
   */
  threads?: number;
  /** Called with (bytes written, total bytes) as the weights stream out. */
  onProgress?: (done: number, total: number) => void;
  /** Called with a line for each thing the user should know (group size halved, stock templates). */
  onNote?: (message: string) => void;
  /** Stops the export between blocks; nothing is left behind and nothing is replaced. */
  signal?: AbortSignal;
  /**
   * Replace output files that exist (when false, an existing output is refused). Only
   * regular files are ever replaced, and never one of the export's inputs.
   * @default {false}
   */
  force?: boolean;
}

/** What {@linkcode exportHfModel} wrote. */
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

/** Suffix of the copy of the model's tokenizer.json a model.bin export writes beside OUT. */
export const TOKENIZER_JSON_SUFFIX = ".tokenizer.json";

/** The side-file suffixes a model.bin export writes, in order. */
export const BIN_SIDE_FILES: readonly string[] = [
  ".tokenizer",
  ...Object.values(TEMPLATE_SUFFIXES),
  TOKENIZER_JSON_SUFFIX,
];

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

/**
 * The group size a model.bin export uses.
 *
 * @param requested The group size asked for.
 * @param c The model's widths.
 * @returns The largest power-of-two halving of `requested` that divides every row width of
 * `c`, an expert's width included (1 at worst).
 */
export function fitGroupSize(
  requested: number,
  c: Pick<ModelConfig, "dim" | "hiddenDim" | "nHeads" | "headDim" | "moe">,
): number {
  let gs = requested;
  const widths = [c.dim, c.hiddenDim, c.nHeads * c.headDim];
  if (c.moe) widths.push(c.moe.expertHiddenDim);
  while (gs > 1 && widths.some((w) => w % gs !== 0)) gs = Math.floor(gs / 2);
  return gs;
}

function bytesOf(a: Float32Array | Int8Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The safetensors name of a checkpoint slot. */
function hfSlotName(slot: CheckpointSlot, prefix: HfTensorPrefix): string {
  if (slot.kind === "router") return hfMoeTensorName(slot.layer, "router");
  if (slot.kind === "expert") return hfMoeTensorName(slot.layer, slot.name, slot.expert);
  return hfTensorName(slot, prefix);
}

/**
 * Writes the model.bin body in file order (a Qwen3-MoE model's experts section included),
 * Q8-quantising each matrix block by block.
 */
async function writeCheckpoint(
  file: Deno.FsFile,
  weights: SafetensorsModel,
  config: ModelConfig,
  prefix: HfTensorPrefix,
  progress: (bytes: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  const gs = config.groupSize;
  const block = new Float32Array(Math.max(BLOCK_VALUES, config.dim, config.hiddenDim));
  const q = new Int8Array(block.length);
  // The scales follow a whole matrix, so they are the one per-tensor buffer (4 bytes per
  // group: 9.7 MB for a 0.6B embedding), sized for the largest.
  let largest = 0;
  for (const slot of checkpointFileOrder(config)) {
    if (slot.kind === "q8" || slot.kind === "expert") {
      largest = Math.max(largest, slot.rows * slot.cols);
    }
  }
  const allScales = new Float32Array(largest / gs);
  const header = encodeHeader(config, "qwen3.c");
  await writeAll(file, header);
  progress(header.length);
  for (const slot of checkpointFileOrder(config)) {
    signal?.throwIfAborted();
    const name = hfSlotName(slot, prefix);
    if (slot.kind === "f32" || slot.kind === "router") {
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

const GGML_OF: Readonly<Record<"q8_0" | "f16" | "bf16" | "f32", number>> = {
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
  ...Object.fromEntries(Object.entries(MIXTURES).map(([k, r]) => [k, r.fileType])) as Record<
    GgufQuantMixture,
    number
  >,
};

/** Encodes fp32 rows as one ggml type (a fresh buffer: the writer may keep it). */
async function encodeRows(
  values: Float32Array,
  type: number,
  pool: QuantPool,
): Promise<Uint8Array> {
  if (isQuantizedType(type)) return await pool.quantize(type, values);
  if (type === GgmlType.F32) return bytesOf(values).slice();
  const out = new Uint16Array(values.length);
  const conv = type === GgmlType.F16 ? float32ToF16 : float32ToBf16;
  for (let i = 0; i < values.length; i++) out[i] = conv(values[i]);
  return bytesOf(out);
}

/**
 * The ggml type of each tensor of a GGUF export.
 *
 * @param config The model's shape.
 * @param type The export's weight type or mixture.
 * @returns GGUF tensor name -> {@linkcode GgmlType} value, in file order.
 */
export function ggufTensorTypes(config: ModelConfig, type: GgufWeightType): Map<string, number> {
  const out = new Map<string, number>();
  const nExperts = config.moe?.nExperts ?? 0;
  for (const { name, slot } of qwen3GgufTensors(config)) {
    if (isMoeSlot(config, slot)) {
      // A sparse block: the router F32, the experts in the export's type or mixture rule.
      for (const t of moeGgufTensors(config, slot.layer)) {
        if (t.t === "router") out.set(t.name, GgmlType.F32);
        else if (type in MIXTURES) {
          const m = { name: t.name, dims: t.dims, layer: slot.layer };
          out.set(
            t.name,
            mixtureTensorType(
              type as GgufQuantMixture,
              m,
              config.nLayers,
              config.sharedClassifier,
              nExperts,
            ),
          );
        } else out.set(t.name, GGML_OF[type as keyof typeof GGML_OF]);
      }
      continue;
    }
    if (isSparseDense(config, slot)) continue;
    if (slot.kind === "f32") out.set(name, GgmlType.F32);
    else if (type in MIXTURES) {
      const t = { name, dims: ggufDims(slot), layer: slot.layer };
      out.set(
        name,
        mixtureTensorType(
          type as GgufQuantMixture,
          t,
          config.nLayers,
          config.sharedClassifier,
          nExperts,
        ),
      );
    } else out.set(name, GGML_OF[type as keyof typeof GGML_OF]);
  }
  return out;
}

/** The GGUF tensors of the export, each streaming from the safetensors in its type. */
function ggufSources(
  weights: SafetensorsModel,
  config: ModelConfig,
  prefix: HfTensorPrefix,
  type: GgufWeightType,
  pool: QuantPool,
  signal?: AbortSignal,
): GgufTensorSource[] {
  const block = new Float32Array(Math.max(BLOCK_VALUES, config.dim, config.hiddenDim));
  const types = ggufTensorTypes(config, type);
  const out: GgufTensorSource[] = [];
  for (const { name, slot } of qwen3GgufTensors(config)) {
    if (isMoeSlot(config, slot)) {
      for (const t of moeGgufTensors(config, slot.layer)) {
        const spec: GgufTensorSpec = { name: t.name, dims: t.dims, type: types.get(t.name)! };
        const data = async function* () {
          for await (const values of moeTensorValues(weights, config, t)) {
            signal?.throwIfAborted();
            yield await encodeRows(values, spec.type, pool);
          }
        };
        out.push({ spec, data });
      }
      continue;
    }
    if (isSparseDense(config, slot)) continue;
    out.push(denseSource(name, slot));
  }
  return out;

  function denseSource(name: string, slot: TensorSlot): GgufTensorSource {
    const hfName = hfTensorName(slot, prefix);
    const spec: GgufTensorSpec = { name, dims: ggufDims(slot), type: types.get(name)! };
    const data = async function* () {
      if (slot.kind === "f32") {
        yield bytesOf(await weights.readTensor(hfName));
        return;
      }
      const blocks = rowBlocks(weights, hfName, slot.rows, slot.cols, block, signal);
      for await (const { values } of blocks) {
        yield await encodeRows(values, spec.type, pool);
      }
    };
    return { spec, data };
  }
}

/** Whether `slot` is the place of a sparse block's experts (its dense gate, w1). */
function isMoeSlot(config: ModelConfig, slot: TensorSlot): boolean {
  return slot.name === "w1" && config.moe?.sparse[slot.layer] === true;
}

/** Whether `slot` is a dense feed-forward matrix of a sparse block (which has none). */
function isSparseDense(config: ModelConfig, slot: TensorSlot): boolean {
  const ffn = slot.name === "w1" || slot.name === "w2" || slot.name === "w3";
  return ffn && config.moe?.sparse[slot.layer] === true;
}

/**
 * Refuses what a Qwen3-MoE export cannot be: a model.bin of more blocks than its header's
 * bitmap holds, or Q8_0 of an odd expert width.
 */
function checkMoeExport(hfDir: string, config: ModelConfig, format: ExportFormat, type: string) {
  if (format === "bin") {
    if (config.nLayers > MAX_MOE_CHECKPOINT_LAYERS) {
      throw new Qwen3Error(
        "unsupported",
        `${join(hfDir, "config.json")}: num_hidden_layers ${config.nLayers} is more than the ` +
          `${MAX_MOE_CHECKPOINT_LAYERS} blocks a Qwen3-MoE model.bin holds; use --format gguf`,
      );
    }
    return;
  }
  if (type === "q8_0" && config.moe!.expertHiddenDim % 32 !== 0) {
    throw new Qwen3Error(
      "unsupported",
      `Q8_0 needs row widths that are multiples of 32; moe_intermediate_size is ` +
        `${config.moe!.expertHiddenDim} (use --type f16, bf16 or f32)`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The checks before anything is written

/** The checked options. */
interface ExportChoices {
  format: ExportFormat;
  type: GgufWeightType;
  groupSize: number;
  threads: number;
}

/** The options with their defaults, each checked. */
function checkExportOptions(
  opts: ExportOptions,
): ExportChoices {
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
  const groupSize = opts.groupSize ?? DEFAULT_GROUP_SIZE;
  if (!Number.isInteger(groupSize) || groupSize <= 0 || groupSize > HEADER_LIMITS.group_size) {
    throw new Qwen3Error(
      "invalid_argument",
      `group size must be an integer in 1..${HEADER_LIMITS.group_size}, got ${groupSize}`,
    );
  }
  const threads = opts.threads ?? navigator.hardwareConcurrency ?? 1;
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024) {
    throw new Qwen3Error(
      "invalid_argument",
      `threads must be an integer in 1..1024, got ${threads}`,
    );
  }
  return { format, type, groupSize, threads };
}

/** The folder's chat template rendered, or the stock templates (with a note) when it has none. */
function exportTemplates(
  hfDir: string,
  chat: HfChatTemplate | undefined,
  note: (message: string) => void,
): { templates: ChatTemplates; templateSource: string } {
  if (chat) {
    return {
      templates: renderChatTemplates(chat.source, chat.file, chat.tokens),
      templateSource: chat.file,
    };
  }
  note(
    `${hfDir} has no chat_template (tokenizer_config.json or chat_template.jinja): ` +
      "writing the stock Qwen3 templates",
  );
  return { templates: STOCK_TEMPLATES, templateSource: "stock" };
}

/** The row widths of `config`, as messages list them. */
function widthText(config: ModelConfig): string {
  return `hidden_size ${config.dim}, intermediate_size ${config.hiddenDim}, ` +
    `heads x head_dim ${config.nHeads * config.headDim}`;
}

/**
 * Checks that model.bin can hold the model (Qwen3's RoPE base and epsilon, dim % 4 == 0) and
 * sets `config.groupSize` to the requested group, halved until it fits (with a note).
 */
function fitBinFormat(
  hfDir: string,
  config: ModelConfig,
  requestedGs: number,
  note: (message: string) => void,
): void {
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
      `group size ${requestedGs} does not divide every row width (${widthText(config)}): ` +
        `using ${config.groupSize}`,
    );
  }
}

/** Refuses a Q8_0 GGUF export of a model with a row width that is not whole 32-value blocks. */
function checkQ8_0Widths(config: ModelConfig): void {
  const widths = [config.dim, config.hiddenDim, config.nHeads * config.headDim];
  if (widths.some((w) => w % 32 !== 0)) {
    throw new Qwen3Error(
      "unsupported",
      `Q8_0 needs row widths that are multiples of 32; this model has ${widthText(config)} ` +
        "(use --type f16, bf16 or f32)",
    );
  }
}

/** Notes what a quantised mixture holds (tensors per ggml type, as llama-quantize reports them). */
function noteMixture(config: ModelConfig, type: GgufWeightType, note: (m: string) => void) {
  const counts = new Map<string, number>();
  for (const t of ggufTensorTypes(config, type).values()) {
    const name = GGML_TYPE_NAMES[t];
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const list = [...counts].map(([name, n]) => `${n} ${name}`).join(", ");
  note(`${type.toUpperCase()}: tensors ${list}`);
}

/** Every file the export reads: no output may be one of them. */
function exportInputs(hfDir: string, weights: SafetensorsModel): string[] {
  return [
    join(hfDir, "config.json"),
    ...weights.files,
    join(hfDir, SAFETENSORS_INDEX),
    join(hfDir, "tokenizer.json"),
    join(hfDir, "tokenizer_config.json"),
    join(hfDir, "chat_template.jinja"),
  ];
}

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

// ---------------------------------------------------------------------------------------------
// The export

/** Everything the writing step needs, all of it checked. */
interface ExportPlan {
  hfDir: string;
  outPath: string;
  format: ExportFormat;
  type: GgufWeightType;
  /** Quantisation threads of a mixture. */
  threads: number;
  hf: HfQwen3Config;
  /** `hf.config`, with the group size a model.bin export uses. */
  config: ModelConfig;
  weights: SafetensorsModel;
  /** How the folder names its tensors (`""`: a bare Qwen3Model, no lm_head). */
  prefix: HfTensorPrefix;
  /** The chat template of the folder, if any (a GGUF stores its source). */
  chat: HfChatTemplate | undefined;
  templates: ChatTemplates;
  templateSource: string;
  /** Every output, the model first. */
  paths: string[];
  tokenizerPath: string;
}

/** Reads and checks every input and names every output, before any output exists. */
async function planExport(
  hfDir: string,
  outPath: string,
  options: ExportChoices,
  note: (message: string) => void,
  weights: SafetensorsModel,
  hf: HfQwen3Config,
): Promise<ExportPlan> {
  const { format, type, groupSize, threads } = options;
  const prefix = hfTensorPrefix(weights);
  if (prefix === "") {
    // A bare Qwen3Model (Qwen3-Embedding) has no lm_head; the files need a classifier, so
    // the embedding table serves as one. Its logits mean nothing: such a model is for embed.
    hf.config.sharedClassifier = true;
    note(
      `${hfDir}: a Qwen3Model body without lm_head (an embedding model): the embedding ` +
        "table serves as the classifier; use the model for embeddings, not text",
    );
  }
  const config = hf.config;
  if (config.moe) checkMoeExport(hfDir, config, format, type);
  checkHfTensors(weights, config, prefix);
  const chat = await readHfChatTemplate(hfDir);
  const { templates, templateSource } = exportTemplates(hfDir, chat, note);
  if (format === "bin") fitBinFormat(hfDir, config, groupSize, note);
  else if (type === "q8_0") checkQ8_0Widths(config);
  else if (type in MIXTURES) noteMixture(config, type, note);
  const paths = format === "bin" ? [outPath, ...BIN_SIDE_FILES.map((s) => outPath + s)] : [outPath];
  const tokenizerPath = join(hfDir, "tokenizer.json");
  return {
    hfDir,
    outPath,
    format,
    type,
    threads,
    hf,
    config,
    weights,
    prefix,
    chat,
    templates,
    templateSource,
    paths,
    tokenizerPath,
  };
}

/**
 * What the tokenizer gives each format: model.bin's side files, or the GGUF metadata. The
 * slowest check, so it runs last; only its products stay (the parsed tokenizer, ~170 MB for
 * Qwen3's 11 MB JSON, is garbage before the weights stream).
 */
function tokenizerOutputs(p: ExportPlan): Promise<Map<string, Uint8Array> | [string, GgufValue][]> {
  return tokenizerProducts(
    p.tokenizerPath,
    p.config.vocabSize,
    (tok, json) =>
      p.format === "bin"
        ? qwen3cSideFiles(tok, p.templates, { bosId: p.hf.bosId, eosId: p.hf.eosId })
        : ggufMetadata(p, json),
  );
}

/** The GGUF metadata of the export: dense Qwen3's, or Qwen3-MoE's built from it. */
function ggufMetadata(p: ExportPlan, json: TokenizerJson): [string, GgufValue][] {
  const dense = qwen3GgufMetadata(p.config, json, {
    name: p.hfDir.replace(/\/+$/, "").split("/").pop() || "qwen3",
    fileType: FILE_TYPE_OF[p.type],
    chatTemplate: p.chat?.source ?? QWEN3_CHAT_TEMPLATE,
    eosId: p.hf.eosId,
  });
  return p.config.moe ? moeGgufMetadata(dense, p.config.moe) : dense;
}

/** `onProgress` called at most every 100 ms, and always for the last byte. */
function throttledProgress(
  onProgress?: (done: number, total: number) => void,
): (done: number, total: number) => void {
  let lastReport = 0;
  return (done, total) => {
    const now = performance.now();
    if (done === total || now - lastReport > 100) {
      lastReport = now;
      onProgress?.(done, total);
    }
  };
}

/** Writes the GGUF file as a partial and commits it. */
async function writeGgufExport(
  p: ExportPlan,
  outputs: OutputFiles,
  metadata: [string, GgufValue][],
  report: (done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<ExportResult> {
  // Only the mixtures' searches are slow enough to want threads.
  using pool = new QuantPool(p.type in MIXTURES ? p.threads : 1);
  const sources = ggufSources(p.weights, p.config, p.prefix, p.type, pool, signal);
  let bytes: number;
  {
    using file = await outputs.create(p.outPath);
    bytes = await writeGgufTo(file, metadata, sources, { onProgress: report, signal });
  }
  await outputs.commit(signal);
  return {
    path: p.outPath,
    format: p.format,
    bytes,
    files: [p.outPath],
    config: { ...p.config, format: "gguf", groupSize: p.type === "q8_0" ? 32 : 0 },
    type: p.type,
    templateSource: p.templateSource,
  };
}

/** Writes model.bin, its side files and the tokenizer.json copy as partials and commits them. */
async function writeBinExport(
  p: ExportPlan,
  outputs: OutputFiles,
  sideFiles: Map<string, Uint8Array>,
  report: (done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<ExportResult> {
  const total = expectedFileSize(p.config);
  let done = 0;
  {
    using file = await outputs.create(p.outPath);
    await writeCheckpoint(
      file,
      p.weights,
      p.config,
      p.prefix,
      (n) => report(done += n, total),
      signal,
    );
  }
  if (done !== total) {
    throw new Qwen3Error("io", `${p.outPath}: wrote ${done} bytes, expected ${total}`);
  }
  for (const [ext, bytes] of sideFiles) {
    signal?.throwIfAborted();
    await outputs.write(p.outPath + ext, bytes);
  }
  signal?.throwIfAborted();
  await outputs.copy(p.tokenizerPath, p.outPath + TOKENIZER_JSON_SUFFIX);
  await outputs.commit(signal);
  return {
    path: p.outPath,
    format: p.format,
    bytes: total,
    files: p.paths,
    config: p.config,
    templateSource: p.templateSource,
  };
}

function asQwen3Error(e: unknown, path: string): unknown {
  if (e instanceof Qwen3Error || (e instanceof DOMException && e.name === "AbortError")) return e;
  return new Qwen3Error("io", `${path}: write failed (${(e as Error).message ?? e})`);
}

/**
 * Exports the Hugging Face Qwen3 folder `hfDir` to `outPath`: a qwen3.c model.bin with its
 * side files (default) or a GGUF file. See the module documentation for what is checked and
 * how memory stays small. After an error (or an abort) the output names hold what they held
 * before.
 *
 * @param hfDir The Hugging Face folder.
 * @param outPath The model file to write; a model.bin's side files go beside it.
 * @param opts Format, group size or GGUF type, progress, notes, abort signal, force.
 * @returns What was written.
 * @throws {Qwen3Error} `invalid_argument` for a bad option, or an output that is an input,
 * not a regular file, or exists without `force`.
 * @throws {Qwen3Error} `io`, `format` or `unsupported` naming the file, tensor or field of
 * the folder that cannot be read, is malformed, or holds what the engines cannot run; `io`
 * when writing fails.
 * @throws {DOMException} `AbortError` when `opts.signal` aborts the export.
 */
export async function exportHfModel(
  hfDir: string,
  outPath: string,
  opts: ExportOptions = {},
): Promise<ExportResult> {
  const options = checkExportOptions(opts);
  const note = opts.onNote ?? (() => {});
  // 1. Everything that can fail on the input, before any output exists. Safetensors headers
  // only (cheap): shape and dtype errors come before the slow tokenizer parse.
  const hf = await readHfConfig(hfDir);
  using weights = await SafetensorsModel.open(hfDir);
  const plan = await planExport(hfDir, outPath, options, note, weights, hf);
  const outputs = await OutputFiles.check(
    plan.paths,
    exportInputs(hfDir, weights),
    opts.force ?? false,
  );
  const side = await tokenizerOutputs(plan);
  opts.signal?.throwIfAborted();
  const report = throttledProgress(opts.onProgress);

  // 2. The outputs, as partials, then committed together.
  try {
    return plan.format === "bin"
      ? await writeBinExport(plan, outputs, side as Map<string, Uint8Array>, report, opts.signal)
      : await writeGgufExport(plan, outputs, side as [string, GgufValue][], report, opts.signal);
  } catch (e) {
    await outputs.discard();
    throw asQwen3Error(e, outPath);
  }
}
