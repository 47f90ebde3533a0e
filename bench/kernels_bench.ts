/**
 * The C engine's kernel tiers side by side: a decode step and a 64-token prefill on the
 * small random model with each tier this CPU supports forced in turn (selectKernel), the
 * scalar reference as the baseline. Every tier gives the same bits (csrc/tests), so only
 * the time differs. The matrix-vector kernels alone, in GB/s against a plain read, are
 * measured by `zig build bench-matvec && zig-out/bin/bench-matvec`.
 *
 *   deno bench -A bench/kernels_bench.ts
 * @module
 */

import { CEngine, kernelName, selectKernel } from "../ffi/c_engine.ts";
import { benchModel, benchTokens } from "./bench_models.ts";

/** Every tier name the library may have, best first (kernels.c). */
const TIERS = ["amx", "avx512vnni", "avxvnni", "avx2", "sve", "neondot", "neon", "scalar"];

const best = await kernelName();
const supported: string[] = [];
for (const tier of TIERS) {
  try {
    await selectKernel(tier);
    supported.push(tier);
  } catch { /* not built for this architecture, or this CPU lacks it */ }
}
await selectKernel(best);

const path = await benchModel("small");
const engine = await CEngine.load(path, { contextLength: 128, threads: 1 });
const session = engine.createSession(128);
const PROMPT = benchTokens(64, 3);

for (const tier of supported) {
  Deno.bench({
    name: tier,
    group: "decode step at position 64 (small model, 1 thread)",
    baseline: tier === "scalar",
    n: tier === "scalar" ? 20 : 200,
    warmup: 5,
    fn: async (b) => {
      await selectKernel(tier);
      session.rewind(0);
      await session.forward(PROMPT);
      b.start();
      await session.forward([9707]);
      b.end();
    },
  });
}

for (const tier of supported) {
  Deno.bench({
    name: tier,
    group: "prefill 64 tokens (small model, 1 thread)",
    baseline: tier === "scalar",
    n: tier === "scalar" ? 10 : 50,
    warmup: 2,
    fn: async () => {
      await selectKernel(tier);
      session.rewind(0);
      await session.forward(PROMPT);
    },
  });
}
