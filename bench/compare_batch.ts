/**
 * The batched-decode section of bench/RESULTS.md, for `deno task bench:compare`:
 * aggregate decode tok/s of N sessions of one model stepping together (N = 1, 2, 4, 8,
 * 16; bench/batch_bench.ts) and each N's multiple of one session's rate; with the llama.cpp
 * peer, its batched decode of N sequences (bench/llama_batch_run.py: one `llama_batch` of
 * N sequence ids per `llama_decode`) on the same weights as GGUF Q8_0, and our aggregate
 * rate as a multiple of its. Each run is a fresh process of one engine at one thread
 * count; the two engines' runs alternate, so a change of load hits both alike; every rate
 * is the median over the runs.
 * @module
 */

import type { BatchBenchResult } from "./batch_bench.ts";
import { renderBatchTable } from "./batch_bench.ts";

/** The N values measured. */
export const BATCH_NS = [1, 2, 4, 8, 16];

/** One fresh-process measurement; undefined (logged) when it fails. */
async function measure(
  cmd: string,
  args: string[],
  what: string,
  log: (msg: string) => void,
): Promise<BatchBenchResult | undefined> {
  log(what);
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "inherit" }).output();
  if (!r.success) {
    log(`${what} failed (exit ${r.code})`);
    return undefined;
  }
  return JSON.parse(new TextDecoder().decode(r.stdout));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs of one engine at one thread count merged: the median rate of each N, and each
 * median's multiple of the N = 1 median.
 *
 * @param runs The runs (each with a row for every N of {@link BATCH_NS}).
 * @returns The merged result; undefined for no runs.
 */
export function mergeBatchRuns(runs: BatchBenchResult[]): BatchBenchResult | undefined {
  if (runs.length === 0) return undefined;
  const of = (n: number, f: (row: BatchBenchResult["rows"][number]) => number) =>
    median(runs.map((r) => f(r.rows.find((x) => x.n === n)!)));
  const base = of(BATCH_NS[0], (r) => r.tokPerSecond);
  return {
    ...runs[0],
    runs: runs.length,
    rows: BATCH_NS.map((n) => ({
      n,
      tokPerSecond: of(n, (r) => r.tokPerSecond),
      speedup: of(n, (r) => r.tokPerSecond) / base,
      meanBatch: of(n, (r) => r.meanBatch),
    })),
  };
}

/** Our aggregate rate as a multiple of llama.cpp's, per thread count and N. */
function renderRatios(ours: BatchBenchResult[], peer: BatchBenchResult[]): string {
  const lines = [
    `| threads | ${BATCH_NS.map((n) => `C / llama.cpp N = ${n}`).join(" | ")} |`,
    `| ------- | ${BATCH_NS.map(() => "---").join(" | ")} |`,
  ];
  for (const c of ours) {
    const l = peer.find((p) => p.threads === c.threads);
    if (!l) continue;
    const cells = BATCH_NS.map((n) => {
      const a = c.rows.find((r) => r.n === n), b = l.rows.find((r) => r.n === n);
      return a && b ? `${(a.tokPerSecond / b.tokPerSecond).toFixed(2)}x` : "-";
    });
    lines.push(`| ${c.threads} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/**
 * Measures batched decode at each thread count (and llama.cpp's, given the peer) and
 * appends its section to `results` (bench/RESULTS.md, already written by compare.ts).
 *
 * @param opts The model, thread counts, runs (at least 3; medians over them), the results
 * file, a logger, and the llama.cpp peer's python with the same weights as GGUF (optional).
 * @returns Our results and the peer's (also in the section).
 */
export async function compareBatch(opts: {
  model: string;
  threads: number[];
  runs: number;
  results: string;
  log: (msg: string) => void;
  peer?: { python: string; gguf: string };
}): Promise<{ ours: BatchBenchResult[]; peer: BatchBenchResult[] }> {
  const out: BatchBenchResult[] = [], peer: BatchBenchResult[] = [];
  const runs = Math.max(opts.runs, 3), ns = BATCH_NS.join(",");
  for (const t of opts.threads) {
    const ours: BatchBenchResult[] = [], theirs: BatchBenchResult[] = [];
    for (let i = 1; i <= runs; i++) {
      const what = `${t} thread(s), N = ${ns}, run ${i}/${runs}`;
      const c = await measure(
        Deno.execPath(),
        [
          "run",
          "-A",
          new URL("./batch_bench.ts", import.meta.url).pathname,
          opts.model,
          ...["--threads", String(t), "--ns", ns, "--runs", "1", "--json"],
        ],
        `batched decode, ${what}`,
        opts.log,
      );
      if (c) ours.push(c);
      if (!opts.peer) continue;
      const l = await measure(
        opts.peer.python,
        [
          new URL("./llama_batch_run.py", import.meta.url).pathname,
          opts.peer.gguf,
          ...["--threads", String(t), "--ns", ns, "--runs", "1"],
        ],
        `llama.cpp batched decode, ${what}`,
        opts.log,
      );
      if (l) theirs.push(l);
    }
    const c = mergeBatchRuns(ours), l = mergeBatchRuns(theirs);
    if (c) out.push(c);
    if (l) peer.push(l);
  }
  const section = [
    "",
    "## Batched decode (many sequences per weight read)",
    "",
    "N sessions of the same model each decode one token per step; their steps go to C as one " +
    "`qwen3_context_decode_batch` pass (each weight read once for all N; every session's " +
    "logits bit-identical to its own decode step). Aggregate tok/s counts all N sessions; " +
    `medians of ${runs} fresh-process runs (ours and llama.cpp's alternating), each of 8 ` +
    "steps per N after a 32-token prompt per session " +
    "(`deno run -A bench/batch_bench.ts MODEL --threads T`). Mean batch = steps per native " +
    "pass (N when every step was batched).",
    "",
    out.length || peer.length
      ? renderBatchTable([...out, ...peer])
      : "(not measured: every run failed)",
    "",
    peer.length
      ? "llama.cpp rows: its batched decode of N sequences (`bench/llama_batch_run.py`: one " +
        "`llama_batch` holding one token of each of N sequence ids per `llama_decode`), on the " +
        "same weights as GGUF Q8_0. Our aggregate rate as a multiple of its:\n\n" +
        renderRatios(out, peer)
      : "llama.cpp rows: not measured (no peer).",
    "",
  ].join("\n");
  await Deno.writeTextFile(opts.results, section, { append: true });
  return { ours: out, peer };
}
