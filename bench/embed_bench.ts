/**
 * What an embedding saves: the same tokens run with `forward` (prefill, then the classifier
 * for the last token's logits) and with `embed` (prefill, then only the final norm), on the
 * Qwen3-0.6B-shaped model (or 0.6B's layers x4 when bench/make_model.ts has not written it),
 * at every core. The difference is one vocab_size x dim matrix-vector product per input.
 *
 *   deno bench -A bench/embed_bench.ts
 * @module
 */

import { CEngine } from "../ffi/c_engine.ts";
import { benchTokens, largeBenchModel } from "./bench_models.ts";

const large = await largeBenchModel();
const engine = await CEngine.load(large.path, { contextLength: 160 });
const session = engine.createSession(160);

for (const n of [8, 128]) {
  const tokens = benchTokens(n, 3);
  const group = `${n} tokens (${large.name}, ${engine.threads} threads)`;
  Deno.bench({
    name: "prefill with logits",
    group,
    baseline: true,
    n: n > 32 ? 4 : 12,
    warmup: 1,
    fn: async () => {
      session.rewind(0);
      await session.forward(tokens);
    },
  });
  Deno.bench({
    name: "embed (no classifier)",
    group,
    n: n > 32 ? 4 : 12,
    warmup: 1,
    fn: async () => {
      session.rewind(0);
      await session.embed(tokens);
    },
  });
}
