/**
 * The mixture-of-experts part of `deno task bench:compare`: our C engine against llama.cpp
 * on one Qwen3-30B-A3B-shaped GGUF (arch `qwen3moe`) with random weights and fewer blocks,
 * quantised by llama.cpp itself (bench/make_moe_gguf.py), so both engines read the same
 * bytes. Prefill (pp128, pp512) and decode (tg64) tok/s at each thread count, medians of
 * fresh-process runs, the C engine and llama.cpp alternating; and the bytes a decode step
 * reads (the active parameters) against the whole file.
 *
 * Bytes per decoded token are counted from the file's tensor table, not measured with
 * hardware counters (the benchmark machine's hypervisor hides them): every tensor outside
 * the expert tensors is read once per token but the token embedding (one row, unless it is
 * also the classifier), and of each 3-D expert tensor only the slices of the
 * `expert_used_count` experts the router picks (moe.c reads no other expert's weights).
 * bench/moe_pages.ts measures what a decode step touches instead.
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readGgufHeader } from "../src/formats/gguf.ts";
import type { EngineRun } from "./engine_run.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Blocks of the benchmark model (Qwen3-30B-A3B has 48; fewer keep it at ~2.7 GB). */
export const MOE_BENCH_LAYERS = 6;

/** The benchmark model's path for a block count. */
export function moeBenchModel(layers: number = MOE_BENCH_LAYERS): string {
  return join(ROOT, `bench/models/qwen3-30b-a3b-random/model-${layers}l-q4_k_m.gguf`);
}

/** What {@linkcode compareMoe} needs from the dense comparison. */
export interface MoeCompareOptions {
  /** The llama-cpp-python peer's python (it also quantises the model); null when unavailable. */
  python: string | null;
  /** A Hugging Face Qwen3 tokenizer.json for the model's vocabulary. */
  tokenizerJson: string;
  /** Fresh-process runs per measurement. */
  runs: number;
  /** Thread counts. */
  threads: number[];
  /** Prompt lengths. */
  pp?: number[];
  /** Decode steps timed. */
  tg?: number;
  /** Blocks of the model. */
  layers?: number;
  /** Memory read bandwidth in GB/s by thread count, when measured. */
  bandwidth?: Record<number, number>;
  /** Progress messages. */
  log?: (msg: string) => void;
}

/** One engine at one thread count: medians of its runs. */
export interface MoeRow {
  /** "c" or "llama.cpp". */
  engine: string;
  /** Threads. */
  threads: number;
  /** Prefill tok/s by "ppN". */
  pp: Record<string, number>;
  /** Decode tok/s. */
  tg: number;
  /** Successful runs. */
  runs: number;
  /** How the failed runs ended. */
  failed: string[];
}

/** The report: the markdown section and what it was made from. */
export interface MoeCompareResult {
  /** A `## ...` section for bench/RESULTS.md. */
  markdown: string;
  /** Rows (empty when not measured). */
  rows: MoeRow[];
  /** The model file's size. */
  fileBytes: number;
  /** Weight bytes one decode step reads (see the module doc). */
  activeBytes: number;
}

/** The byte counts of a qwen3moe GGUF: the file, all its weights, and one token's share. */
export interface MoeBytes {
  /** The file's size. */
  fileBytes: number;
  /** Every tensor's bytes. */
  weightBytes: number;
  /** The 3-D expert tensors' bytes. */
  expertBytes: number;
  /** Bytes one decoded token reads: the rest, plus used/count of the expert bytes. */
  activeBytes: number;
}

/**
 * Counts a qwen3moe GGUF's bytes (its header only is read).
 *
 * @param path The GGUF file.
 * @returns The counts.
 */
export async function moeBytes(path: string): Promise<MoeBytes> {
  const fileBytes = (await Deno.stat(path)).size;
  using f = await Deno.open(path);
  const head = new Uint8Array(Math.min(fileBytes, 64 << 20));
  let got = 0;
  while (got < head.length) {
    const n = await f.read(head.subarray(got));
    if (n === null) break;
    got += n;
  }
  const g = readGgufHeader(head.subarray(0, got), fileBytes, path);
  const count = Number(g.metadata.get("qwen3moe.expert_count"));
  const used = Number(g.metadata.get("qwen3moe.expert_used_count"));
  let weightBytes = 0, expertBytes = 0, unread = 0;
  for (const t of g.tensors.values()) {
    weightBytes += t.bytes;
    if (t.name.endsWith("_exps.weight")) expertBytes += t.bytes;
    // the token embedding is read one row per token, unless it is also the classifier
    if (t.name === "token_embd.weight" && g.tensors.has("output.weight")) {
      unread = t.bytes - t.bytes / t.dims[1];
    }
  }
  const activeBytes = weightBytes - unread - expertBytes + (expertBytes * used) / count;
  return { fileBytes, weightBytes, expertBytes, activeBytes };
}

async function runJson(cmd: string, args: string[]): Promise<EngineRun> {
  const out = await new Deno.Command(cmd, { args, cwd: ROOT, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    const why = out.signal ? `exit ${out.code} (${out.signal})` : `exit ${out.code}`;
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    throw new Error(`${why}${err ? `: ${err}` : ""}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? 0 : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function ensureMoeModel(path: string, opts: MoeCompareOptions, layers: number) {
  try {
    await Deno.stat(path);
    return;
  } catch { /* made below */ }
  if (!opts.python) {
    throw new Error("the llama.cpp peer, which quantises the model, is unavailable");
  }
  opts.log?.(
    `writing the Qwen3-30B-A3B-shaped random GGUF (${layers} blocks) to ${path} (minutes)`,
  );
  await Deno.mkdir(dirname(path), { recursive: true });
  const out = await new Deno.Command(opts.python, {
    args: [
      "bench/make_moe_gguf.py",
      path,
      "--tokenizer",
      opts.tokenizerJson,
      "--layers",
      String(layers),
    ],
    cwd: ROOT,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`bench/make_moe_gguf.py failed (exit ${out.code})`);
}

const fmt = (x: number, d = 1) => (x ? x.toFixed(d) : "-");
const ratio = (a: number, b: number) => (a && b ? `${(a / b).toFixed(2)}x` : "-");

/** The markdown tables of the rows. */
export function renderMoeTable(
  rows: MoeRow[],
  pps: string[],
  tg: number,
  bytes: MoeBytes,
  bandwidth: Record<number, number> = {},
): string {
  const lines = [
    `| engine | threads | ${pps.map((p) => `${p} tok/s`).join(" | ")} | tg${tg} tok/s | ` +
    `tg${tg} GB/s of active weights (% of read bw) | notes |`,
    `|---|---|${pps.map(() => "---|").join("")}---|---|---|`,
  ];
  for (const r of rows) {
    const gbs = (r.tg * bytes.activeBytes) / 1e9;
    const bw = bandwidth[r.threads];
    const pct = bw ? ` (${((100 * gbs) / bw).toFixed(0)}%)` : "";
    const notes = r.failed.length
      ? `${r.failed.length} failed: ${[...new Set(r.failed)].join(", ")}`
      : "";
    lines.push(
      `| ${r.engine} | ${r.threads} | ${pps.map((p) => fmt(r.pp[p] ?? 0)).join(" | ")} | ${
        fmt(r.tg)
      } | ${r.tg ? gbs.toFixed(1) + pct : "-"} | ${notes} |`,
    );
  }
  lines.push(
    "",
    `| threads | ${pps.map((p) => `C / llama.cpp ${p}`).join(" | ")} | C / llama.cpp tg${tg} |`,
    `|---|${pps.map(() => "---|").join("")}---|`,
  );
  for (const t of [...new Set(rows.map((r) => r.threads))]) {
    const c = rows.find((r) => r.engine === "c" && r.threads === t);
    const l = rows.find((r) => r.engine === "llama.cpp" && r.threads === t);
    if (!c || !l) continue;
    lines.push(
      `| ${t} | ${pps.map((p) => ratio(c.pp[p] ?? 0, l.pp[p] ?? 0)).join(" | ")} | ${
        ratio(c.tg, l.tg)
      } |`,
    );
  }
  return lines.join("\n");
}

/**
 * Measures the MoE model on both engines and renders the section.
 *
 * @param opts The peer, tokenizer, runs and thread counts.
 * @returns The section (saying why when nothing could be measured) and its numbers.
 */
export async function compareMoe(opts: MoeCompareOptions): Promise<MoeCompareResult> {
  const layers = opts.layers ?? MOE_BENCH_LAYERS;
  const pp = opts.pp ?? [128, 512];
  const tg = opts.tg ?? 64;
  const path = moeBenchModel(layers);
  try {
    await ensureMoeModel(path, opts, layers);
  } catch (e) {
    const why = (e as Error).message;
    opts.log?.(`MoE benchmark skipped: ${why}`);
    return {
      markdown: `${MOE_SECTION_TITLE}\n\n${modelLine(layers)}\n\nNot measured: ${why}.\n`,
      rows: [],
      fileBytes: 0,
      activeBytes: 0,
    };
  }
  const bytes = await moeBytes(path);
  const pps = pp.map((n) => `pp${n}`);
  const samples = new Map<string, { runs: EngineRun[]; failed: string[] }>();
  const engines: [string, string, string[]][] = [];
  for (const t of opts.threads) {
    const common = ["--threads", String(t), "--pp", pp.join(","), "--tg", String(tg)];
    engines.push(["c", Deno.execPath(), [
      "run",
      "-A",
      "bench/engine_run.ts",
      path,
      "--engine",
      "c",
      ...common,
    ]]);
    if (opts.python) {
      engines.push(["llama.cpp", opts.python, ["bench/llama_run.py", path, ...common]]);
    }
  }
  // Runs alternate between the engines so a slow spell of a shared machine hits both.
  for (let i = 0; i < opts.runs; i++) {
    for (const [engine, cmd, args] of engines) {
      const key = `${engine}@${args[args.indexOf("--threads") + 1]}`;
      const s = samples.get(key) ?? { runs: [], failed: [] };
      samples.set(key, s);
      opts.log?.(`MoE ${engine}, ${key.split("@")[1]} thread(s), run ${i + 1}/${opts.runs}`);
      try {
        s.runs.push(await runJson(cmd, args));
      } catch (e) {
        s.failed.push((e as Error).message.split(":")[0]);
        opts.log?.(`MoE ${key} run ${i + 1} failed: ${(e as Error).message}`);
      }
    }
  }
  const rows: MoeRow[] = [...samples].map(([key, s]) => ({
    engine: key.split("@")[0],
    threads: Number(key.split("@")[1]),
    pp: Object.fromEntries(pps.map((p) => [p, median(s.runs.map((r) => r.prefill[p] ?? 0))])),
    tg: median(s.runs.map((r) => r.decode)),
    runs: s.runs.length,
    failed: s.failed,
  }));
  const markdown = renderMoeSection(rows, bytes, {
    layers,
    runs: opts.runs,
    pps,
    tg,
    bandwidth: opts.bandwidth,
  });
  return { markdown, rows, fileBytes: bytes.fileBytes, activeBytes: bytes.activeBytes };
}

/** The title line of the section, where {@linkcode writeMoeSection} finds it. */
export const MOE_SECTION_TITLE = "## Mixture of experts: Qwen3-30B-A3B shapes";

/** What the model is, as the section says it. */
function modelLine(layers: number): string {
  return `Model: Qwen3-30B-A3B's block shapes (dim 2048, 32 query / 4 key-value heads of 128, ` +
    `128 experts of width 768, 8 used, vocabulary 151936, untied classifier) with random weights and ` +
    `${layers} blocks instead of 48 (\`bench/make_moe_gguf.py\`), quantised to Q4_K_M by llama.cpp's ` +
    `own quantiser; both engines read that same GGUF.`;
}

/** How the section was measured: its runs, lengths and bandwidths. */
export interface MoeSectionOptions {
  /** Blocks of the model. */
  layers: number;
  /** Fresh-process runs per row. */
  runs: number;
  /** Prompt lengths as "ppN". */
  pps: string[];
  /** Decode steps timed. */
  tg: number;
  /** Memory read bandwidth in GB/s by thread count, when measured. */
  bandwidth?: Record<number, number>;
}

/**
 * The section of bench/RESULTS.md: the model, the tables and the bytes per token.
 *
 * @param rows The measured rows.
 * @param bytes The model's byte counts.
 * @param o How they were measured.
 * @returns Markdown, starting with {@linkcode MOE_SECTION_TITLE}.
 */
export function renderMoeSection(rows: MoeRow[], bytes: MoeBytes, o: MoeSectionOptions): string {
  const mb = (x: number) => (x / 1e6).toFixed(0);
  return [
    MOE_SECTION_TITLE,
    "",
    modelLine(o.layers) +
    ` Medians of ${o.runs} fresh-process runs per row, the engines alternating.`,
    "",
    renderMoeTable(rows, o.pps, o.tg, bytes, o.bandwidth),
    "",
    `Bytes per decoded token: ${mb(bytes.activeBytes)} MB of the file's ${mb(bytes.weightBytes)} ` +
    `MB of weights (${mb(bytes.expertBytes)} MB of them expert tensors): every non-expert tensor ` +
    `(one row of the token embedding) plus the 8 chosen experts' slices of each expert tensor, ` +
    `counted from the tensor table (no hardware counters under this hypervisor; ` +
    `\`bench/moe_pages.ts\` measures the pages a decode step touches). The classifier ` +
    `(output.weight) is a large share with only ${o.layers} blocks; in the 48-block model the ` +
    `experts dominate.`,
    "",
  ].join("\n");
}

/**
 * Puts the section in bench/RESULTS.md in place of an earlier one (the sections after it stay),
 * or at the end.
 *
 * @param markdown The section, from {@linkcode compareMoe}.
 */
export async function writeMoeSection(markdown: string): Promise<void> {
  const path = join(ROOT, "bench/RESULTS.md");
  const old = await Deno.readTextFile(path).catch(() => "# Benchmark results\n");
  const at = old.indexOf(MOE_SECTION_TITLE);
  const head = (at >= 0 ? old.slice(0, at) : old).trimEnd();
  // the sections after it (batched decode, speculation, ...) stay
  const next = at >= 0 ? old.indexOf("\n## ", at + MOE_SECTION_TITLE.length) : -1;
  const tail = next >= 0 ? `\n\n${old.slice(next + 1).trimEnd()}` : "";
  await Deno.writeTextFile(path, `${head}\n\n${markdown.trimEnd()}${tail}\n`);
}

if (import.meta.main) {
  // Alone (the rest of bench:compare not rerun): measures and replaces the section in
  // bench/RESULTS.md. `deno run -A bench/compare_moe.ts PYTHON TOKENIZER_JSON [runs] [threads]`
  const [python, tokenizerJson, runs = "3", threads = "1,2"] = Deno.args;
  if (!tokenizerJson) {
    console.error("usage: deno run -A bench/compare_moe.ts PYTHON TOKENIZER_JSON [runs] [threads]");
    Deno.exit(2);
  }
  const r = await compareMoe({
    python: python || null,
    tokenizerJson,
    runs: Number(runs),
    threads: threads.split(",").map(Number),
    log: (m) => console.error(`[bench] ${m}`),
  });
  await writeMoeSection(r.markdown);
  console.log(r.markdown);
}
