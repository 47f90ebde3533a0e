/**
 * The batched-decode section of bench/RESULTS.md, for `deno task bench:compare`:
 * aggregate decode tok/s of N sessions of one model stepping together (N = 1, 2, 4, 8,
 * 16; bench/batch_bench.ts, in a fresh process per thread count) and each N's multiple of
 * one session's rate. The llama.cpp peer row (its batched decode of N sequences) is not
 * measured yet: the section says so.
 * @module
 */

import type { BatchBenchResult } from "./batch_bench.ts";
import { renderBatchTable } from "./batch_bench.ts";

/** The N values measured. */
export const BATCH_NS = [1, 2, 4, 8, 16];

/**
 * Measures batched decode at each thread count and appends its section to `results`
 * (bench/RESULTS.md, already written by compare.ts).
 *
 * @param opts The model, thread counts, runs (medians over them), the results file and a
 * logger.
 * @returns The measured results (also in the section).
 */
export async function compareBatch(opts: {
  model: string;
  threads: number[];
  runs: number;
  results: string;
  log: (msg: string) => void;
}): Promise<BatchBenchResult[]> {
  const out: BatchBenchResult[] = [];
  for (const t of opts.threads) {
    opts.log(`batched decode, ${t} thread(s), N = ${BATCH_NS.join(", ")}`);
    const cmd = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./batch_bench.ts", import.meta.url).pathname,
        opts.model,
        "--threads",
        String(t),
        "--ns",
        BATCH_NS.join(","),
        "--runs",
        String(Math.max(opts.runs, 3)),
        "--json",
      ],
      stdout: "piped",
      stderr: "inherit",
    });
    const r = await cmd.output();
    if (!r.success) {
      opts.log(`batched decode at ${t} thread(s) failed (exit ${r.code})`);
      continue;
    }
    out.push(JSON.parse(new TextDecoder().decode(r.stdout)));
  }
  const section = [
    "",
    "## Batched decode (many sequences per weight read)",
    "",
    "N sessions of the same model each decode one token per step; their steps go to C as one " +
    "`qwen3_context_decode_batch` pass (each weight read once for all N; every session's " +
    "logits bit-identical to its own decode step). Aggregate tok/s counts all N sessions; " +
    "medians of at least 3 runs, each of 8 steps per N after a 32-token prompt per session " +
    "(`deno run -A bench/batch_bench.ts MODEL --threads T`). Mean batch = steps per native " +
    "pass (N when every step was batched).",
    "",
    out.length ? renderBatchTable(out) : "(not measured: every run failed)",
    "",
    "llama.cpp peer row: not measured yet (its batched decode of N sequences, `llama_batch` " +
    "with several sequence ids, is not wired into bench/llama_run.py).",
    "",
  ].join("\n");
  await Deno.writeTextFile(opts.results, section, { append: true });
  return out;
}
