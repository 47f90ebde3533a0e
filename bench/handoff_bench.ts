/**
 * What handing a decode step to another thread costs: the same `qwen3_context_decode`
 * steps run on the calling thread (the synchronous binding) and handed to one of Deno's
 * FFI worker threads (the nonblocking binding the engine uses, so the event loop stays
 * free), the two alternating round by round in one process, greedy, medians.
 *
 * On the 2-vCPU Xeon VM of bench/RESULTS.md, on a busy evening, the handed-off steps ran
 * 0.878x (1 thread: 16.93 against 14.87 tok/s) and 0.908x (2 threads: 27.74 against 25.19)
 * of the calling thread's rate, with some steps up to twice as long; a plain C program
 * handing each step to a waiting thread lost the same way, and pinned to one CPU
 * (`taskset -c 0`) the two agreed. Since every forward pass runs on the pool's own thread,
 * which stays hot between steps (csrc/src/threadpool.c, `qwen3_pool_call`), both arms hand
 * the step to that thread and should agree: on that host, busy again, 0.994x and 0.998x at
 * 1 thread, 0.970x and 0.987x at 2, where the build before gave 0.864x-0.932x and
 * 0.875x-0.886x. A ratio well under 1 says the hand-off costs again.
 *
 *   deno task build && deno run -A bench/handoff_bench.ts [MODEL] [--threads 1] [--steps 64]
 *       [--rounds 5]
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadLibrary } from "../ffi/library.ts";
import { cString } from "../ffi/symbols.ts";
import { median } from "./compare.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      threads: { type: "string", default: "1" },
      steps: { type: "string", default: "64" },
      rounds: { type: "string", default: "5" },
    },
  });
  const path = positionals[0] ?? join(ROOT, "bench/models/qwen3-0.6b-random/model.bin");
  const threads = Number(values.threads), steps = Number(values.steps);
  const rounds = Number(values.rounds);
  const lib = await loadLibrary();
  const model = lib.symbols.qwen3_model_load(cString(path), 0);
  if (model === null) throw new Error(`cannot load ${path}`);
  lib.symbols.qwen3_model_set_threads(model, threads);
  const rates: Record<"calling thread" | "handed off", number[]> = {
    "calling thread": [],
    "handed off": [],
  };
  for (let r = 0; r < rounds; r++) {
    const arms = r % 2 ? ["handed off", "calling thread"] as const : [
      "calling thread",
      "handed off",
    ] as const;
    for (const arm of arms) {
      const ctx = lib.symbols.qwen3_context_new(model, steps + 2);
      if (ctx === null) throw new Error("cannot make a context");
      let token = lib.symbols.qwen3_context_decode(ctx, 9707);
      const start = performance.now();
      for (let i = 0; i < steps; i++) {
        token = arm === "calling thread"
          ? lib.symbols.qwen3_context_decode(ctx, token)
          : await lib.symbols.qwen3_context_decode_nonblocking(ctx, token);
        if (token < 0) throw new Error(`decode failed (${token})`);
      }
      rates[arm].push(steps / ((performance.now() - start) / 1000));
      lib.symbols.qwen3_context_free(ctx);
    }
  }
  lib.symbols.qwen3_model_free(model);
  const on = median(rates["calling thread"]), off = median(rates["handed off"]);
  console.log(
    `${path}, ${threads} thread(s), ${steps} steps, medians of ${rounds}: calling thread ` +
      `${on.toFixed(2)} tok/s, handed off ${off.toFixed(2)} tok/s (${(off / on).toFixed(3)}x)`,
  );
}
