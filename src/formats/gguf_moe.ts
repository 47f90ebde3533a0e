/**
 * What makes a GGUF file a Qwen3-MoE model (docs/formats.md#qwen3-moe-gguf): architecture
 * `qwen3moe`, every `qwen3.*` key of gguf_qwen3.ts under `qwen3moe.*`, three expert keys and
 * four tensors per sparse block. Names are llama.cpp's (gguf-py/gguf/constants.py:
 * `{arch}.expert_count`, `{arch}.expert_used_count`, `{arch}.expert_feed_forward_length`,
 * `blk.{bid}.ffn_gate_inp`, `blk.{bid}.ffn_{gate,up,down}_exps`). The C engine has its own
 * copy in csrc/src/moe.c.
 * @module
 */

import type { MoeConfig } from "../types.ts";

/** `general.architecture` of a Qwen3-MoE GGUF. */
export const QWEN3MOE_ARCHITECTURE = "qwen3moe";

/** Largest `expert_count` accepted (Qwen3-235B-A22B has 128). */
export const MAX_EXPERTS = 1024;

/**
 * A `qwen3.*` key of gguf_qwen3.ts under another architecture's prefix.
 *
 * @param arch `qwen3` or `qwen3moe`.
 * @param key A key such as `qwen3.embedding_length`.
 * @returns e.g. `qwen3moe.embedding_length`.
 */
export function archKey(arch: string, key: string): string {
  return key.replace(/^qwen3\./, `${arch}.`);
}

/** The expert keys of a `qwen3moe` file, in reading and writing order. */
export const MOE_GGUF_KEYS = {
  /** Experts per sparse block, 1 to {@linkcode MAX_EXPERTS}. */
  nExperts: "qwen3moe.expert_count",
  /** Experts used per token, 1 to expert_count. */
  nExpertsUsed: "qwen3moe.expert_used_count",
  /** One expert's feed-forward width. */
  expertHiddenDim: "qwen3moe.expert_feed_forward_length",
  /**
   * Bool, optional: false when the chosen experts' weights are not renormalised (Hugging
   * Face `norm_topk_prob` false). Absent means true. llama.cpp's qwen3moe graph
   * renormalises whatever this says, so a file with false runs differently there.
   */
  normTopkProb: "qwen3moe.expert_weights_norm",
} as const;

/** The four tensors of a sparse block (in the order the writer writes them). */
export type MoeTensor = "router" | "gate" | "up" | "down";

/** GGUF names inside `blk.N.<name>.weight`, by tensor. */
export const MOE_GGUF_BLOCK_TENSORS: Readonly<Record<MoeTensor, string>> = {
  router: "ffn_gate_inp",
  gate: "ffn_gate_exps",
  up: "ffn_up_exps",
  down: "ffn_down_exps",
};

/**
 * The GGUF name of a sparse block's tensor.
 *
 * @param layer The block, from 0.
 * @param t The tensor.
 * @returns e.g. `blk.0.ffn_gate_exps.weight`.
 */
export function moeGgufTensorName(layer: number, t: MoeTensor): string {
  return `blk.${layer}.${MOE_GGUF_BLOCK_TENSORS[t]}.weight`;
}

/**
 * The GGUF dims (innermost first) of a sparse block's tensor: the router is
 * `[dim, n_experts]`, gate and up `[dim, expert_hidden_dim, n_experts]`, down
 * `[expert_hidden_dim, dim, n_experts]` (expert e's matrix is the e-th slice).
 *
 * @param dim The residual width.
 * @param moe The mixture's shape.
 * @param t The tensor.
 * @returns Its dims.
 */
export function moeGgufDims(dim: number, moe: MoeConfig, t: MoeTensor): number[] {
  const { nExperts, expertHiddenDim } = moe;
  if (t === "router") return [dim, nExperts];
  if (t === "down") return [expertHiddenDim, dim, nExperts];
  return [dim, expertHiddenDim, nExperts];
}
