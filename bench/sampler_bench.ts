/**
 * What picking one token costs, over the 151936 logits of a Qwen3 vocabulary: the
 * TypeScript sampler (src/text/sampler.ts, what `Qwen3.generate`, `Chat.send`, the CLI and
 * the server run between decode steps, with either engine) against the C sampler
 * (`CSession.sample`, what `qwen3_inference_chat` runs), on the same logits (a forward pass
 * of the small random model) and settings. The two pick the same tokens
 * (docs/sampling.md#algorithm); a decode step of Qwen3-0.6B takes 25-60 ms on the 2-vCPU
 * Xeon, so a few milliseconds here is a few percent of a chat's speed. A random model's
 * logits are flat: top-p 0.9 keeps most of the vocabulary, which both samplers then order
 * by a radix sort (the worst case; a trained model's nucleus is far smaller).
 *
 *   deno bench -A bench/sampler_bench.ts
 * @module
 */

import { CEngine } from "../ffi/c_engine.ts";
import { Sampler } from "../src/text/sampler.ts";
import type { SamplerOptions } from "../src/types.ts";
import { benchModel, benchTokens } from "./bench_models.ts";

const engine = await CEngine.load(await benchModel("small"), { contextLength: 64, threads: 1 });
const session = engine.createSession(64);
const logits = await session.forward(benchTokens(16));

const SETTINGS: [string, SamplerOptions][] = [
  ["Qwen3's recommended (T 0.6, top-p 0.95, top-k 20)", { temperature: 0.6, topP: 0.95, topK: 20 }],
  ["the CLI's default (T 1, top-p 0.9), flat logits", { temperature: 1, topP: 0.9 }],
  ["temperature 0.7 alone", { temperature: 0.7, topP: 1 }],
];

for (const [group, opts] of SETTINGS) {
  const ts = new Sampler({ ...opts, seed: 7 }, logits.length);
  Deno.bench({
    name: "TypeScript sampler",
    group,
    baseline: true,
    n: 200,
    warmup: 20,
    fn: () => {
      ts.sample(logits);
    },
  });
  Deno.bench({
    name: "C sampler",
    group,
    n: 200,
    warmup: 20,
    fn: () => {
      session.setSampler({ ...opts, seed: 7 });
      session.sample();
    },
  });
}
