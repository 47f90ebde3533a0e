/**
 * The router of a Qwen3-MoE sparse block in the TypeScript engine, with the C engine's
 * numerics (csrc/src/moe.c; docs/numerics.md#mixture-of-experts): fp32 logits summed in
 * input order, softmax over the experts, top-k with ties to the lower index, weights
 * renormalised over the chosen k (or not, when the model's `norm_topk_prob` is false). The experts themselves run through the engine's own
 * matvec (ts_engine.ts).
 * @module
 */

import { exp32 } from "./exp.ts";

const fround = Math.fround;

/**
 * Routes one token: picks `k` experts of `nExperts` and their weights.
 *
 * @param router (n_experts, dim) fp32 router matrix.
 * @param h The normed input (dim values, fp32, not quantised).
 * @param dim Its width.
 * @param probs Scratch of n_experts values: the softmax probabilities on return.
 * @param chosen Out: the k chosen experts, most probable first (ties: lower index first).
 * @param weights Out: their weights, `probs[chosen[j]] / (sum of the k probs in that order)`,
 * or `probs[chosen[j]]` when `normalize` is false.
 * @param normalize Renormalise the k weights to sum 1 (Hugging Face `norm_topk_prob`).
 */
export function routeToken(
  router: Float32Array,
  h: Float32Array,
  dim: number,
  probs: Float32Array,
  chosen: Int32Array,
  weights: Float32Array,
  normalize = true,
): void {
  const n = probs.length, k = chosen.length;
  for (let e = 0; e < n; e++) {
    let acc = 0;
    const off = e * dim;
    for (let i = 0; i < dim; i++) acc = fround(acc + fround(router[off + i] * h[i]));
    probs[e] = acc;
  }
  // Softmax: max, exp(x - max) summed in expert order, then / sum (as attention's).
  let max = probs[0];
  for (let e = 1; e < n; e++) if (probs[e] > max) max = probs[e];
  let sum = 0;
  for (let e = 0; e < n; e++) {
    probs[e] = exp32(fround(probs[e] - max));
    sum = fround(sum + probs[e]);
  }
  for (let e = 0; e < n; e++) probs[e] = fround(probs[e] / sum);
  // Top-k by repeated selection: the largest not yet chosen, the lower index on ties.
  let total = 0;
  for (let j = 0; j < k; j++) {
    let best = -1;
    for (let e = 0; e < n; e++) {
      let taken = false;
      for (let i = 0; i < j; i++) if (chosen[i] === e) taken = true;
      if (!taken && (best < 0 || probs[e] > probs[best])) best = e;
    }
    chosen[j] = best;
    total = fround(total + probs[best]);
  }
  for (let j = 0; j < k; j++) {
    weights[j] = normalize ? fround(probs[chosen[j]] / total) : probs[chosen[j]];
  }
}
