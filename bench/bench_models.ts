/**
 * Models and prompts shared by the `deno bench` files (`deno task bench`): random-weight
 * checkpoints written once under bench/models/ (git-ignored) and reused, so a bench run
 * measures the engines, not the model writer.
 *
 * - "small": dim 256, hidden 768, 4 layers, 8 heads (4 kv) of 32, the real vocabulary
 *   (151936 rows): small enough for the TypeScript engine and the scalar kernels.
 * - the Qwen3-0.6B-shaped model of bench/compare.ts when it is there (bench/make_model.ts),
 *   else "medium": 0.6B's layer shapes with 4 layers instead of 28.
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeRandomModel } from "../tests/helpers/random_model.ts";
import type { RandomModelOptions } from "../tests/helpers/random_model.ts";
import { expectedFileSize } from "../src/formats/checkpoint.ts";

const MODELS = join(dirname(fileURLToPath(import.meta.url)), "models");

/** The shape fields of a bench model. */
export type BenchShape = Pick<
  RandomModelOptions,
  | "dim"
  | "hiddenDim"
  | "nLayers"
  | "nHeads"
  | "nKvHeads"
  | "headDim"
  | "vocabSize"
  | "seqLen"
  | "groupSize"
  | "sharedClassifier"
  | "seed"
>;

/** Shapes of the models this file writes (the real vocabulary, so real token ids fit). */
export const BENCH_SHAPES: Readonly<Record<"small" | "medium", BenchShape>> = {
  small: {
    dim: 256,
    hiddenDim: 768,
    nLayers: 4,
    nHeads: 8,
    nKvHeads: 4,
    headDim: 32,
    vocabSize: 151936,
    seqLen: 4096,
    groupSize: 64,
    sharedClassifier: true,
    seed: 11,
  },
  medium: {
    dim: 1024,
    hiddenDim: 3072,
    nLayers: 4,
    nHeads: 16,
    nKvHeads: 8,
    headDim: 128,
    vocabSize: 151936,
    seqLen: 4096,
    groupSize: 64,
    sharedClassifier: true,
    seed: 12,
  },
};

async function sizeOf(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch {
    return -1;
  }
}

/**
 * Path of the bench model `name`, writing it first if it is missing or has the wrong size
 * (written to a temporary folder and renamed, so an interrupted write is never reused).
 */
export async function benchModel(name: "small" | "medium"): Promise<string> {
  const shape = BENCH_SHAPES[name];
  const dir = join(MODELS, `bench-${name}`);
  const path = join(dir, "model.bin");
  if (await sizeOf(path) === expectedFileSize(shape)) return path;
  await Deno.mkdir(MODELS, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: MODELS, prefix: `.bench-${name}-` });
  await writeRandomModel(tmp, shape);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, dir);
  return path;
}

/** The Qwen3-0.6B-shaped model if bench/make_model.ts wrote it, else the "medium" one. */
export async function largeBenchModel(): Promise<{ path: string; name: string }> {
  const full = join(MODELS, "qwen3-0.6b-random", "model.bin");
  if (await sizeOf(full) > 0) return { path: full, name: "Qwen3-0.6B shape" };
  return { path: await benchModel("medium"), name: "0.6B layers x4" };
}

/** n deterministic token ids below the added tokens (a prompt's content does not change speed). */
export function benchTokens(n: number, seed = 1): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(s % 151000);
  }
  return out;
}
