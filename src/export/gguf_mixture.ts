/**
 * Which ggml type each tensor of a quantised GGUF export gets: llama.cpp's mixtures
 * (`llama_tensor_get_type` and `tensor_type_fallback` in src/llama-quant.cpp, as of the
 * llama.cpp that llama-cpp-python 0.3.36 vendors), reduced to what a dense Qwen3 reaches. The
 * rules are those llama.cpp applies without an importance matrix and without user overrides;
 * docs/formats.md#quantised-gguf-exports lists them with the file types.
 *
 * For a dense Qwen3 (no experts, no fused QKV, not a 70B) the rules are:
 * - 1-D tensors (the norms) stay F32.
 * - `output.weight`, or `token_embd.weight` when there is no `output.weight` (tied
 *   embeddings): Q6_K, or Q8_0 when the row width is not a multiple of the mixture's base
 *   block (Q8_0 itself stays Q8_0).
 * - `attn_v.weight` and `ffn_down.weight` of the "more bits" layers (the first and last
 *   eighth, and every third layer between) in Q4_K_M and Q5_K_M: Q6_K.
 * - Everything else: the mixture's base type.
 * - Then the fallback for a row width the chosen block does not divide: Q4_K -> Q5_0,
 *   Q5_K -> Q5_1, Q6_K -> Q8_0, and F16 when even the 32-value block does not divide it.
 *
 * A Qwen3-MoE file (arch qwen3moe) adds, before the fallback:
 * - The 3-D expert tensors take the rules of their 2-D names: `ffn_down_exps` is an
 *   `ffn_down` (Q6_K in the "more bits" layers, the layer read from its `blk.N.` name),
 *   `ffn_gate_exps` / `ffn_up_exps` the base type; the router `ffn_gate_inp` stays F32.
 * - With exactly 8 experts (llama.cpp's rule for Mixtral-shaped models): `attn_v` and
 *   `attn_k` Q8_0 in every mixture, and `attn_output` Q5_K in Q4_K_M.
 * @module
 */

import { GGML_TYPE_TRAITS, GgmlType } from "../formats/gguf.ts";
import { LLAMA_FILE_TYPE } from "../formats/gguf_qwen3.ts";

/** The quantised mixtures `--type` offers, as llama-quantize names them (lower case). */
export type GgufQuantMixture = "q4_k_m" | "q5_k_m" | "q6_k" | "q5_0" | "q5_1" | "q4_1";

/** One mixture: its file type, base tensor type and the type of its "more bits" tensors. */
export interface MixtureRule {
  /** `general.file_type` (llama.h's `llama_ftype`). */
  fileType: number;
  /** The type of most matrices (`llama_ftype_get_default_type`). */
  base: number;
  /** attn_v / ffn_down of the "more bits" layers, when the mixture raises them. */
  moreBits?: number;
}

/** The mixtures, from llama-quant.cpp's `llama_ftype_get_default_type` and type rules. */
export const MIXTURES: Readonly<Record<GgufQuantMixture, MixtureRule>> = {
  q4_k_m: { fileType: LLAMA_FILE_TYPE.MOSTLY_Q4_K_M, base: GgmlType.Q4_K, moreBits: GgmlType.Q6_K },
  q5_k_m: { fileType: LLAMA_FILE_TYPE.MOSTLY_Q5_K_M, base: GgmlType.Q5_K, moreBits: GgmlType.Q6_K },
  q6_k: { fileType: LLAMA_FILE_TYPE.MOSTLY_Q6_K, base: GgmlType.Q6_K },
  q5_0: { fileType: LLAMA_FILE_TYPE.MOSTLY_Q5_0, base: GgmlType.Q5_0 },
  q5_1: { fileType: LLAMA_FILE_TYPE.MOSTLY_Q5_1, base: GgmlType.Q5_1 },
  q4_1: { fileType: LLAMA_FILE_TYPE.MOSTLY_Q4_1, base: GgmlType.Q4_1 },
};

/** llama-quant.cpp's `tensor_type_fallback` for the types reached here. */
const FALLBACK: Readonly<Record<number, number>> = {
  [GgmlType.Q4_K]: GgmlType.Q5_0,
  [GgmlType.Q5_K]: GgmlType.Q5_1,
  [GgmlType.Q6_K]: GgmlType.Q8_0,
};

/**
 * llama-quant.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
 * layer in between.
 *
 * @param layer The layer (llama.cpp counts attn_v / ffn_down tensors in file order, which is
 * layer order in the files written here).
 * @param nLayers The number of layers.
 * @returns Whether the layer's attn_v / ffn_down get more bits.
 */
export function useMoreBits(layer: number, nLayers: number): boolean {
  const eighth = Math.trunc(nLayers / 8);
  return layer < eighth || layer >= Math.trunc((7 * nLayers) / 8) || (layer - eighth) % 3 === 2;
}

function blockValues(type: number): number {
  return GGML_TYPE_TRAITS[type].values;
}

/** Where the fallback leaves `type` for rows of `cols` values. */
function fitRowWidth(type: number, cols: number): number {
  if (cols % blockValues(type) === 0) return type;
  const fallback = FALLBACK[type] ?? type;
  return cols % blockValues(fallback) === 0 ? fallback : GgmlType.F16;
}

/** What a tensor is, for the mixture rules. */
export interface MixtureTensor {
  /** GGUF name, e.g. "blk.3.attn_v.weight". */
  name: string;
  /** Its dims, innermost (the row width) first. */
  dims: readonly number[];
  /** Its layer, -1 outside the blocks. */
  layer: number;
}

/**
 * The ggml type a tensor gets in a mixture.
 *
 * @param mixture The mixture.
 * @param t The tensor.
 * @param nLayers The model's layer count.
 * @param tiedEmbeddings Whether the file has no `output.weight` (token_embd serves both).
 * @param nExperts Experts per sparse block (0 for a dense model).
 * @returns A {@linkcode GgmlType} value.
 */
export function mixtureTensorType(
  mixture: GgufQuantMixture,
  t: MixtureTensor,
  nLayers: number,
  tiedEmbeddings: boolean,
  nExperts = 0,
): number {
  if (
    t.dims.length < 2 || !t.name.endsWith("weight") || t.name.includes("_norm.weight") ||
    t.name.includes("ffn_gate_inp.weight")
  ) {
    return GgmlType.F32;
  }
  const rule = MIXTURES[mixture];
  const cols = t.dims[0];
  let type = rule.base;
  const isOutput = t.name === "output.weight" ||
    (tiedEmbeddings && t.name === "token_embd.weight");
  if (isOutput) {
    type = cols % blockValues(rule.base) !== 0 ? GgmlType.Q8_0 : GgmlType.Q6_K;
  } else if (
    rule.moreBits !== undefined &&
    (t.name.includes("attn_v.weight") || t.name.includes("ffn_down")) &&
    useMoreBits(t.layer, nLayers)
  ) {
    type = rule.moreBits;
  }
  if (nExperts === 8 && (t.name.includes("attn_v.weight") || t.name.includes("attn_k.weight"))) {
    type = GgmlType.Q8_0;
  } else if (nExperts === 8 && mixture === "q4_k_m" && t.name.includes("attn_output.weight")) {
    type = GgmlType.Q5_K;
  }
  return fitRowWidth(type, cols);
}
