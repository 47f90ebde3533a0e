/**
 * The speculative-decoding section of bench/RESULTS.md, for `deno task bench:compare`:
 * decode tok/s with prompt-lookup speculation (docs/sampling.md#speculative-decoding) and
 * without, measured end to end in the same process, the two arms alternating round by round
 * (so a change of load hits both alike), medians over the rounds, greedy:
 *
 * One round before the measured ones warms up, and the arms' order flips each round. The
 * demo model runs at least 15 rounds (`--rounds` sets the 0.6B shape's): its runs take tens
 * of milliseconds, which the host's noise moves by more than the speculation does.
 *
 * - on the demo model (models/demo, a small trained Qwen3 whose text does repeat), every
 *   workload of bench/speculate_bench.ts (echo-heavy: a passage to repeat, a list, a code
 *   edit; and free text), with its text printed in the section;
 * - on the demo model widened to Qwen3-0.6B's bytes per token (bench/make_wide_demo.ts,
 *   written to bench/models/demo-wide/ when absent): the demo's tokens, bit for bit, at a
 *   real model's cost per step, where a step waits on its weights and a verify pass reads
 *   them once for several tokens (the demo's 4.5 MB stay in cache, so there a pass costs
 *   arithmetic and call overhead, and speculation saves less); every workload;
 * - on the Qwen3-0.6B shape (bench/models/q06/model.bin, or the random bench model), free
 *   text only: random weights never echo, so this is the cost of looking drafts up;
 * - with the llama.cpp peer, its own prompt lookup (llama-cpp-python's
 *   `LlamaPromptLookupDecoding`, bench/llama_speculate_run.py) on the demo model's GGUF
 *   (models/demo/model-q8_0.gguf, the same weights) and the widened demo's (written beside
 *   it by bench/make_wide_demo.ts), with the same workloads.
 *
 * Standalone (replaces the section in bench/RESULTS.md):
 *
 *   deno task build && deno run -A bench/compare_speculate.ts [--rounds 3] [--max-tokens 64]
 *       [--threads 1] [--no-llama]
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { Qwen3 } from "../src/api/qwen3.ts";
import { WORKLOADS } from "./speculate_bench.ts";
import {
  WIDE_DEMO_DIR,
  WIDE_DEMO_SHAPE,
  writeWideDemo,
  writeWideDemoGguf,
} from "./make_wide_demo.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DEMO = join(ROOT, "models/demo/model.bin");
const DEMO_GGUF = join(ROOT, "models/demo/model-q8_0.gguf");
/** Fewest rounds on the demo model (its runs are short: see compareSpeculate). */
const DEMO_ROUNDS = 15;
/**
 * Fewest rounds on the widened demo: a free-text workload there stops after 9 tokens, a
 * third of a second, and 3 rounds of it read 0.95x on / off where 15 read 0.99x.
 */
const WIDE_ROUNDS = 5;
/** The 0.6B-shaped models tried for the cost side, first present wins. */
const Q06 = [
  join(ROOT, "bench/models/q06/model.bin"),
  join(ROOT, "bench/models/qwen3-0.6b-random/model.bin"),
];
const HEADING = "## Speculative decoding (prompt lookup)";

/** One workload's measurement by one engine on one model. */
export interface SpeculateRow {
  /** "demo", "demo-wide" or "0.6B". */
  model: string;
  /** "c" or "llama.cpp". */
  engine: string;
  /** The workload's name (its text is in {@link WORKLOADS}). */
  workload: string;
  /** Tokens generated with speculation, all rounds. */
  tokens: number;
  /** Tokens drafted, all rounds. */
  drafted: number;
  /** Drafted tokens accepted, all rounds. */
  accepted: number;
  /** Median decode tok/s with speculation. */
  on: number;
  /** Median decode tok/s without. */
  off: number;
}

/** The median of `xs` (the mean of the middle two for an even count); NaN for none. */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** One round of one arm. */
export interface SpeculateSample {
  /** "on" (speculation) or "off". */
  arm: "on" | "off";
  /** Decode tok/s of the run. */
  tokPerSecond: number;
  /** Tokens generated. */
  tokens: number;
  /** Tokens drafted (0 off). */
  drafted: number;
  /** Drafts accepted (0 off). */
  accepted: number;
}

/**
 * The rounds of one workload merged: median tok/s per arm, and the speculating arm's totals.
 *
 * @param base The row's model, engine and workload.
 * @param samples Both arms' rounds.
 * @returns The row.
 */
export function mergeSpeculateSamples(
  base: Pick<SpeculateRow, "model" | "engine" | "workload">,
  samples: SpeculateSample[],
): SpeculateRow {
  const on = samples.filter((s) => s.arm === "on");
  const sum = (f: (s: SpeculateSample) => number) => on.reduce((a, s) => a + f(s), 0);
  return {
    ...base,
    tokens: sum((s) => s.tokens),
    drafted: sum((s) => s.drafted),
    accepted: sum((s) => s.accepted),
    on: median(on.map((s) => s.tokPerSecond)),
    off: median(samples.filter((s) => s.arm === "off").map((s) => s.tokPerSecond)),
  };
}

/**
 * Our C engine on one model: each round runs every workload without and then with
 * speculation (greedy, so both arms produce the same tokens).
 *
 * @param path The model.bin.
 * @param model The label of the model in the table.
 * @param workloads The workloads (name and prompt).
 * @param opts Rounds, the token cap and the thread count.
 * @returns One row per workload.
 */
export async function measureOurs(
  path: string,
  model: string,
  workloads: readonly { name: string; prompt: string }[],
  opts: { rounds: number; maxTokens: number; threads?: number },
): Promise<SpeculateRow[]> {
  using qwen = await Qwen3.load(path, { contextLength: 1024, threads: opts.threads });
  const samples = workloads.map(() => [] as SpeculateSample[]);
  // Round -1 warms up and is not recorded; the arms' order flips each round, so neither
  // always runs on the caches the other left.
  for (let r = -1; r < opts.rounds; r++) {
    for (const [i, w] of workloads.entries()) {
      for (const arm of r % 2 ? ["on", "off"] as const : ["off", "on"] as const) {
        const run = qwen.generate(w.prompt, {
          temperature: 0,
          maxTokens: opts.maxTokens,
          speculate: arm === "on",
        });
        await run.complete();
        const st = run.stats!;
        if (r >= 0) {
          samples[i].push({
            arm,
            tokPerSecond: st.decodeTokensPerSecond,
            tokens: st.generatedTokens,
            drafted: st.draftedTokens,
            accepted: st.acceptedTokens,
          });
        }
      }
    }
  }
  return workloads.map((w, i) =>
    mergeSpeculateSamples({ model, engine: "c", workload: w.name }, samples[i])
  );
}

/**
 * The llama.cpp peer's prompt lookup on a GGUF file (bench/llama_speculate_run.py).
 *
 * @returns One row per workload; throws with the exit code when the script fails.
 */
export async function measurePeer(
  python: string,
  gguf: string,
  model: string,
  workloads: readonly { name: string; prompt: string }[],
  opts: { rounds: number; maxTokens: number; threads?: number },
): Promise<SpeculateRow[]> {
  const child = new Deno.Command(python, {
    args: [
      new URL("./llama_speculate_run.py", import.meta.url).pathname,
      gguf,
      ...["--threads", String(opts.threads ?? 1), "--rounds", String(opts.rounds)],
      ...["--max-tokens", String(opts.maxTokens)],
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(
    new TextEncoder().encode(
      JSON.stringify(workloads.map(({ name, prompt }) => ({ name, prompt }))),
    ),
  );
  await writer.close();
  const out = await child.output();
  if (!out.success) throw new Error(`llama_speculate_run.py failed (exit ${out.code})`);
  const parsed = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    rows: (Omit<SpeculateRow, "model" | "engine" | "workload"> & { name: string })[];
  };
  return parsed.rows.map((r) => ({
    model,
    engine: "llama.cpp",
    workload: r.name,
    tokens: r.tokens,
    drafted: r.drafted,
    accepted: r.accepted,
    on: r.on,
    off: r.off,
  }));
}

/**
 * The section's markdown: the workloads' text, then one table row per measurement.
 *
 * @param opts The rows, how they were measured, the peer's note (why it is absent, or how
 * its acceptance is counted), the workloads whose text is printed and the host's load.
 * @returns Markdown starting with the section's heading.
 */
export function renderSpeculateSection(opts: {
  rows: SpeculateRow[];
  rounds: number;
  /** Rounds on the demo model when it ran more than `rounds`. */
  demoRounds?: number;
  /** Rounds on the widened demo when it ran more than `rounds`. */
  wideRounds?: number;
  maxTokens: number;
  threads: number;
  peerNote: string;
  workloads: readonly { name: string; prompt: string }[];
  load?: string;
  /** When it ran (YYYY-MM-DD). */
  date?: string;
}): string {
  const wideText = opts.wideRounds && opts.wideRounds !== opts.rounds
    ? `${opts.wideRounds} on the widened demo, `
    : "";
  const roundsText = opts.demoRounds && opts.demoRounds !== opts.rounds
    ? `${opts.demoRounds} rounds on the demo model (a run takes tens of milliseconds there), ` +
      `${wideText}${opts.rounds} on the ${wideText ? "0.6B shape" : "larger models"}`
    : `${opts.rounds} rounds`;
  const lines = [
    HEADING,
    "",
    "Decode tok/s with prompt-lookup speculation (docs/sampling.md#speculative-decoding) and " +
    "without, **measured**" + (opts.date ? ` on ${opts.date}` : "") +
    " end to end in one process, the two arms alternating (their order " +
    `flipping each round, after a warm-up round), medians of ${roundsText}, greedy, at most ${opts.maxTokens} tokens, ${opts.threads} ` +
    "thread(s) (`deno run -A bench/compare_speculate.ts`). The demo model (models/demo, " +
    "trained, 4.5 MB) is one that repeats text; it decodes a token in about a quarter of a " +
    "millisecond from cache, mostly arithmetic and call overhead, so a verify pass saves " +
    "little there and its rates move with the host's load" +
    (opts.load ? ` (1-minute load average ${opts.load} while it ran)` : "") +
    ". demo-wide is the same model widened to Qwen3-0.6B's bytes per token " +
    `(bench/make_wide_demo.ts: a feed-forward of ${WIDE_DEMO_SHAPE.hiddenDim} with zero new ` +
    `rows and ${WIDE_DEMO_SHAPE.nLayers} blocks, the demo's 4 and pass-through ones; every ` +
    "logit bit-identical to the demo's, so the same " +
    "tokens and drafts): a real model's cost per step, where a step waits on its weights " +
    "and a verify pass reads them once for several tokens. This is what echo-heavy work " +
    "gains on a real model. The Qwen3-0.6B shape (random weights: its text never follows " +
    "the prompt, though greedy decoding can fall into a loop that drafts then catch) shows " +
    "what looking drafts up costs on free text. Accepted = drafted tokens taken; on / off = " +
    "the ratio of the medians.",
    "",
    opts.peerNote,
    "",
    "| model | engine | workload | tokens | drafted | accepted | tok/s on | tok/s off | on / off |",
    "| ----- | ------ | -------- | -----: | ------: | -------: | -------: | --------: | -------: |",
  ];
  for (const r of opts.rows) {
    const rate = r.drafted ? ` (${((100 * r.accepted) / r.drafted).toFixed(0)}%)` : "";
    lines.push(
      `| ${r.model} | ${r.engine} | ${r.workload} | ${r.tokens} | ${r.drafted} | ` +
        `${r.accepted}${rate} | ${r.on.toFixed(1)} | ${r.off.toFixed(1)} | ` +
        `${(r.on / r.off).toFixed(2)}x |`,
    );
  }
  lines.push("", "The workloads' text (prompts, fed as plain text, no chat template):", "");
  for (const w of opts.workloads) {
    lines.push(
      `- ${w.name}:`,
      "",
      "  ```text",
      ...w.prompt.split("\n").map((l) => `  ${l}`.trimEnd()),
      "  ```",
      "",
    );
  }
  return lines.join("\n");
}

/**
 * Puts `section` into the markdown `md`: in place of an earlier section with the same
 * heading (up to the next `## ` heading), else at the end.
 *
 * @returns The new markdown.
 */
export function replaceSection(md: string, section: string): string {
  const at = md.indexOf(HEADING);
  if (at < 0) return md.trimEnd() + "\n\n" + section.trimEnd() + "\n";
  const next = md.indexOf("\n## ", at + HEADING.length);
  const rest = next < 0 ? "" : md.slice(next + 1);
  return md.slice(0, at) + section.trimEnd() + "\n" + (rest ? "\n" + rest : "");
}

/**
 * Measures speculative decoding (ours on the demo model and the 0.6B shape, and the
 * llama.cpp peer's on the demo model given its python) and writes the section into
 * `results` (bench/RESULTS.md).
 *
 * @param opts The results file, rounds, token cap, thread count, a logger, the peer's
 * python (optional) and the 0.6B-shaped model.bin (default: the first of bench/models/q06/
 * and bench/models/qwen3-0.6b-random/ present).
 * @returns The rows (also in the section).
 */
export async function compareSpeculate(opts: {
  results: string;
  rounds: number;
  maxTokens: number;
  threads: number;
  log: (msg: string) => void;
  python?: string;
  model06?: string;
}): Promise<SpeculateRow[]> {
  const m = { rounds: opts.rounds, maxTokens: opts.maxTokens, threads: opts.threads };
  // The demo model's runs take tens of milliseconds, so a few rounds leave its medians to
  // the host's noise (a workload that drafts nothing read 0.89x with 3); more cost seconds.
  const demo = { ...m, rounds: Math.max(m.rounds, DEMO_ROUNDS) };
  const wide = { ...m, rounds: Math.max(m.rounds, WIDE_ROUNDS) };
  const loadavg = () =>
    Deno.readTextFile("/proc/loadavg").then((t) => t.split(" ")[0], () => undefined);
  const loadBefore = await loadavg();
  // A failed measurement is named in the section, and the rest still runs (as in compare.ts).
  const failed: string[] = [];
  const ours = async (path: string, model: string, ws: typeof WORKLOADS) => {
    try {
      const o = model === "demo" ? demo : model === "demo-wide" ? wide : m;
      return await measureOurs(path, model, ws, o);
    } catch (e) {
      failed.push(`ours on the ${model} model: ${e instanceof Error ? e.message : e}`);
      opts.log(`speculative decoding on the ${model} model failed: ${failed.at(-1)}`);
      return [];
    }
  };
  opts.log(`speculative decoding: demo model, ${WORKLOADS.length} workloads`);
  const rows = await ours(DEMO, "demo", WORKLOADS);
  let peerNote: string;
  if (opts.python) {
    opts.log("speculative decoding: llama.cpp prompt lookup, demo model");
    try {
      rows.push(...await measurePeer(opts.python, DEMO_GGUF, "demo", WORKLOADS, demo));
      peerNote = "llama.cpp: its own prompt lookup (`LlamaPromptLookupDecoding`, 2-token " +
        "n-grams, 8 drafts, through `Llama(draft_model=...)`; bench/llama_speculate_run.py) on " +
        "the same weights as GGUF Q8_0 (the widened demo's: its Hugging Face folder widened " +
        "the same way and exported by `qwen3 export`; llama.cpp's tokens on it equal its own " +
        "on the demo). Its decode tok/s counts the tokens after the first " +
        "over the time from the first to the last; it reports no acceptance, so accepted = " +
        "tokens - 1 - verify passes, per run (a lower bound where the token cap cut a pass).";
    } catch (e) {
      peerNote = `llama.cpp: not measured (${e instanceof Error ? e.message : e}).`;
    }
  } else {
    peerNote = "llama.cpp: not measured (no llama-cpp-python peer; bench:compare builds it " +
      "into .tools/, or set QWEN3_LLAMA_PYTHON).";
  }
  // The widened demo (bench/make_wide_demo.ts), written once and kept; its GGUF only for
  // the peer.
  const widened = async (path: string, write: () => Promise<unknown>) => {
    if (await Deno.stat(path).then(() => true, () => false)) return true;
    opts.log(`writing ${relative(ROOT, path)} (bench/make_wide_demo.ts, 639 MB)`);
    try {
      await write();
      return true;
    } catch (e) {
      failed.push(`writing ${relative(ROOT, path)}: ${e instanceof Error ? e.message : e}`);
      return false;
    }
  };
  const wideBin = join(WIDE_DEMO_DIR, "model.bin");
  const wideGguf = join(WIDE_DEMO_DIR, "model-q8_0.gguf");
  opts.log(`speculative decoding: the demo widened to 0.6B's bytes, ${WORKLOADS.length} workloads`);
  if (await widened(wideBin, () => writeWideDemo(WIDE_DEMO_DIR))) {
    rows.push(...await ours(wideBin, "demo-wide", WORKLOADS));
  }
  if (opts.python && await widened(wideGguf, () => writeWideDemoGguf(WIDE_DEMO_DIR))) {
    opts.log("speculative decoding: llama.cpp prompt lookup, the widened demo");
    try {
      rows.push(...await measurePeer(opts.python, wideGguf, "demo-wide", WORKLOADS, wide));
    } catch (e) {
      failed.push(`llama.cpp on the widened demo: ${e instanceof Error ? e.message : e}`);
    }
  }
  let q06: string | undefined;
  const tried = opts.model06 ? [opts.model06] : Q06;
  for (const p of tried) {
    if (await Deno.stat(p).then(() => true, () => false)) {
      q06 = p;
      break;
    }
  }
  const free = WORKLOADS.filter((w) => !w.echo);
  if (q06) {
    opts.log(`speculative decoding: 0.6B shape (${q06}), free text`);
    rows.push(...await ours(q06, "0.6B", free));
  } else {
    peerNote += ` The 0.6B shape: not measured (no ${
      tried.map((p) => relative(ROOT, p)).join(" or ")
    }).`;
  }
  if (failed.length) peerNote += ` Not measured: ${failed.join("; ")}.`;
  const loadAfter = await loadavg();
  const load = loadBefore && loadAfter ? `${loadBefore} to ${loadAfter}` : undefined;
  const section = renderSpeculateSection({
    ...m,
    demoRounds: demo.rounds,
    wideRounds: wide.rounds,
    date: new Date().toISOString().slice(0, 10),
    rows,
    peerNote,
    workloads: WORKLOADS,
    load,
  });
  const md = await Deno.readTextFile(opts.results).catch(() => "# Benchmark results\n");
  await Deno.writeTextFile(opts.results, replaceSection(md, section));
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string", default: "3" },
      "max-tokens": { type: "string", default: "64" },
      threads: { type: "string", default: "1" },
      "no-llama": { type: "boolean", default: false },
    },
  });
  const venv = Deno.env.get("QWEN3_LLAMA_PYTHON") ??
    join(ROOT, ".tools/llama-cpp-python-0.3.36/bin/python");
  const python = values["no-llama"]
    ? undefined
    : await Deno.stat(venv).then(() => venv, () => undefined);
  const rows = await compareSpeculate({
    results: join(ROOT, "bench/RESULTS.md"),
    rounds: Number(values.rounds),
    maxTokens: Number(values["max-tokens"]),
    threads: Number(values.threads),
    log: (msg) => console.error(`[bench] ${msg}`),
    python,
  });
  console.log(JSON.stringify(rows));
}

if (import.meta.main) await main();
