/**
 * The Qwen3-MoE half of `qwen3 export` (Qwen3MoeForCausalLM to a GGUF of arch `qwen3moe`,
 * docs/formats.md#qwen3-moe-gguf): the config fields, the per-expert safetensors names as
 * `save_pretrained` and the Hub checkpoints spell them, and the GGUF tensors and keys
 * (llama.cpp's names, from gguf-py/gguf/constants.py and tensor_mapping.py). A model.bin
 * export (docs/formats.md#qwen3-moe-checkpoint) walks checkpoint.ts's `checkpointFileOrder`
 * and reads the experts by {@linkcode hfMoeTensorName}.
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import type { GgufValue } from "../formats/gguf.ts";
import {
  archKey,
  MAX_EXPERTS,
  MOE_GGUF_KEYS,
  moeGgufDims,
  moeGgufTensorName,
  type MoeTensor,
  QWEN3MOE_ARCHITECTURE,
} from "../formats/gguf_moe.ts";
import { GGUF_KEYS } from "../formats/gguf_qwen3.ts";
import type { SafetensorsModel } from "../formats/safetensors.ts";
import type { ModelConfig, MoeConfig } from "../types.ts";

/** The Hugging Face class of a Qwen3-MoE folder. */
export const HF_MOE_ARCHITECTURE = "Qwen3MoeForCausalLM";

/** `model_type` of a Qwen3-MoE config.json. */
export const HF_MOE_MODEL_TYPE = "qwen3_moe";

function configError(path: string, message: string): Qwen3Error {
  return new Qwen3Error("format", `${path}: ${message}`);
}

function positive(json: Record<string, unknown>, path: string, field: string, max: number) {
  const v = json[field];
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > max) {
    throw configError(
      path,
      `${field} = ${JSON.stringify(v ?? null)} is not an integer in 1..${max}`,
    );
  }
  return v;
}

/**
 * The mixture fields of a Qwen3-MoE config.json: `num_experts` (transformers 5 writes
 * `num_local_experts`), `num_experts_per_tok`, `moe_intermediate_size`, and which blocks are
 * sparse: block l is unless it is in `mlp_only_layers` or `(l + 1) % decoder_sparse_step`
 * is not 0 (transformers' Qwen3MoeDecoderLayer rule).
 *
 * @param json config.json's object.
 * @param path Its path, for messages.
 * @param nLayers num_hidden_layers.
 * @param maxWidth The largest feed-forward width accepted.
 * @returns The mixture's shape.
 * `norm_topk_prob` (absent: false, transformers' default) says whether the chosen experts'
 * weights are renormalised.
 * @throws {Qwen3Error} `format` for a missing or out-of-range field.
 */
export function readHfMoe(
  json: Record<string, unknown>,
  path: string,
  nLayers: number,
  maxWidth: number,
): MoeConfig {
  const expertsField = json.num_experts !== undefined ? "num_experts" : "num_local_experts";
  const nExperts = positive(json, path, expertsField, MAX_EXPERTS);
  const nExpertsUsed = positive(json, path, "num_experts_per_tok", nExperts);
  const expertHiddenDim = positive(json, path, "moe_intermediate_size", maxWidth);
  const step = json.decoder_sparse_step === undefined
    ? 1
    : positive(json, path, "decoder_sparse_step", nLayers);
  const only = json.mlp_only_layers ?? [];
  if (!Array.isArray(only) || only.some((l) => !Number.isInteger(l) || l < 0 || l >= nLayers)) {
    throw configError(path, `mlp_only_layers = ${JSON.stringify(only)} is not a list of blocks`);
  }
  // transformers' Qwen3MoeConfig defaults norm_topk_prob to false; the released models say true
  const norm = json.norm_topk_prob ?? false;
  if (typeof norm !== "boolean") {
    throw configError(path, `norm_topk_prob = ${JSON.stringify(norm)} is not true or false`);
  }
  const sparse: boolean[] = [];
  for (let l = 0; l < nLayers; l++) sparse.push(!only.includes(l) && (l + 1) % step === 0);
  if (!sparse.includes(true)) throw configError(path, "no block is sparse (mlp_only_layers)");
  return { nExperts, nExpertsUsed, expertHiddenDim, normTopkProb: norm, sparse };
}

/** The safetensors projection of each GGUF expert tensor. */
const HF_PROJ: Readonly<Record<Exclude<MoeTensor, "router">, string>> = {
  gate: "gate_proj",
  up: "up_proj",
  down: "down_proj",
};

/**
 * The safetensors name of a sparse block's router, or of one expert's projection.
 *
 * @param layer The block.
 * @param t The GGUF tensor it feeds.
 * @param expert The expert (ignored for the router).
 * @returns e.g. `model.layers.0.mlp.experts.3.gate_proj.weight`.
 */
export function hfMoeTensorName(layer: number, t: MoeTensor, expert = 0): string {
  const p = `model.layers.${layer}.mlp.`;
  return t === "router" ? p + "gate.weight" : `${p}experts.${expert}.${HF_PROJ[t]}.weight`;
}

/** One tensor the exporter reads: its name and [rows, cols]. */
export interface HfMoeTensor {
  /** safetensors name. */
  name: string;
  /** [rows, cols] as stored. */
  shape: [number, number];
}

/**
 * Every safetensors tensor of sparse block `l`: the router, then per expert gate, up, down.
 *
 * @param c The model's shape (with `moe`).
 * @param l The block.
 * @returns Names and shapes.
 */
export function hfMoeTensors(c: ModelConfig, l: number): HfMoeTensor[] {
  const m = c.moe!;
  const out: HfMoeTensor[] = [{
    name: hfMoeTensorName(l, "router"),
    shape: [m.nExperts, c.dim],
  }];
  for (let e = 0; e < m.nExperts; e++) {
    out.push({ name: hfMoeTensorName(l, "gate", e), shape: [m.expertHiddenDim, c.dim] });
    out.push({ name: hfMoeTensorName(l, "up", e), shape: [m.expertHiddenDim, c.dim] });
    out.push({ name: hfMoeTensorName(l, "down", e), shape: [c.dim, m.expertHiddenDim] });
  }
  return out;
}

/** A GGUF tensor of a sparse block: its name, dims and where its values come from. */
export interface MoeGgufTensor {
  /** e.g. `blk.0.ffn_gate_exps.weight`. */
  name: string;
  /** Dims, innermost first. */
  dims: number[];
  /** Which tensor. */
  t: MoeTensor;
  /** The block. */
  layer: number;
}

/**
 * The GGUF tensors of sparse block `l`, in the order written: `ffn_gate_inp`,
 * `ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`.
 *
 * @param c The model's shape (with `moe`).
 * @param l The block.
 * @returns The tensors.
 */
export function moeGgufTensors(c: ModelConfig, l: number): MoeGgufTensor[] {
  return (["router", "gate", "up", "down"] as const).map((t) => ({
    name: moeGgufTensorName(l, t),
    dims: moeGgufDims(c.dim, c.moe!, t),
    t,
    layer: l,
  }));
}

/**
 * The fp32 values of a GGUF MoE tensor, one expert (or the whole router) at a time: expert
 * e's (rows, cols) matrix is the e-th slice of the 3-D tensor.
 *
 * @param weights The safetensors.
 * @param c The model's shape.
 * @param t The tensor.
 * @returns One Float32Array per expert (one in all for the router).
 */
export async function* moeTensorValues(
  weights: SafetensorsModel,
  c: ModelConfig,
  t: MoeGgufTensor,
): AsyncGenerator<Float32Array> {
  if (t.t === "router") {
    yield await weights.readTensor(hfMoeTensorName(t.layer, "router"));
    return;
  }
  for (let e = 0; e < c.moe!.nExperts; e++) {
    yield await weights.readTensor(hfMoeTensorName(t.layer, t.t, e));
  }
}

/**
 * The metadata of a `qwen3moe` GGUF from that of a dense one: the architecture renamed, the
 * `qwen3.*` keys moved under `qwen3moe.*`, and the expert keys after them.
 *
 * @param dense The metadata qwen3GgufMetadata wrote.
 * @param moe The mixture's shape.
 * @returns The key/value pairs, in the order written.
 */
export function moeGgufMetadata(
  dense: [string, GgufValue][],
  moe: MoeConfig,
): [string, GgufValue][] {
  const out: [string, GgufValue][] = [];
  let lastArchKey = -1;
  for (const [key, value] of dense) {
    if (key === GGUF_KEYS.architecture) {
      out.push([key, { type: "string", value: QWEN3MOE_ARCHITECTURE }]);
    } else if (key.startsWith("qwen3.")) {
      out.push([archKey(QWEN3MOE_ARCHITECTURE, key), value]);
      lastArchKey = out.length;
    } else out.push([key, value]);
  }
  out.splice(
    lastArchKey,
    0,
    [MOE_GGUF_KEYS.nExperts, { type: "u32", value: moe.nExperts }],
    [MOE_GGUF_KEYS.nExpertsUsed, { type: "u32", value: moe.nExpertsUsed }],
    [MOE_GGUF_KEYS.expertHiddenDim, { type: "u32", value: moe.expertHiddenDim }],
    // written only when false, so a renormalising model's file has llama.cpp's keys exactly
    ...(moe.normTopkProb ? [] : [[MOE_GGUF_KEYS.normTopkProb, { type: "bool", value: false }] as [
      string,
      GgufValue,
    ]]),
  );
  return out;
}
