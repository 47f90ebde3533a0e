/**
 * The side-by-side benchmark: in one run, on one Qwen3-0.6B-shaped model with random
 * weights (the same weights as `model.bin` for our engines and as a Q8_0 GGUF for
 * llama.cpp), it measures prefill (pp128, pp512) and decode (tg128) tok/s at 1 and 2 threads
 * for our C engine and for llama.cpp built for this CPU (PyPI's llama-cpp-python, compiled
 * with native flags), decode only for our TypeScript engine, plus the machine's memory read
 * bandwidth, peak RSS and load time. Each measurement runs in a fresh process; each is
 * repeated `--runs` times and the median is reported. Writes bench/RESULTS.md,
 * bench/results.json and bench/results.svg, and the table into README.md.
 *
 *   deno task bench:compare [--runs 3] [--threads 1,2] [--no-llama] [--quick]
 *
 * First use generates the model (~630 MB, under bench/models/) and builds llama-cpp-python
 * into .tools/ (several minutes on 2 cores).
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { EngineRun } from "./engine_run.ts";
import { readCheckpoint } from "../src/formats/model_file.ts";
import { checkpointToGguf } from "../src/formats/gguf_convert.ts";
import { ensureZig } from "../tools/zig.ts";

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
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${out.code})\n${err}${text}`.trim());
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

async function ensureLlama(): Promise<string> {
  const python = join(LLAMA_VENV, "bin/python");
  if (await exists(python)) {
    try {
      await run(python, ["-c", "import llama_cpp"], { quiet: true });
      return python;
    } catch { /* reinstall below */ }
  }
  log(`building llama-cpp-python ${LLAMA_CPP_PYTHON} for this CPU into ${LLAMA_VENV} (minutes)`);
  await run("python3", ["-m", "venv", LLAMA_VENV]);
  await run(python, [
    "-m",
    "pip",
    "install",
    "--quiet",
    "--disable-pip-version-check",
    `llama-cpp-python==${LLAMA_CPP_PYTHON}`,
  ], { env: { CMAKE_ARGS: "-DGGML_NATIVE=ON" } });
  return python;
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

interface Row {
  engine: string;
  threads: number;
  kernel: string;
  pp128: number;
  pp512: number;
  tg128: number;
  loadSeconds: number;
  peakRssMiB: number;
  addedRssMiB: number;
  runs: number;
}

function summarise(runs: EngineRun[]): Row {
  const pick = (f: (r: EngineRun) => number) => median(runs.map(f));
  return {
    engine: runs[0].engine,
    threads: runs[0].threads,
    kernel: runs[0].kernel,
    pp128: pick((r) => r.prefill.pp128 ?? 0),
    pp512: pick((r) => r.prefill.pp512 ?? 0),
    tg128: pick((r) => r.decode),
    loadSeconds: pick((r) => r.loadSeconds),
    peakRssMiB: pick((r) => r.peakRss) / 2 ** 20,
    addedRssMiB: pick((r) => r.peakRss - r.baseRss) / 2 ** 20,
    runs: runs.length,
  };
}

const fmt = (x: number, d = 1) => (x ? x.toFixed(d) : "-");

function ratio(a: number, b: number): string {
  return a && b ? `${(a / b).toFixed(2)}x` : "-";
}

function renderTable(rows: Row[], bw: Record<number, number>, modelBytes: number): string {
  const lines = [
    "| engine | threads | pp128 tok/s | pp512 tok/s | tg128 tok/s | tg128 GB/s (% of read bw) | load s | peak RSS MiB |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const gbs = (r.tg128 * modelBytes) / 1e9;
    const pct = bw[r.threads] ? ` (${((100 * gbs) / bw[r.threads]).toFixed(0)}%)` : "";
    lines.push(
      `| ${r.engine} | ${r.threads} | ${fmt(r.pp128)} | ${fmt(r.pp512)} | ${fmt(r.tg128)} | ${
        r.tg128 ? gbs.toFixed(1) + pct : "-"
      } | ${fmt(r.loadSeconds, 2)} | ${fmt(r.peakRssMiB, 0)} |`,
    );
  }
  const byKey = (e: string, t: number) => rows.find((r) => r.engine === e && r.threads === t);
  const ratios = [
    "",
    "| threads | C / llama.cpp pp128 | C / llama.cpp pp512 | C / llama.cpp tg128 | C / TypeScript tg |",
    "|---|---|---|---|---|",
  ];
  for (const t of [...new Set(rows.map((r) => r.threads))]) {
    const c = byKey("c", t), l = byKey("llama.cpp", t), ts = byKey("ts", t) ?? byKey("ts", 1);
    if (!c) continue;
    ratios.push(
      `| ${t} | ${ratio(c.pp128, l?.pp128 ?? 0)} | ${ratio(c.pp512, l?.pp512 ?? 0)} | ${
        ratio(c.tg128, l?.tg128 ?? 0)
      } | ${ratio(c.tg128, ts?.tg128 ?? 0)} |`,
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

function renderSvg(rows: Row[]): string {
  const metrics: (keyof Row)[] = ["pp128", "pp512", "tg128"];
  const colors: Record<string, string> = { c: "#2b6cb0", "llama.cpp": "#dd6b20", ts: "#718096" };
  const groups = metrics.flatMap((m) =>
    [...new Set(rows.map((r) => r.threads))].map((t) => ({ m, t }))
  );
  const max = Math.max(...rows.flatMap((r) => metrics.map((m) => r[m] as number)), 1);
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
      const v = r ? (r[g.m] as number) : 0;
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
      }" text-anchor="middle">${String(g.m)} ${g.t}t</text>`,
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

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "3" },
      threads: { type: "string", default: "1,2" },
      "no-llama": { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task bench:compare [--runs 3] [--threads 1,2] [--no-llama] [--quick]",
    );
    return;
  }
  const runs = values.quick ? 1 : Number(values.runs);
  const threads = values.threads.split(",").map(Number);
  const pp = values.quick ? "128" : "128,512";
  await ensureModel();
  const modelBytes = (await Deno.stat(MODEL_BIN)).size;
  const python = values["no-llama"] ? null : await ensureLlama().catch((e) => {
    log(`llama.cpp peer unavailable: ${e.message}`);
    return null;
  });
  log("measuring memory read bandwidth");
  const bw = await bandwidth(threads);

  const rows: Row[] = [];
  for (const t of threads) {
    const measure = async (label: string, cmd: string, args: string[]) => {
      const samples: EngineRun[] = [];
      for (let i = 0; i < runs; i++) {
        log(`${label}, ${t} thread(s), run ${i + 1}/${runs}`);
        samples.push(JSON.parse(await run(cmd, args)));
      }
      rows.push(summarise(samples));
    };
    await measure("C engine", Deno.execPath(), [
      "run",
      "-A",
      "bench/engine_run.ts",
      MODEL_BIN,
      "--engine",
      "c",
      "--threads",
      String(t),
      "--pp",
      pp,
      "--tg",
      "128",
    ]);
    if (python) {
      await measure("llama.cpp", python, [
        "bench/llama_run.py",
        MODEL_GGUF,
        "--threads",
        String(t),
        "--pp",
        pp,
        "--tg",
        "128",
      ]);
    }
  }
  // The TypeScript engine is single-threaded: a few decode steps suffice for a rate.
  {
    const samples: EngineRun[] = [];
    for (let i = 0; i < Math.min(runs, 2); i++) {
      log(`TypeScript engine, decode, run ${i + 1}`);
      samples.push(JSON.parse(
        await run(Deno.execPath(), [
          "run",
          "-A",
          "bench/engine_run.ts",
          MODEL_BIN,
          "--engine",
          "ts",
          "--pp",
          "",
          "--tg",
          "4",
        ]),
      ));
    }
    rows.push(summarise(samples));
  }

  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(
    /model name\s*:\s*(.*)/,
  )?.[1] ?? Deno.build.arch;
  const table = renderTable(rows, bw, modelBytes);
  const stamp = new Date().toISOString().slice(0, 10);
  const md = [
    "# Benchmark results",
    "",
    `Measured ${stamp} by \`deno task bench:compare\` on ${cpu} (${navigator.hardwareConcurrency} ` +
    `CPUs), one run, medians of ${runs} fresh-process runs per row. Model: Qwen3-0.6B shapes with ` +
    `random weights (\`bench/make_model.ts\`), ${(modelBytes / 1e6).toFixed(1)} MB qwen3.c Q8 ` +
    `(group 64) for our engines and the same weights as GGUF Q8_0 for llama.cpp ` +
    `(llama-cpp-python ${LLAMA_CPP_PYTHON}, built with GGML_NATIVE). pp = prompt tokens ` +
    `processed per second, tg = tokens generated per second after a 1-token prompt. Peak RSS is the ` +
    `whole process (Deno or Python runtime included).`,
    "",
    table,
    "",
    "![chart](results.svg)",
    "",
  ].join("\n");
  await Deno.writeTextFile(join(ROOT, "bench/RESULTS.md"), md);
  await Deno.writeTextFile(join(ROOT, "bench/results.svg"), renderSvg(rows));
  await Deno.writeTextFile(
    join(ROOT, "bench/results.json"),
    JSON.stringify({ date: stamp, cpu, bandwidth: bw, modelBytes, rows }, null, 2) + "\n",
  );
  const readmePath = join(ROOT, "README.md");
  const readme = await Deno.readTextFile(readmePath).catch(() => "");
  const begin = "<!-- bench:begin -->", end = "<!-- bench:end -->";
  if (readme.includes(begin) && readme.includes(end)) {
    const next = readme.slice(0, readme.indexOf(begin) + begin.length) + "\n" + table + "\n" +
      readme.slice(readme.indexOf(end));
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
