/**
 * Fuzzes every C parser of outside data with libFuzzer under AddressSanitizer and
 * UndefinedBehaviorSanitizer, each harness of csrc/fuzz/ for a bounded time:
 *
 *   deno run -A tools/fuzz.ts [--seconds N] [--only a,b] [--build-only]
 *
 *   fuzz_model_header    model.bin bytes (header checks, then the forward pass)
 *   fuzz_tokenizer_bin   qwen3.c .tokenizer bytes
 *   fuzz_tokenizer_json  tokenizer.json text (the JSON reader and the loader)
 *   fuzz_tokenize        text for the real Qwen3 tokenizer (round trip checked)
 *   fuzz_template        chat template side files (and the chat loop that splits them)
 *   fuzz_gguf            GGUF bytes (metadata, tensor table, then the GGUF model loader)
 *
 * Each harness starts from its committed seeds (csrc/fuzz/corpus/<harness>/) plus what
 * earlier runs found (.tools/fuzz/corpus/<harness>/, kept between runs). A crash, leak,
 * sanitizer report, timeout or broken invariant fails the run and prints the reproducer's
 * path; copy it into csrc/fuzz/corpus/<harness>/crash-<what> so the C tests replay it
 * (csrc/tests/test_fuzz_replay.c) once fixed. Clang comes from Debian (tools/clang.ts).
 * The statistics of the last run are written to .tools/fuzz/last_run.json.
 * @module
 */

import { parseArgs } from "node:util";
import {
  ensureClang,
  inParallel,
  linkProgram,
  parallelism,
  ROOT,
  run,
  SANITIZE_FLAGS,
  sanitizedLibrary,
} from "./clang.ts";

/** The harnesses, with the largest input each is given. */
export const HARNESSES: Readonly<Record<string, number>> = {
  fuzz_model_header: 32768,
  fuzz_tokenizer_bin: 32768,
  fuzz_tokenizer_json: 65536,
  fuzz_tokenize: 8192,
  fuzz_template: 8192,
  fuzz_gguf: 65536,
};

/** What one harness run did, parsed from libFuzzer's final statistics. */
export interface FuzzStats {
  /** Harness name. */
  harness: string;
  /** Seconds it was given. */
  seconds: number;
  /** Inputs executed. */
  executions: number;
  /** Executions per second. */
  execPerSecond: number;
  /** Coverage counters (edges) hit, as libFuzzer's `cov:` reports them. */
  coverage: number;
  /** libFuzzer features (finer-grained coverage). */
  features: number;
  /** Inputs in the working corpus at the end. */
  corpus: number;
  /** New inputs added during this run. */
  newUnits: number;
  /** Peak memory, MB. */
  peakRssMb: number;
  /** true when nothing crashed. */
  ok: boolean;
  /** Reproducer files written by a failing run. */
  artifacts: string[];
  /** The first line of the sanitizer / invariant report, when it failed. */
  failure?: string;
}

const FUZZ_DIR = ".tools/fuzz";

/** Builds the fuzz harnesses into .tools/fuzz/bin/; returns their paths by name. */
export async function buildHarnesses(names: readonly string[]): Promise<Map<string, string>> {
  const clang = await ensureClang();
  const objects = await sanitizedLibrary(clang);
  const out = new Map<string, string>();
  for (const name of names) {
    const exe = `${ROOT}${FUZZ_DIR}/bin/${name}`; // linked one at a time: cheap
    await linkProgram(clang, [`csrc/fuzz/${name}.c`], objects, exe, [
      ...SANITIZE_FLAGS,
      "-fsanitize=fuzzer",
    ]);
    out.set(name, exe);
  }
  return out;
}

function parseStats(harness: string, seconds: number, log: string): FuzzStats {
  const stat = (key: string) => {
    const m = log.match(new RegExp(`stat::${key}:\\s*(\\d+)`));
    return m ? Number(m[1]) : 0;
  };
  // The last status line (#N ... cov: C ft: F corp: K/...) has the final coverage.
  let coverage = 0, features = 0, corpus = 0;
  for (const m of log.matchAll(/cov: (\d+) ft: (\d+) corp: (\d+)/g)) {
    coverage = Number(m[1]);
    features = Number(m[2]);
    corpus = Number(m[3]);
  }
  return {
    harness,
    seconds,
    executions: stat("number_of_executed_units"),
    execPerSecond: stat("average_exec_per_sec"),
    coverage,
    features,
    corpus,
    newUnits: stat("new_units_added"),
    peakRssMb: stat("peak_rss_mb"),
    ok: true,
    artifacts: [],
  };
}

/** Runs one harness for `seconds`; returns its statistics (ok false on any finding). */
export async function fuzzOne(exe: string, harness: string, seconds: number): Promise<FuzzStats> {
  const work = `${ROOT}${FUZZ_DIR}/corpus/${harness}`;
  const artifacts = `${ROOT}${FUZZ_DIR}/artifacts/`;
  await Deno.mkdir(work, { recursive: true });
  await Deno.mkdir(artifacts, { recursive: true });
  const before = new Set<string>();
  for await (const e of Deno.readDir(artifacts)) before.add(e.name);
  // CI fuzzes from a fixed seed, so a red run can be replayed and a green one does not
  // turn red by luck; by hand (and with QWEN3_FUZZ_SEED=0) each run explores afresh.
  const seed = Deno.env.get("QWEN3_FUZZ_SEED") ?? (Deno.env.get("CI") ? "1" : "0");
  const r = await run(exe, [
    `-seed=${seed}`,
    `-max_total_time=${seconds}`,
    `-max_len=${HARNESSES[harness]}`,
    "-timeout=20",
    "-rss_limit_mb=3072",
    "-malloc_limit_mb=2048",
    "-print_final_stats=1",
    `-artifact_prefix=${artifacts}${harness}-`,
    work,
    `${ROOT}csrc/fuzz/corpus/${harness}`,
  ], {
    env: {
      ASAN_OPTIONS: "detect_leaks=1:abort_on_error=0",
      UBSAN_OPTIONS: "print_stacktrace=1:halt_on_error=1",
    },
  });
  const stats = parseStats(harness, seconds, r.out);
  for await (const e of Deno.readDir(artifacts)) {
    if (!before.has(e.name) && e.name.startsWith(`${harness}-`)) {
      stats.artifacts.push(`${artifacts}${e.name}`);
    }
  }
  if (r.code !== 0 || stats.artifacts.length > 0) {
    stats.ok = false;
    const line = r.out.split("\n").find((l) =>
      /ERROR: AddressSanitizer|runtime error:|fuzz invariant broken|ERROR: libFuzzer|LeakSanitizer|deadly signal|timeout/
        .test(l)
    );
    stats.failure = line?.trim() ?? `exit code ${r.code}`;
    console.error(r.out.split("\n").slice(-60).join("\n"));
  }
  return stats;
}

function table(rows: FuzzStats[]): string {
  const head = [
    "harness",
    "seconds",
    "executions",
    "exec/s",
    "cov",
    "ft",
    "corpus",
    "new",
    "rss MB",
    "result",
  ];
  const body = rows.map((s) => [
    s.harness,
    String(s.seconds),
    String(s.executions),
    String(s.execPerSecond),
    String(s.coverage),
    String(s.features),
    String(s.corpus),
    String(s.newUnits),
    String(s.peakRssMb),
    s.ok ? "ok" : "FAILED",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  return [head, ...body].map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ")).join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seconds: { type: "string", default: "60" },
      only: { type: "string" },
      "build-only": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno run -A tools/fuzz.ts [--seconds N (default 60)] [--only a,b] [--build-only]",
    );
    console.log(`harnesses: ${Object.keys(HARNESSES).join(", ")}`);
    Deno.exit(0);
  }
  const seconds = Number(values.seconds);
  if (!Number.isInteger(seconds) || seconds < 1) {
    console.error(`--seconds must be a positive integer, got ${values.seconds}`);
    Deno.exit(2);
  }
  const names = values.only ? values.only.split(",") : Object.keys(HARNESSES);
  for (const n of names) {
    if (!(n in HARNESSES)) {
      console.error(`unknown harness ${n}; known: ${Object.keys(HARNESSES).join(", ")}`);
      Deno.exit(2);
    }
  }
  let exes: Map<string, string>;
  try {
    exes = await buildHarnesses(names);
  } catch (e) {
    console.error(`fuzz: ${(e as Error).message}`);
    Deno.exit(1);
  }
  if (values["build-only"]) {
    for (const [n, p] of exes) console.log(`${n}: ${p}`);
    Deno.exit(0);
  }
  // One harness per CPU at a time: libFuzzer runs single-threaded.
  const results = await inParallel(names, parallelism(), async (name) => {
    console.error(`fuzzing ${name} for ${seconds} s ...`);
    const s = await fuzzOne(exes.get(name)!, name, seconds);
    if (!s.ok) {
      console.error(`\n${name} FAILED: ${s.failure}`);
      for (const a of s.artifacts) {
        console.error(`  reproducer: ${a}\n  replay: ${exes.get(name)} ${a}`);
      }
    }
    return s;
  });
  await Deno.writeTextFile(
    `${ROOT}${FUZZ_DIR}/last_run.json`,
    JSON.stringify(results, null, 2) + "\n",
  );
  console.log(table(results));
  const failed = results.filter((s) => !s.ok);
  if (failed.length > 0) {
    console.error(
      `\n${failed.length} harness(es) failed: ${failed.map((s) => s.harness).join(", ")}`,
    );
    Deno.exit(1);
  }
}
