/**
 * The Q4_K_M rows of the side-by-side benchmark (bench/compare.ts): our C engine and llama.cpp
 * on one Q4_K_M file of the 0.6B-shaped random model, prefill (pp512) and decode (tg128) tok/s,
 * the decode rate as a share of the machine's read bandwidth for the bytes a token reads, and
 * peak RSS, at each thread count.
 *
 * The file is made once, with llama.cpp's own quantiser (`llama_model_quantize`, ftype 15
 * Q4_K_M, requantising the benchmark's Q8_0 GGUF; the weights were int8 already, so an F32
 * source would hold the same values), and cached beside it as `model-q4_k_m.gguf`. Without the
 * llama.cpp peer there is no file and the section says so.
 *
 *   deno run -A bench/compare_kquant.ts [--runs 1] [--threads 1,2]
 *
 * runs only these rows (bench:compare's model and peer must exist: `deno task bench:compare`
 * makes them) and prints the section.
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { EngineRun } from "./engine_run.ts";
import { readGgufHeader } from "../src/formats/gguf.ts";
import { builtLlamaPython } from "./compare.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** What {@link compareKquant} needs from the main benchmark. */
export interface KquantOptions {
  /** The benchmark's Q8_0 GGUF; the Q4_K_M file is made from it, in its folder. */
  sourceGguf: string;
  /** Python with llama_cpp (the peer), or null when there is none. */
  python: string | null;
  /** Thread counts, one pair of rows each. */
  threads: number[];
  /** Fresh-process runs per row (medians reported). */
  runs: number;
  /** Read bandwidth in GB/s by thread count (bench-bandwidth). */
  bandwidth: Record<number, number>;
  /** Progress lines. */
  log?: (msg: string) => void;
}

/** One row: an engine at a thread count, medians of its successful runs. */
export interface KquantRow {
  /** "c" or "llama.cpp". */
  engine: string;
  /** Threads used. */
  threads: number;
  /** Prefill tok/s of a 512-token prompt. */
  pp512: number;
  /** Decode tok/s over 128 tokens. */
  tg128: number;
  /** Peak RSS of the process, MiB. */
  peakRssMiB: number;
  /** Runs that succeeded. */
  runs: number;
  /** How the failed runs ended. */
  failed: string[];
}

/** What {@link compareKquant} returns: the rows and the markdown section showing them. */
export interface KquantResult {
  /** The Q4_K_M file measured ("" when none could be made). */
  model: string;
  /** Its size in bytes. */
  fileBytes: number;
  /** Bytes of weights one decode step reads (every matrix; one row of an untied embedding). */
  tokenBytes: number;
  /** One row per engine and thread count. */
  rows: KquantRow[];
  /** A markdown section: a heading, a line on the file, the table. */
  markdown: string;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length ? (s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2) : 0;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function output(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd: ROOT, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const status = out.signal ? `exit ${out.code} (${out.signal})` : `exit ${out.code}`;
    throw new Error(`${status}: ${new TextDecoder().decode(out.stderr).trim().split("\n").at(-1)}`);
  }
  return text;
}

/** llama_model_quantize(src -> dst, Q4_K_M), requantising allowed (src is Q8_0). */
const QUANTIZE = `
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
p.nthread = 2
p.allow_requantize = True
if llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) != 0:
    sys.exit("llama_model_quantize failed")
`;

/** The Q4_K_M file beside `source`, made with llama.cpp's quantiser when missing. */
export async function ensureQ4KM(source: string, python: string, log = (_: string) => {}) {
  const out = join(dirname(source), "model-q4_k_m.gguf");
  if (await exists(out)) return out;
  const partial = `${out}.partial-${Deno.pid}`;
  log(`quantising ${source} to Q4_K_M with llama.cpp (llama_model_quantize): ${out}`);
  try {
    await output(python, ["-c", QUANTIZE, source, partial]);
    await Deno.rename(partial, out);
  } finally {
    await Deno.remove(partial).catch(() => {});
  }
  return out;
}

/**
 * Bytes of weights a decode step reads from a GGUF: every tensor but the embedding table,
 * of which one row is read, unless it is also the classifier (no output.weight).
 */
export async function tokenReadBytes(path: string): Promise<number> {
  const size = (await Deno.stat(path)).size;
  using f = await Deno.open(path);
  const head = new Uint8Array(Math.min(size, 64 << 20));
  let got = 0;
  while (got < head.length) {
    const n = await f.read(head.subarray(got));
    if (n === null) break;
    got += n;
  }
  const g = readGgufHeader(head.subarray(0, got), size, path);
  let bytes = 0;
  const tied = !g.tensors.has("output.weight");
  for (const t of g.tensors.values()) {
    if (t.name === "token_embd.weight" && !tied) bytes += t.bytes / (t.dims[1] ?? 1);
    else bytes += t.bytes;
  }
  return bytes;
}

/** Measures the Q4_K_M rows (see the module comment). */
export async function compareKquant(opts: KquantOptions): Promise<KquantResult> {
  const log = opts.log ?? (() => {});
  const heading = "### Q4_K_M: C engine and llama.cpp on the same file";
  if (!opts.python) {
    const markdown = `${heading}\n\nNot measured: the Q4_K_M file is made with llama.cpp's ` +
      "quantiser, and no llama.cpp peer is available.";
    return { model: "", fileBytes: 0, tokenBytes: 0, rows: [], markdown };
  }
  const model = await ensureQ4KM(opts.sourceGguf, opts.python, log);
  const fileBytes = (await Deno.stat(model)).size;
  const tokenBytes = await tokenReadBytes(model);
  const rows: KquantRow[] = [];
  for (const t of opts.threads) {
    const cmds: [string, string, string[]][] = [
      ["c", Deno.execPath(), [
        "run",
        "-A",
        "bench/engine_run.ts",
        model,
        "--engine",
        "c",
        "--threads",
        String(t),
        "--pp",
        "512",
        "--tg",
        "128",
      ]],
      ["llama.cpp", opts.python, [
        "bench/llama_run.py",
        model,
        "--threads",
        String(t),
        "--pp",
        "512",
        "--tg",
        "128",
      ]],
    ];
    const samples: Record<string, EngineRun[]> = { c: [], "llama.cpp": [] };
    const failed: Record<string, string[]> = { c: [], "llama.cpp": [] };
    // the two engines alternate, run by run, so a change in the machine's load hits both
    for (let i = 0; i < opts.runs; i++) {
      for (const [engine, cmd, args] of cmds) {
        log(`Q4_K_M ${engine}, ${t} thread(s), run ${i + 1}/${opts.runs}`);
        try {
          samples[engine].push(JSON.parse(await output(cmd, args)));
        } catch (e) {
          failed[engine].push((e as Error).message.split(":")[0]);
        }
      }
    }
    for (const [engine] of cmds) {
      const s = samples[engine];
      rows.push({
        engine,
        threads: t,
        pp512: median(s.map((r) => r.prefill.pp512 ?? 0)),
        tg128: median(s.map((r) => r.decode)),
        peakRssMiB: median(s.map((r) => r.peakRss)) / 2 ** 20,
        runs: s.length,
        failed: failed[engine],
      });
    }
  }
  return {
    model,
    fileBytes,
    tokenBytes,
    rows,
    markdown: renderKquant(rows, opts, fileBytes, tokenBytes),
  };
}

const fmt = (x: number, d = 1) => (x ? x.toFixed(d) : "-");

/** The markdown section of the rows. */
export function renderKquant(
  rows: KquantRow[],
  opts: Pick<KquantOptions, "bandwidth" | "runs">,
  fileBytes: number,
  tokenBytes: number,
): string {
  const lines = [
    "### Q4_K_M: C engine and llama.cpp on the same file",
    "",
    `One Q4_K_M file (${(fileBytes / 1e6).toFixed(1)} MB, llama.cpp's \`llama_model_quantize\` ` +
    `of the Q8_0 GGUF above), medians of ${opts.runs} fresh-process runs per row, the engines ` +
    `alternating. A decode step reads ${(tokenBytes / 1e6).toFixed(1)} MB of weights; the % is ` +
    "that many bytes per token at the tg128 rate against the read-bandwidth probe.",
    "",
    "| engine | threads | pp512 tok/s | tg128 tok/s | tg128 GB/s (% of read bw) | peak RSS MiB | notes |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const gbs = (r.tg128 * tokenBytes) / 1e9, bw = opts.bandwidth[r.threads];
    const pct = bw ? ` (${((100 * gbs) / bw).toFixed(0)}%)` : "";
    const note = r.failed.length
      ? `${r.failed.length} of ${r.failed.length + r.runs} runs failed: ${
        [...new Set(r.failed)].join(", ")
      }`
      : "";
    lines.push(
      `| ${r.engine} | ${r.threads} | ${fmt(r.pp512)} | ${fmt(r.tg128)} | ${
        r.tg128 ? gbs.toFixed(2) + pct : "-"
      } | ${fmt(r.peakRssMiB, 0)} | ${note} |`,
    );
  }
  lines.push("", "| threads | C / llama.cpp pp512 | C / llama.cpp tg128 |", "|---|---|---|");
  for (const t of [...new Set(rows.map((r) => r.threads))]) {
    const c = rows.find((r) => r.engine === "c" && r.threads === t);
    const l = rows.find((r) => r.engine === "llama.cpp" && r.threads === t);
    const ratio = (a = 0, b = 0) => (a && b ? `${(a / b).toFixed(2)}x` : "-");
    lines.push(`| ${t} | ${ratio(c?.pp512, l?.pp512)} | ${ratio(c?.tg128, l?.tg128)} |`);
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "1" },
      threads: { type: "string", default: "1,2" },
    },
  });
  const threads = values.threads.split(",").map(Number);
  const python = await builtLlamaPython();
  const source = join(ROOT, "bench/models/qwen3-0.6b-random/model-q8_0.gguf");
  if (!await exists(source)) {
    console.error(`error: ${source} is missing: run \`deno task bench:compare\` once`);
    Deno.exit(1);
  }
  const bandwidth: Record<number, number> = {};
  for (const t of threads) {
    const r = JSON.parse(
      await output(join(ROOT, "zig-out/bin/bench-bandwidth"), ["--threads", String(t)]),
    );
    bandwidth[t] = r.gbPerSecond;
  }
  const result = await compareKquant({
    sourceGguf: source,
    python: await exists(python) ? python : null,
    threads,
    runs: Number(values.runs),
    bandwidth,
    log: (m) => console.error(`[bench] ${m}`),
  });
  console.log(result.markdown);
}
