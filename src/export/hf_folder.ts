/**
 * Reading a Hugging Face Qwen3 folder for the exporter: `config.json` checked and reduced to
 * the model's configuration, the safetensors tensors checked against it by name, shape and
 * dtype, and the chat template (`chat_template.jinja` or `tokenizer_config.json`). Nothing
 * here writes.
 * @module
 */

import { join } from "node:path";
import { Qwen3Error } from "../errors.ts";
import {
  checkpointTensorOrder,
  HEADER_LIMITS,
  QWEN3_RMS_EPS,
  QWEN3_ROPE_THETA,
  type TensorSlot,
} from "../formats/checkpoint.ts";
import { CONVERTIBLE_DTYPES, type SafetensorsModel } from "../formats/safetensors.ts";
import type { ModelConfig } from "../types.ts";
import { HF_MOE_ARCHITECTURE, HF_MOE_MODEL_TYPE, hfMoeTensors, readHfMoe } from "./moe_export.ts";

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

/** The `architectures` the exporter reads: the causal LM, and the bare body (Qwen3Model,
 * tensors without the `model.` prefix and no lm_head: how Qwen3-Embedding is saved). */
const HF_ARCHITECTURES: readonly unknown[] = ["Qwen3ForCausalLM", "Qwen3Model"];

/** Config fields as read: `json` is config.json's object. */
type Json = Record<string, unknown>;

/**
 * Refuses a config whose `architectures` or `model_type` is not Qwen3 (dense) or Qwen3-MoE;
 * returns true for Qwen3-MoE.
 */
function checkArchitecture(json: Json, path: string): boolean {
  const arch = json.architectures;
  const moe = Array.isArray(arch) && arch.includes(HF_MOE_ARCHITECTURE);
  if (!Array.isArray(arch) || (!arch.some((a) => HF_ARCHITECTURES.includes(a)) && !moe)) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: architectures is ${JSON.stringify(arch ?? null)}; only Qwen3ForCausalLM ` +
        "(dense Qwen3), Qwen3Model (its body without lm_head, as Qwen3-Embedding is saved) " +
        `or ${HF_MOE_ARCHITECTURE} can be exported`,
    );
  }
  const want = moe ? HF_MOE_MODEL_TYPE : "qwen3";
  if (json.model_type !== undefined && json.model_type !== want) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: model_type is ${JSON.stringify(json.model_type)}, expected "${want}"`,
    );
  }
  return moe;
}

/** A required positive integer field, at most `limit`. */
function positiveInt(json: Json, path: string, field: string, limit: number): number {
  const v = json[field];
  if (v === undefined || v === null) throw configError(path, `${field} is missing`);
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw configError(path, `${field} = ${JSON.stringify(v)} is not a positive integer`);
  }
  if (v > limit) throw configError(path, `${field} = ${v} exceeds the limit of ${limit}`);
  return v;
}

/** The model's widths and counts, each within the checkpoint limits and fitting together. */
function readShape(
  json: Json,
  path: string,
): Pick<
  ModelConfig,
  "dim" | "hiddenDim" | "nLayers" | "nHeads" | "nKvHeads" | "headDim" | "vocabSize" | "seqLen"
> {
  const L = HEADER_LIMITS;
  const shape = {
    dim: positiveInt(json, path, "hidden_size", L.dim),
    hiddenDim: positiveInt(json, path, "intermediate_size", L.hidden_dim),
    nLayers: positiveInt(json, path, "num_hidden_layers", L.n_layers),
    nHeads: positiveInt(json, path, "num_attention_heads", L.n_heads),
    nKvHeads: positiveInt(json, path, "num_key_value_heads", L.n_kv_heads),
    headDim: positiveInt(json, path, "head_dim", L.head_dim),
    vocabSize: positiveInt(json, path, "vocab_size", L.vocab_size),
    seqLen: positiveInt(json, path, "max_position_embeddings", L.seq_len),
  };
  const { nHeads, nKvHeads, headDim } = shape;
  if (nHeads % nKvHeads !== 0) {
    throw configError(
      path,
      `num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`,
    );
  }
  if (headDim % 2 !== 0) throw configError(path, `head_dim ${headDim} must be even for RoPE`);
  if (nHeads * headDim > L.dim) {
    throw configError(
      path,
      `num_attention_heads * head_dim = ${nHeads * headDim} exceeds the limit of ${L.dim}`,
    );
  }
  return shape;
}

/** rope_theta (top level or in rope_parameters) and rms_norm_eps; rope scaling is refused. */
function readRopeAndNorm(json: Json, path: string): { ropeTheta: number; rmsEps: number } {
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
  return { ropeTheta, rmsEps };
}

/** Refuses what the engines do not implement: activations other than SiLU, biases, windows. */
function refuseUnsupportedFeatures(json: Json, path: string): void {
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
}

/** A token id field (the first, when a list), or undefined when absent. */
function tokenId(json: Json, path: string, field: string, vocabSize: number): number | undefined {
  let v = json[field];
  if (Array.isArray(v)) v = v[0];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= vocabSize) {
    throw configError(path, `${field} = ${JSON.stringify(json[field])} is not a token id`);
  }
  return v;
}

/**
 * Reads and checks `config.json` of a Hugging Face Qwen3 folder: `architectures` must name
 * Qwen3ForCausalLM; hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
 * num_key_value_heads, head_dim, vocab_size and max_position_embeddings must be positive
 * integers within the checkpoint limits (heads divisible by kv heads, head_dim even);
 * rope_theta (top level or in rope_parameters) and rms_norm_eps are read; rope scaling,
 * sliding windows, attention biases and activations other than SiLU are refused, since the
 * engines implement none of them.
 *
 * @param dir The Hugging Face folder.
 * @returns The configuration (groupSize 0: the export chooses it), the token ids and dtype.
 * @throws {Qwen3Error} `io` when config.json is missing or unreadable.
 * @throws {Qwen3Error} `format` naming the file, the field and its value: not JSON, a field
 * missing, of the wrong type or out of range, fields that do not fit together.
 * @throws {Qwen3Error} `unsupported` for another architecture or a feature the engines lack.
 */
export async function readHfConfig(dir: string): Promise<HfQwen3Config> {
  const path = join(dir, "config.json");
  const json = await readJson(path, "config.json", "is this a Hugging Face model folder?");
  if (!isRecord(json)) throw configError(path, "is not a JSON object");
  const isMoe = checkArchitecture(json, path);
  const shape = readShape(json, path);
  const moe = isMoe ? readHfMoe(json, path, shape.nLayers, HEADER_LIMITS.hidden_dim) : undefined;
  const { ropeTheta, rmsEps } = readRopeAndNorm(json, path);
  refuseUnsupportedFeatures(json, path);
  const tie = json.tie_word_embeddings;
  if (tie !== undefined && typeof tie !== "boolean") {
    throw configError(path, `tie_word_embeddings = ${JSON.stringify(tie)} is not true or false`);
  }
  const bosId = tokenId(json, path, "bos_token_id", shape.vocabSize);
  const eosId = tokenId(json, path, "eos_token_id", shape.vocabSize);
  const dtype = json.torch_dtype ?? json.dtype;
  return {
    config: {
      format: "qwen3.c",
      ...shape,
      groupSize: 0,
      // Qwen3Config's default is untied: a config without the field has an lm_head.
      sharedClassifier: tie === true,
      ropeTheta,
      rmsEps,
      ...(moe ? { moe } : {}),
    },
    bosId,
    eosId,
    dtype: typeof dtype === "string" ? dtype : undefined,
  };
}

/**
 * The Hugging Face name of a checkpoint tensor.
 *
 * @param slot The tensor's slot name and layer.
 * @param prefix `model.` for Qwen3ForCausalLM's tensors, `""` for a bare Qwen3Model's
 * (see {@linkcode hfTensorPrefix}).
 * @returns e.g. `model.layers.0.self_attn.q_proj.weight` for (wq, 0).
 */
export function hfTensorName(
  slot: Pick<TensorSlot, "name" | "layer">,
  prefix: HfTensorPrefix = "model.",
): string {
  const p = `${prefix}layers.${slot.layer}.`;
  switch (slot.name) {
    case "embed":
      return `${prefix}embed_tokens.weight`;
    case "classifier":
      return "lm_head.weight";
    case "final_norm":
      return `${prefix}norm.weight`;
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
const IGNORED_TENSOR = /^(model\.)?layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/;

/** How a folder names its tensors: `model.embed_tokens.weight` (Qwen3ForCausalLM) or
 * `embed_tokens.weight` (a bare Qwen3Model, as Qwen3-Embedding checkpoints are saved). */
export type HfTensorPrefix = "model." | "";

/**
 * The tensor prefix of a folder, from its embedding table's name: `""` when it has
 * `embed_tokens.weight` and no `model.embed_tokens.weight` (a bare Qwen3Model: no lm_head,
 * so it exports with the embedding as the classifier), else `model.`.
 *
 * @param weights The folder's safetensors (headers only are needed).
 * @returns The prefix to pass to {@linkcode hfTensorName}.
 */
export function hfTensorPrefix(weights: Pick<SafetensorsModel, "tensors">): HfTensorPrefix {
  const bare = weights.tensors.has("embed_tokens.weight") &&
    !weights.tensors.has("model.embed_tokens.weight");
  return bare ? "" : "model.";
}

/**
 * Checks that `weights` holds exactly the tensors of `config` with the right shapes and a
 * convertible dtype (a tied model's stray `lm_head.weight` and old RoPE caches are ignored).
 *
 * @param weights The folder's safetensors (headers only are needed).
 * @param config The configuration from {@linkcode readHfConfig}.
 * @param prefix The folder's tensor prefix ({@linkcode hfTensorPrefix}).
 * @throws {Qwen3Error} `format` naming the tensor: missing, or of the wrong shape (both
 * shapes named).
 * @throws {Qwen3Error} `unsupported` for a dtype the exporter cannot convert, or a tensor a
 * dense Qwen3 does not have.
 */
export function checkHfTensors(
  weights: SafetensorsModel,
  config: ModelConfig,
  prefix: HfTensorPrefix = "model.",
): void {
  const used = new Set<string>();
  const wanted: { name: string; want: number[]; slot?: TensorSlot }[] = [];
  for (const slot of checkpointTensorOrder(config)) {
    const dense = slot.name === "w1" || slot.name === "w2" || slot.name === "w3";
    if (dense && config.moe?.sparse[slot.layer]) continue;
    wanted.push({ name: hfTensorName(slot, prefix), want: slotShape(slot), slot });
  }
  for (let l = 0; l < config.nLayers; l++) {
    if (!config.moe?.sparse[l]) continue;
    for (const t of hfMoeTensors(config, l)) wanted.push({ name: t.name, want: t.shape });
  }
  for (const { name, want, slot } of wanted) {
    used.add(name);
    const t = weights.tensors.get(name);
    if (!t) {
      const hint = slot?.name === "classifier"
        ? " (config.json says tie_word_embeddings is false, so the model needs its own lm_head)"
        : "";
      throw new Qwen3Error("format", `${weights.dir}: tensor ${name} is missing${hint}`);
    }
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
 * templates: "default"), with the special token strings of `tokenizer_config.json`.
 *
 * @param dir The Hugging Face folder.
 * @returns The template, its file and tokens; undefined when the folder has neither file.
 * @throws {Qwen3Error} `io` when a file exists but cannot be read.
 * @throws {Qwen3Error} `format` when tokenizer_config.json is not a JSON object or its
 * chat_template is not a string.
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
