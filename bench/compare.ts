/**
 * The side-by-side benchmark: in one run, on one Qwen3-0.6B-shaped model with random
 * weights (the same weights as `model.bin` for our engines and as a Q8_0 GGUF for
 * llama.cpp), it measures prefill (pp128, pp512, pp2048, pp4096) and decode (tg128) tok/s at
 * 1 and 2 threads for our C engine and for llama.cpp built for this CPU (PyPI's
 * llama-cpp-python, compiled with native flags), decode only for our TypeScript engine, plus
 * the machine's memory read bandwidth, peak RSS and load time. Each measurement runs in a
 * fresh process; each is repeated `--runs` times and the median is reported. A measurement
 * that fails (a crash, a non-zero exit) is reported in its row with its exit code or signal,
 * and the rest of the table is still measured and written. Writes bench/RESULTS.md,
 * bench/results.json and bench/results.svg, and the table into README.md.
 *
 *   deno task bench:compare [--runs 3] [--threads 1,2] [--pp 128,512,2048,4096]
 *       [--no-llama] [--llama-compiler default|clang|zig] [--quick] [--no-moe]
 *
 * First use generates the model (~630 MB, under bench/models/) and builds llama-cpp-python
 * into .tools/ (several minutes on 2 cores). The peer is smoke-tested before it is measured;
 * a build that crashes (gcc 12 miscompiles llama.cpp's AMX path) is followed by builds with
 * Debian's clang and with Zig's clang (`zig cc`), each in its own folder, until one runs
 * (`--llama-compiler` starts the list elsewhere); on an AMX CPU a build without llama.cpp's
 * AMX path is used only when no later one runs with it. `QWEN3_LLAMA_PYTHON` names a python with
 * llama_cpp to use instead. Then the mixture-of-experts comparison (bench/compare_moe.ts; its
 * model, ~2.6 GB, takes ~15 minutes to make on first use) adds its section, unless `--no-moe`;
 * then batched decode (bench/compare_batch.ts) and speculative decoding
 * (bench/compare_speculate.ts) add theirs.
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { EngineRun } from "./engine_run.ts";
import { readCheckpoint } from "../src/formats/model_file.ts";
import { checkpointToGguf } from "../src/formats/gguf_convert.ts";
import { ensureZig } from "../tools/zig.ts";
import { compareBatch } from "./compare_batch.ts";
import { compareMoe, MOE_SECTION_TITLE } from "./compare_moe.ts";
import { compareSpeculate } from "./compare_speculate.ts";
import { compareKquant } from "./compare_kquant.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODEL_DIR = join(ROOT, "bench/models/qwen3-0.6b-random");
const MODEL_BIN = join(MODEL_DIR, "model.bin");
const MODEL_GGUF = join(MODEL_DIR, "model-q8_0.gguf");
/** llama-cpp-python release used as the peer (compiles its bundled llama.cpp). */
export const LLAMA_CPP_PYTHON = "0.3.36";
/** Where `ensureLlama` builds that peer; tests look for it there too. */
export const LLAMA_VENV = join(ROOT, `.tools/llama-cpp-python-${LLAMA_CPP_PYTHON}`);

function log(msg: string) {
  console.error(`[bench] ${msg}`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** A command that did not succeed: `status` is "exit N" or "exit N (SIGNAME)". */
export class RunError extends Error {
  /** How it ended, as a table cell shows it. */
  status: string;
  constructor(message: string, status: string) {
    super(message);
    this.status = status;
  }
}

/** How a finished command ended: "exit 1", or "exit 139 (SIGSEGV)" when a signal killed it. */
export function exitStatus(code: number, signal: string | null): string {
  return signal ? `exit ${code} (${signal})` : `exit ${code}`;
}

async function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; quiet?: boolean } = {},
): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    env: opts.env,
    stdout: "piped",
    stderr: opts.quiet ? "piped" : "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const err = opts.quiet ? new TextDecoder().decode(out.stderr) : "";
    const status = exitStatus(out.code, out.signal);
    throw new RunError(`${cmd} ${args.join(" ")} failed (${status})\n${err}${text}`.trim(), status);
  }
  return text;
}

async function ensureModel() {
  if (!await exists(MODEL_BIN)) {
    log(`writing the 0.6B-shaped random checkpoint to ${MODEL_BIN}`);
    await run(Deno.execPath(), ["run", "-A", "bench/make_model.ts", MODEL_DIR]);
  }
  if (!await exists(MODEL_GGUF)) {
    log(`converting it to GGUF Q8_0 for llama.cpp: ${MODEL_GGUF}`);
    const ckpt = await readCheckpoint(MODEL_BIN);
    await checkpointToGguf(ckpt, MODEL_GGUF, {
      tokenizerJson: join(MODEL_DIR, "tokenizer.json"),
      name: "Qwen3-0.6B-shaped random",
    });
  }
}

/** The llama.cpp peer: its python, how it was built, and what llama.cpp says it uses. */
export interface Peer {
  python: string;
  /** Compiler and flags of the build (from its record, or the library's .comment section). */
  build: string;
  /** llama.cpp's system info string (llama_print_system_info): the CPU paths it uses. */
  systemInfo: string;
}

/**
 * A text file holding the python of the build `ensureLlama` last chose (one line), so the
 * tests use the build that passed the smoke test, not a crashing one beside it; empty when
 * no build passed it.
 */
export const LLAMA_CHOSEN = `${LLAMA_VENV}.chosen`;

/**
 * The python to use as the peer without building one: `QWEN3_LLAMA_PYTHON`, else the build
 * `ensureLlama` last chose (LLAMA_CHOSEN), else its first build's path (which may not exist;
 * a build from before that record). "" (no peer) when the record says no build passed the
 * smoke test.
 */
export async function builtLlamaPython(): Promise<string> {
  const record = await Deno.readTextFile(LLAMA_CHOSEN).catch(() => null);
  return pickLlamaPython(Deno.env.get("QWEN3_LLAMA_PYTHON"), record);
}

/**
 * {@linkcode builtLlamaPython}'s rule.
 *
 * @param given `QWEN3_LLAMA_PYTHON`, if set.
 * @param record LLAMA_CHOSEN's text, or null when there is no such file.
 * @returns The python's path; "" for none.
 */
export function pickLlamaPython(given: string | undefined, record: string | null): string {
  if (given !== undefined) return given;
  return record === null ? join(LLAMA_VENV, "bin/python") : record.trim();
}

async function choose(peer: Peer): Promise<Peer> {
  await Deno.writeTextFile(LLAMA_CHOSEN, peer.python + "\n");
  return peer;
}

/** The compilers tried for the peer, in order; each builds into its own folder. */
export const LLAMA_COMPILERS = ["default", "clang", "zig"] as const;
export type LlamaCompiler = typeof LLAMA_COMPILERS[number];

function peerDir(compiler: LlamaCompiler): string {
  return compiler === "default" ? LLAMA_VENV : `${LLAMA_VENV}-${compiler}`;
}

async function which(cmd: string): Promise<string | null> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && await exists(join(dir, cmd))) return join(dir, cmd);
  }
  return null;
}

/** The compiler named in a built library's .comment section ("GCC: (...) 12.2.0", "clang version ..."). */
async function libraryCompiler(python: string): Promise<string> {
  try {
    const dir = (await run(python, [
      "-c",
      "import llama_cpp, os; print(os.path.join(os.path.dirname(llama_cpp.__file__), 'lib'))",
    ], { quiet: true })).trim();
    for (const name of ["libggml-cpu.so", "libllama.so"]) {
      const path = join(dir, name);
      if (!await exists(path)) continue;
      const text = new TextDecoder("latin1").decode(await Deno.readFile(path));
      const found = text.match(/GCC: \([^)\0]*\) [0-9.]+|(?:Debian )?clang version [0-9.]+[^\0]*/g);
      if (found) return [...new Set(found)].join(", ");
    }
  } catch { /* unknown below */ }
  return "compiler unknown";
}

/** Builds llama-cpp-python with `compiler` into its folder (nothing when it imports already). */
async function buildPeer(compiler: LlamaCompiler): Promise<string> {
  const dir = peerDir(compiler), python = join(dir, "bin/python");
  if (await exists(python)) {
    try {
      await run(python, ["-c", "import llama_cpp"], { quiet: true });
      return python;
    } catch { /* reinstall below */ }
  }
  const cmake = ["-DGGML_NATIVE=ON"];
  const env: Record<string, string> = {};
  if (compiler === "clang") {
    const cc = await which("clang"), cxx = await which("clang++");
    if (!cc || !cxx) throw new Error("clang and clang++ are not on PATH");
    Object.assign(env, { CC: cc, CXX: cxx });
  } else if (compiler === "zig") {
    // CMake wants one executable per compiler: wrappers for `zig cc` and `zig c++`. Zig's
    // clang has no OpenMP runtime, so ggml uses its own thread pool.
    const zig = await ensureZig();
    await Deno.mkdir(join(dir, "zig-cc"), { recursive: true });
    for (const [name, sub] of [["cc", "cc"], ["c++", "c++"]]) {
      const path = join(dir, "zig-cc", name);
      await Deno.writeTextFile(path, `#!/bin/sh\nexec "${zig}" ${sub} "$@"\n`);
      await Deno.chmod(path, 0o755);
    }
    Object.assign(env, { CC: join(dir, "zig-cc/cc"), CXX: join(dir, "zig-cc/c++") });
    cmake.push("-DGGML_OPENMP=OFF");
  }
  env.CMAKE_ARGS = cmake.join(" ");
  log(
    `building llama-cpp-python ${LLAMA_CPP_PYTHON} with ${compiler} compilers (${env.CMAKE_ARGS}) into ${dir} (minutes)`,
  );
  await run("python3", ["-m", "venv", dir]);
  await run(python, [
    "-m",
    "pip",
    "install",
    "--quiet",
    "--disable-pip-version-check",
    "--no-cache-dir",
    `llama-cpp-python==${LLAMA_CPP_PYTHON}`,
  ], { env });
  // The installed libraries may have no .comment section (the zig build's have none):
  // record the compiler's own version line.
  const cc = env.CC ?? "cc";
  const version = (await run(cc, ["--version"], { quiet: true }).catch(() => "")).split("\n")[0];
  const record = `${compiler === "zig" ? "zig cc: " : ""}${
    version || cc
  }, CC=${cc}, CMAKE_ARGS=${env.CMAKE_ARGS}`;
  await Deno.writeTextFile(join(dir, "qwen3-build.txt"), record + "\n");
  return python;
}

/** A peer that loads the model and runs a short prefill and decode without crashing. */
async function smokeTest(python: string): Promise<Peer> {
  await run(
    python,
    ["bench/llama_run.py", MODEL_GGUF, "--threads", "1", "--pp", "16", "--tg", "2"],
    {
      quiet: true,
    },
  );
  const systemInfo = (await run(python, [
    "-c",
    "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())",
  ], { quiet: true })).trim();
  const dir = dirname(dirname(python));
  const record = await Deno.readTextFile(join(dir, "qwen3-build.txt")).catch(() => "");
  const compiler = await libraryCompiler(python);
  const build = !record.trim()
    ? compiler
    : compiler === "compiler unknown"
    ? record.trim()
    : `${compiler}; ${record.trim()}`;
  return { python, build, systemInfo };
}

/**
 * Whether a peer misses the AMX path of a CPU that has it: Debian's clang 14 builds a
 * llama.cpp that runs on an AMX host but reports no AMX_INT8, and its prefill there is
 * about half of what Zig's clang 19 build with AMX reaches (bench/RESULTS.md).
 */
export function lacksHostAmx(cpuFlags: string, systemInfo: string): boolean {
  return /\bamx_int8\b/.test(cpuFlags) && !/AMX_INT8 = 1/.test(systemInfo);
}

/**
 * The first peer that passes the smoke test: $QWEN3_LLAMA_PYTHON, else the builds of
 * LLAMA_COMPILERS from `first` on. On a CPU with AMX-INT8, a build that runs without its
 * AMX path is kept only until a later compiler's build runs with it. Throws with every
 * failure when none runs.
 */
export async function ensureLlama(first: LlamaCompiler): Promise<Peer> {
  const cpuFlags = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  let withoutAmx: Peer | null = null;
  const failures: string[] = [];
  const given = Deno.env.get("QWEN3_LLAMA_PYTHON");
  if (given) {
    try {
      return await smokeTest(given);
    } catch (e) {
      const why = e instanceof RunError ? e.status : (e as Error).message;
      failures.push(`QWEN3_LLAMA_PYTHON=${given}: ${why}`);
      log(`llama.cpp peer ${given} failed its smoke test (${why})`);
    }
  }
  for (const compiler of LLAMA_COMPILERS.slice(LLAMA_COMPILERS.indexOf(first))) {
    try {
      const python = await buildPeer(compiler);
      try {
        const peer = await smokeTest(python);
        if (!lacksHostAmx(cpuFlags, peer.systemInfo)) return await choose(peer);
        log(
          `llama.cpp peer built with ${compiler} compilers runs without AMX on this AMX CPU; trying the next`,
        );
        withoutAmx ??= peer;
      } catch (e) {
        const why = e instanceof RunError ? e.status : (e as Error).message;
        failures.push(`${compiler} build: smoke test ${why}`);
        log(`llama.cpp peer built with ${compiler} compilers failed its smoke test (${why})`);
      }
    } catch (e) {
      const why = (e as Error).message.split("\n")[0];
      failures.push(`${compiler} build: ${why}`);
      log(`building the llama.cpp peer with ${compiler} compilers failed: ${why}`);
    }
  }
  if (withoutAmx) return await choose(withoutAmx);
  // No build runs: an empty record tells the tests so (builtLlamaPython), rather than
  // leaving them the first build's path, which may be one that crashes.
  await Deno.writeTextFile(LLAMA_CHOSEN, "").catch(() => {});
  throw new Error(failures.join("; "));
}

/** Read bandwidth in GB/s per thread count, from the C probe (csrc/tests/bench_bandwidth.c). */
async function bandwidth(threads: number[]): Promise<Record<number, number>> {
  const zig = await ensureZig();
  await run(zig, ["build", "bench-tools"], { quiet: true });
  const exe = join(ROOT, "zig-out/bin/bench-bandwidth");
  const out: Record<number, number> = {};
  for (const t of threads) {
    const samples: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = JSON.parse(await run(exe, ["--threads", String(t)], { quiet: true }));
      samples.push(r.gbPerSecond);
    }
    out[t] = median(samples);
  }
  return out;
}

/** Median of numbers (mean of the middle two for even counts). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** One row of the table: an engine at a thread count, medians of its successful runs. */
export interface Row {
  engine: string;
  threads: number;
  kernel: string;
  /** Prefill tok/s by prompt length ("pp128" ...). */
  pp: Record<string, number>;
  tg128: number;
  loadSeconds: number;
  peakRssMiB: number;
  addedRssMiB: number;
  runs: number;
  /** How the failed runs ended ("exit 139 (SIGSEGV)"), when any did. */
  failed?: string[];
}

function summarise(
  engine: string,
  threads: number,
  runs: EngineRun[],
  failed: string[],
): Row {
  const pick = (f: (r: EngineRun) => number) => runs.length ? median(runs.map(f)) : 0;
  const lengths = [...new Set(runs.flatMap((r) => Object.keys(r.prefill)))];
  return {
    engine,
    threads,
    kernel: runs[0]?.kernel ?? "-",
    pp: Object.fromEntries(lengths.map((k) => [k, pick((r) => r.prefill[k] ?? 0)])),
    tg128: pick((r) => r.decode),
    loadSeconds: pick((r) => r.loadSeconds),
    peakRssMiB: pick((r) => r.peakRss) / 2 ** 20,
    addedRssMiB: pick((r) => r.peakRss - r.baseRss) / 2 ** 20,
    runs: runs.length,
    ...(failed.length ? { failed } : {}),
  };
}

const fmt = (x: number, d = 1) => (x ? x.toFixed(d) : "-");

function ratio(a: number, b: number): string {
  return a && b ? `${(a / b).toFixed(2)}x` : "-";
}

/** The table cell of a row's failures: "failed: exit 139 (SIGSEGV)", or "2 of 3 runs failed: ...". */
export function failureNote(row: { runs: number; failed?: string[] }): string {
  if (!row.failed?.length) return "";
  const kinds = [...new Set(row.failed)].join(", ");
  return row.runs === 0
    ? `failed: ${kinds}`
    : `${row.failed.length} of ${row.failed.length + row.runs} runs failed: ${kinds}`;
}

/** The markdown tables of a run: one row per engine and thread count, then C / peer ratios. */
export function renderTable(
  rows: Row[],
  bw: Record<number, number>,
  modelBytes: number,
  pps: string[],
): string {
  const lines = [
    `| engine | threads | kernel | ${
      pps.map((p) => `${p} tok/s`).join(" | ")
    } | tg128 tok/s | tg128 GB/s (% of read bw) | load s | peak RSS MiB | notes |`,
    `|---|---|---|${pps.map(() => "---|").join("")}---|---|---|---|---|`,
  ];
  for (const r of rows) {
    const gbs = (r.tg128 * modelBytes) / 1e9;
    const pct = bw[r.threads] ? ` (${((100 * gbs) / bw[r.threads]).toFixed(0)}%)` : "";
    lines.push(
      `| ${r.engine} | ${r.threads} | ${r.kernel} | ${
        pps.map((p) => fmt(r.pp[p] ?? 0)).join(" | ")
      } | ${fmt(r.tg128)} | ${r.tg128 ? gbs.toFixed(1) + pct : "-"} | ${fmt(r.loadSeconds, 2)} | ${
        fmt(r.peakRssMiB, 0)
      } | ${failureNote(r)} |`,
    );
  }
  const byKey = (e: string, t: number) => rows.find((r) => r.engine === e && r.threads === t);
  const long = pps.filter((p) => p !== "pp128");
  const ratios = [
    "",
    `| threads | ${pps.map((p) => `C / llama.cpp ${p}`).join(" | ")} | C / llama.cpp tg128 | ${
      long.map((p) => `C ${p} / pp128`).join(" | ")
    }${long.length ? " | " : ""}C / TypeScript tg |`,
    `|---|${pps.map(() => "---|").join("")}---|${long.map(() => "---|").join("")}---|`,
  ];
  for (const t of [...new Set(rows.map((r) => r.threads))]) {
    const c = byKey("c", t), l = byKey("llama.cpp", t), ts = byKey("ts", t) ?? byKey("ts", 1);
    if (!c) continue;
    const flat = long.map((p) =>
      c.pp[p] && c.pp.pp128 ? `${((100 * c.pp[p]) / c.pp.pp128).toFixed(0)}%` : "-"
    );
    ratios.push(
      `| ${t} | ${pps.map((p) => ratio(c.pp[p] ?? 0, l?.pp[p] ?? 0)).join(" | ")} | ${
        ratio(c.tg128, l?.tg128 ?? 0)
      } | ${flat.join(" | ")}${flat.length ? " | " : ""}${ratio(c.tg128, ts?.tg128 ?? 0)} |`,
    );
  }
  const bwLine = Object.entries(bw).map(([t, g]) => `${g.toFixed(1)} GB/s at ${t} thread(s)`)
    .join(", ");
  return [
    ...lines,
    ...ratios,
    "",
    `Memory read bandwidth (bench-bandwidth probe): ${bwLine || "not measured"}. ` +
    `A decode step reads ${(modelBytes / 1e6).toFixed(1)} MB of weights (the model file).`,
  ].join("\n");
}

function renderSvg(rows: Row[], pps: string[]): string {
  const metrics = [...pps, "tg128"];
  const value = (r: Row, m: string) => m === "tg128" ? r.tg128 : r.pp[m] ?? 0;
  const colors: Record<string, string> = { c: "#2b6cb0", "llama.cpp": "#dd6b20", ts: "#718096" };
  const groups = metrics.flatMap((m) =>
    [...new Set(rows.map((r) => r.threads))].map((t) => ({ m, t }))
  );
  const max = Math.max(...rows.flatMap((r) => metrics.map((m) => value(r, m))), 1);
  const W = 760, H = 300, left = 50, bottom = 40, top = 30;
  const gw = (W - left - 10) / groups.length;
  const engines = [...new Set(rows.map((r) => r.engine))];
  const bw = (gw - 10) / engines.length;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<text x="${left}" y="18" font-size="13">tok/s, Qwen3-0.6B shapes, Q8 (higher is better)</text>`,
  ];
  groups.forEach((g, gi) => {
    engines.forEach((e, ei) => {
      const r = rows.find((x) => x.engine === e && x.threads === g.t);
      const v = r ? value(r, g.m) : 0;
      const h = ((H - bottom - top) * v) / max;
      const x = left + gi * gw + 5 + ei * bw;
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${(H - bottom - h).toFixed(1)}" width="${
          (bw - 2).toFixed(1)
        }" height="${h.toFixed(1)}" fill="${colors[e] ?? "#999"}"><title>${e} ${g.m} ${g.t}t: ${
          v.toFixed(1)
        }</title></rect>`,
      );
    });
    parts.push(
      `<text x="${(left + gi * gw + gw / 2).toFixed(1)}" y="${
        H - bottom + 15
      }" text-anchor="middle">${g.m} ${g.t}t</text>`,
    );
  });
  engines.forEach((e, i) =>
    parts.push(
      `<rect x="${left + i * 110}" y="${H - 14}" width="10" height="10" fill="${
        colors[e] ?? "#999"
      }"/><text x="${left + i * 110 + 14}" y="${H - 5}">${
        e === "c" ? "C engine" : e === "ts" ? "TypeScript engine" : e
      }</text>`,
    )
  );
  parts.push("</svg>");
  return parts.join("\n");
}

/**
 * The section of `md` that starts at the line beginning with `heading`, up to the next `## `
 * heading, with `note` as its first paragraph (once: a section kept twice keeps one note);
 * "" when `md` has no such section.
 */
export function keptSection(md: string, heading: string, note: string): string {
  const lines = md.split("\n");
  const start = lines.findIndex((l) => l.startsWith(heading));
  if (start < 0) return "";
  let end = lines.findIndex((l, i) => i > start && l.startsWith("## "));
  if (end < 0) end = lines.length;
  const body = lines.slice(start + 1, end).join("\n").trim();
  const rest = body.startsWith(note) ? body.slice(note.length).trim() : body;
  return [lines[start], "", note, "", rest, ""].join("\n");
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "3" },
      threads: { type: "string", default: "1,2" },
      pp: { type: "string", default: "128,512,2048,4096" },
      "no-llama": { type: "boolean", default: false },
      "llama-compiler": { type: "string", default: "default" },
      quick: { type: "boolean", default: false },
      "no-moe": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const usage = "usage: deno task bench:compare [--runs 3] [--threads 1,2] " +
    "[--pp 128,512,2048,4096] [--no-llama] [--llama-compiler default|clang|zig] [--quick] [--no-moe]";
  if (values.help) {
    console.log(usage);
    return;
  }
  const first = values["llama-compiler"] as LlamaCompiler;
  if (!LLAMA_COMPILERS.includes(first)) throw new Error(usage);
  const runs = values.quick ? 1 : Number(values.runs);
  const threads = values.threads.split(",").map(Number);
  const pp = values.quick ? "128" : values.pp;
  const pps = pp.split(",").filter(Boolean).map((n) => `pp${Number(n)}`);
  await ensureModel();
  const modelBytes = (await Deno.stat(MODEL_BIN)).size;
  let peerFailure = "";
  const peer = values["no-llama"] ? null : await ensureLlama(first).catch((e) => {
    peerFailure = e.message;
    log(`llama.cpp peer unavailable: ${e.message}`);
    return null;
  });
  if (peer) log(`llama.cpp peer: ${peer.python} (${peer.build})`);
  log("measuring memory read bandwidth");
  const bw = await bandwidth(threads);

  const rows: Row[] = [];
  // Every run of a row is attempted; a run that fails is counted in its row (exit code or
  // signal) and the benchmark goes on. The engines of a thread count take turns, run by
  // run, so a change in the host's load (a shared machine) hits both alike.
  type Arm = { engine: string; label: string; cmd: string; args: string[] };
  const measure = async (t: number, arms: Arm[], n = runs) => {
    const samples = arms.map(() => [] as EngineRun[]), failed = arms.map(() => [] as string[]);
    for (let i = 0; i < n; i++) {
      for (const [a, arm] of arms.entries()) {
        log(`${arm.label}, run ${i + 1}/${n}`);
        try {
          samples[a].push(JSON.parse(await run(arm.cmd, arm.args)));
        } catch (e) {
          failed[a].push(e instanceof RunError ? e.status : (e as Error).message.split("\n")[0]);
          log(`${arm.label}, run ${i + 1}/${n} failed: ${failed[a].at(-1)}`);
        }
      }
    }
    arms.forEach((arm, a) => rows.push(summarise(arm.engine, t, samples[a], failed[a])));
  };
  // Our engines' runs: bench/engine_run.ts in a fresh Deno process.
  const ours = (engine: "c" | "ts", label: string, rest: string[]): Arm => ({
    engine,
    label,
    cmd: Deno.execPath(),
    args: ["run", "-A", "bench/engine_run.ts", MODEL_BIN, "--engine", engine, ...rest],
  });
  for (const t of threads) {
    const work = ["--pp", pp, "--tg", "128"];
    const arms = [ours("c", `C engine, ${t} thread(s)`, ["--threads", String(t), ...work])];
    if (peer) {
      arms.push({
        engine: "llama.cpp",
        label: `llama.cpp, ${t} thread(s)`,
        cmd: peer.python,
        args: ["bench/llama_run.py", MODEL_GGUF, "--threads", String(t), ...work],
      });
    }
    await measure(t, arms);
  }
  // The TypeScript engine is single-threaded: a few decode steps suffice for a rate.
  await measure(
    1,
    [ours("ts", "TypeScript engine, decode", ["--pp", "", "--tg", "4"])],
    Math.min(runs, 2),
  );

  // The Q4_K_M rows (bench/compare_kquant.ts).
  const kquant = await compareKquant({
    sourceGguf: MODEL_GGUF,
    python: peer?.python ?? null,
    threads,
    runs,
    bandwidth: bw,
    log,
  });

  const moe = values["no-moe"] ? null : await compareMoe({
    python: peer?.python ?? null,
    tokenizerJson: join(MODEL_DIR, "tokenizer.json"),
    runs,
    threads,
    bandwidth: bw,
    log,
  });

  // --no-moe keeps the last measured MoE section rather than dropping it from RESULTS.md.
  const keptMoe = moe ? "" : keptSection(
    await Deno.readTextFile(join(ROOT, "bench/RESULTS.md")).catch(() => ""),
    MOE_SECTION_TITLE,
    "Not measured by this run (`--no-moe`): the section below is the previous run's.",
  );
  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(
    /model name\s*:\s*(.*)/,
  )?.[1] ?? Deno.build.arch;
  const table = renderTable(rows, bw, modelBytes, pps);
  const stamp = new Date().toISOString().slice(0, 10);
  const peerLine = peer
    ? `llama.cpp peer: llama-cpp-python ${LLAMA_CPP_PYTHON} built with ${peer.build}; its ` +
      `system info: \`${peer.systemInfo}\`.`
    : values["no-llama"]
    ? "llama.cpp peer: not measured (--no-llama)."
    : `llama.cpp peer: unavailable, no build of it passed the smoke test (${peerFailure}).`;
  const md = [
    "# Benchmark results",
    "",
    `Measured ${stamp} by \`deno task bench:compare\` on ${cpu} (${navigator.hardwareConcurrency} ` +
    `CPUs), one run, medians of ${runs} fresh-process runs per row (the engines taking turns, ` +
    `run by run). Model: Qwen3-0.6B shapes with random weights (\`bench/make_model.ts\`), ` +
    `${(modelBytes / 1e6).toFixed(1)} MB qwen3.c Q8 ` +
    `(group 64) for our engines and the same weights as GGUF Q8_0 for llama.cpp ` +
    `(llama-cpp-python ${LLAMA_CPP_PYTHON}, built with GGML_NATIVE). pp = prompt tokens ` +
    `processed per second, tg = tokens generated per second after a 1-token prompt. Peak RSS is the ` +
    `whole process (Deno or Python runtime included). The kernel column is the C engine's tier ` +
    `(\`qwen3_kernel_name\`). Both engines keep their default fp16 KV cache.`,
    "",
    peerLine,
    "",
    table,
    "",
    kquant.markdown,
    "",
    "![chart](results.svg)",
    "",
    ...(moe ? [moe.markdown] : keptMoe ? [keptMoe] : []),
  ].join("\n");
  await Deno.writeTextFile(join(ROOT, "bench/RESULTS.md"), md);
  await compareBatch({
    model: MODEL_BIN,
    threads,
    runs,
    results: join(ROOT, "bench/RESULTS.md"),
    log,
    peer: peer ? { python: peer.python, gguf: MODEL_GGUF } : undefined,
  });
  // Speculative decoding on the demo model and the 0.6B shape (bench/compare_speculate.ts).
  const spec = { rounds: runs, maxTokens: 64, threads: threads[threads.length - 1] };
  await compareSpeculate({
    ...spec,
    results: join(ROOT, "bench/RESULTS.md"),
    log,
    python: peer?.python,
    model06: MODEL_BIN,
  });
  await Deno.writeTextFile(join(ROOT, "bench/results.svg"), renderSvg(rows, pps));
  await Deno.writeTextFile(
    join(ROOT, "bench/results.json"),
    JSON.stringify(
      {
        date: stamp,
        cpu,
        bandwidth: bw,
        modelBytes,
        peer: peer ? { build: peer.build, systemInfo: peer.systemInfo } : null,
        rows,
        kquant: { fileBytes: kquant.fileBytes, tokenBytes: kquant.tokenBytes, rows: kquant.rows },
        ...(moe
          ? { moe: { rows: moe.rows, fileBytes: moe.fileBytes, activeBytes: moe.activeBytes } }
          : {}),
      },
      null,
      2,
    ) + "\n",
  );
  const readmePath = join(ROOT, "README.md");
  const readme = await Deno.readTextFile(readmePath).catch(() => "");
  const begin = "<!-- bench:begin -->", end = "<!-- bench:end -->";
  if (readme.includes(begin) && readme.includes(end)) {
    const next = readme.slice(0, readme.indexOf(begin) + begin.length) + "\n" + peerLine + "\n\n" +
      table + "\n\n" + kquant.markdown + "\n" + readme.slice(readme.indexOf(end));
    await Deno.writeTextFile(readmePath, next);
  }
  // Keep the generated files as `deno fmt` leaves them, so a rerun is a clean diff.
  await run(Deno.execPath(), [
    "fmt",
    "--quiet",
    "bench/RESULTS.md",
    "bench/results.json",
    "README.md",
  ], {
    quiet: true,
  }).catch((e) => log(`deno fmt failed: ${e.message}`));
  console.log(md);
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
