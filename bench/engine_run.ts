/**
 * Measures one of our engines on one model in this process and prints one JSON line:
 * load time, prefill tok/s for each prompt length, decode tok/s, and peak RSS. The
 * comparison (bench/compare.ts) runs it in a fresh process per measurement so memory and
 * caches do not leak between engines.
 *
 *   deno run -A bench/engine_run.ts MODEL --engine c|ts --threads N [--pp 128,512] [--tg 128]
 * @module
 */

import { parseArgs } from "node:util";
import { CEngine } from "../ffi/c_engine.ts";
import { TsEngine } from "../src/reference/ts_engine.ts";
import type { Engine } from "../src/types.ts";

/** One measurement, as printed. */
export interface EngineRun {
  /** "c" or "ts". */
  engine: string;
  /** Threads used. */
  threads: number;
  /** Kernel tier (C engine) or "ts". */
  kernel: string;
  /** Seconds from load call to a usable engine. */
  loadSeconds: number;
  /** Prefill tok/s by prompt length. */
  prefill: Record<string, number>;
  /** Decode tok/s over `decodeTokens` steps (0 when not measured). */
  decode: number;
  /** Decode steps measured. */
  decodeTokens: number;
  /** Peak resident memory of the process, bytes (VmHWM). */
  peakRss: number;
  /** Resident memory before the model was loaded, bytes. */
  baseRss: number;
}

/** Reads a field of /proc/self/status in bytes (0 where /proc is missing). */
export function procStatusBytes(field: "VmHWM" | "VmRSS"): number {
  try {
    const text = Deno.readTextFileSync("/proc/self/status");
    const m = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Deterministic pseudo-random token ids below the added tokens (the prompts' content does not matter for speed). */
function promptTokens(n: number, seed: number): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(s % 151000);
  }
  return out;
}

function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      engine: { type: "string", default: "c" },
      threads: { type: "string", default: "1" },
      pp: { type: "string", default: "128,512" },
      tg: { type: "string", default: "128" },
      kernel: { type: "string" },
    },
  });
  const path = positionals[0];
  if (!path) throw new Error("usage: engine_run.ts MODEL --engine c|ts --threads N");
  const threads = Number(values.threads);
  const pps = values.pp ? values.pp.split(",").filter(Boolean).map(Number) : [];
  const tg = Number(values.tg);
  const contextLength = Math.max(...pps, 0) + tg + 8;

  const baseRss = procStatusBytes("VmRSS");
  const t0 = performance.now();
  let engine: Engine;
  let kernel = "ts";
  if (values.engine === "c") {
    const { selectKernel, kernelName } = await import("../ffi/c_engine.ts");
    if (values.kernel) await selectKernel(values.kernel);
    engine = await CEngine.load(path, { contextLength, threads });
    kernel = await kernelName();
  } else {
    engine = await TsEngine.load(path, { contextLength });
  }
  const loadSeconds = (performance.now() - t0) / 1000;

  const prefill: Record<string, number> = {};
  if (pps.length) {
    // One untimed short prefill first: it touches every weight page of the fresh process,
    // which the first timed length would otherwise pay for alone.
    using warm = engine.createSession(contextLength);
    await warm.forward(promptTokens(8, 1));
  }
  for (const n of pps) {
    using session = engine.createSession(contextLength);
    const tokens = promptTokens(n, n);
    const start = performance.now();
    await session.forward(tokens);
    prefill[`pp${n}`] = n / ((performance.now() - start) / 1000);
  }

  let decode = 0;
  if (tg > 0) {
    using session = engine.createSession(contextLength);
    let token = 9707;
    // The first step also warms caches; time the following tg steps, as llama-bench does.
    token = argmax(await session.forward([token]));
    const start = performance.now();
    for (let i = 0; i < tg; i++) token = argmax(await session.forward([token]));
    decode = tg / ((performance.now() - start) / 1000);
  }
  const run: EngineRun = {
    engine: engine.kind,
    threads: engine.threads,
    kernel,
    loadSeconds,
    prefill,
    decode,
    decodeTokens: tg,
    peakRss: procStatusBytes("VmHWM"),
    baseRss,
  };
  engine[Symbol.dispose]();
  console.log(JSON.stringify(run));
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
