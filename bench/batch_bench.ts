/**
 * Aggregate decode speed of N sessions of one model stepping together (batched decode
 * steps, `qwen3_context_decode_batch`, through the binding's coalescing of concurrent
 * one-token `forward` calls) for N = 1, 2, 4, 8, 16, on the C engine.
 *
 *   deno run -A bench/batch_bench.ts [MODEL] [--threads 1] [--ns 1,2,4,8,16] [--steps 8]
 *                                    [--runs 3] [--json]
 *
 * MODEL defaults to bench/models/q06/model.bin (make it with `deno run -A
 * bench/make_model.ts bench/models/q06`). Each session holds a 32-token prompt; a run of
 * one N times `--steps` rounds of N concurrent one-token steps, then rewinds them. The runs
 * of the different N alternate (N order rotated per run) so a load change on the machine
 * hits every N alike; the reported rate is the median over `--runs`. Prints a table, or
 * with --json one {@link BatchBenchResult}.
 * @module
 */

import { parseArgs } from "node:util";
import { CEngine, type CSession, kernelName } from "../ffi/c_engine.ts";
import { benchTokens } from "./bench_models.ts";

/** One N: the median aggregate rate and what batching did. */
export interface BatchBenchRow {
  /** Sessions stepping together. */
  n: number;
  /** Tokens per second, all sessions together (median over the runs). */
  tokPerSecond: number;
  /** The rate as a multiple of the N = 1 rate. */
  speedup: number;
  /** Mean steps per native batched pass over all runs (N when every step batched). */
  meanBatch: number;
}

/** What `--json` prints. */
export interface BatchBenchResult {
  /** "c", or "llama.cpp" for bench/llama_batch_run.py's rows. */
  engine: string;
  threads: number;
  kernel: string;
  steps: number;
  runs: number;
  rows: BatchBenchRow[];
}

const PROMPT = 32;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Measures the aggregate decode rates.
 *
 * @param model The checkpoint.
 * @param opts Threads, the N values, rounds per run and runs.
 * @returns The rows, in the order of `ns`.
 */
export async function batchBench(
  model: string,
  opts: { threads: number; ns: number[]; steps: number; runs: number },
): Promise<BatchBenchResult> {
  using engine = await CEngine.load(model, { threads: opts.threads, contextLength: 256 });
  const most = Math.max(...opts.ns);
  const sessions: CSession[] = [];
  try {
    for (let i = 0; i < most; i++) {
      const s = engine.createSession(PROMPT + opts.steps + 1);
      await s.forward(benchTokens(PROMPT, i + 1));
      sessions.push(s);
    }
    const rates = new Map<number, number[]>(opts.ns.map((n) => [n, []]));
    const batched = new Map<number, { batches: number; steps: number }>(
      opts.ns.map((n) => [n, { batches: 0, steps: 0 }]),
    );
    const round = async (n: number, step: number) => {
      await Promise.all(
        sessions.slice(0, n).map((s, i) => s.forward([(step * 97 + i * 31) % 151000])),
      );
    };
    await round(most, 0); // warm-up: pages of every weight touched, the batch scratch made
    for (const s of sessions) s.rewind(PROMPT);
    for (let r = 0; r < opts.runs; r++) {
      for (let k = 0; k < opts.ns.length; k++) {
        const n = opts.ns[(k + r) % opts.ns.length];
        const before = engine.decodeBatchStats;
        const t0 = performance.now();
        for (let step = 0; step < opts.steps; step++) await round(n, step + 1);
        const secs = (performance.now() - t0) / 1000;
        const after = engine.decodeBatchStats;
        rates.get(n)!.push((n * opts.steps) / secs);
        const b = batched.get(n)!;
        b.batches += after.batches - before.batches;
        b.steps += after.steps - before.steps;
        for (const s of sessions.slice(0, n)) s.rewind(PROMPT);
      }
    }
    const base = median(rates.get(opts.ns[0])!);
    return {
      engine: "c",
      threads: engine.threads,
      kernel: await kernelName(),
      steps: opts.steps,
      runs: opts.runs,
      rows: opts.ns.map((n) => {
        const rate = median(rates.get(n)!);
        const b = batched.get(n)!;
        return { n, tokPerSecond: rate, speedup: rate / base, meanBatch: b.steps / b.batches };
      }),
    };
  } finally {
    for (const s of sessions) s[Symbol.dispose]();
  }
}

/** The results as one markdown table, by thread count. */
export function renderBatchTable(results: BatchBenchResult[]): string {
  const lines = [
    "| engine | threads | kernel | N | aggregate tok/s | per sequence tok/s | vs N = 1 | mean batch |",
    "| ------ | ------- | ------ | - | --------------- | ------------------ | -------- | ---------- |",
  ];
  for (const r of [...results].sort((a, b) => a.threads - b.threads)) {
    for (const row of r.rows) {
      lines.push(
        `| ${r.engine} | ${r.threads} | ${r.kernel} | ${row.n} | ${
          row.tokPerSecond.toFixed(1)
        } | ` +
          `${(row.tokPerSecond / row.n).toFixed(1)} | ${row.speedup.toFixed(2)}x | ` +
          `${row.meanBatch.toFixed(1)} |`,
      );
    }
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      threads: { type: "string", default: "1" },
      ns: { type: "string", default: "1,2,4,8,16" },
      steps: { type: "string", default: "8" },
      runs: { type: "string", default: "3" },
      json: { type: "boolean", default: false },
    },
  });
  const model = positionals[0] ??
    new URL("./models/q06/model.bin", import.meta.url).pathname;
  const result = await batchBench(model, {
    threads: Number(values.threads),
    ns: values.ns.split(",").map(Number),
    steps: Number(values.steps),
    runs: Number(values.runs),
  });
  console.log(values.json ? JSON.stringify(result) : renderBatchTable([result]));
}
