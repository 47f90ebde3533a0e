/**
 * The demo model (models/demo, trained, 4.5 MB) widened to the weight bytes of Qwen3-0.6B
 * without changing what it computes: a model that really repeats text, at a real model's
 * cost per token. The demo's weights stay in cache, so a decode step there is arithmetic and
 * call overhead, and speculative decoding saves little of it; a real model's step is bound by
 * reading its weights, which a verify pass reads once for several tokens. Speculation's gain
 * on echo-heavy text needs both at once (bench/compare_speculate.ts).
 *
 * Two changes, both exact (the logits keep every bit, so the greedy tokens are the demo's):
 *
 * - **Wider feed-forward.** `hidden_dim` grows from 768 to `hiddenDim` (a multiple of the
 *   group size): the new gate and up rows are zero (int8 0, scale 0), so each new neuron's
 *   `silu(0) * 0` is exactly 0, its activation group quantises to scale 0 and zeros, and the
 *   down projection's new zero groups each add an exact +0 to a row's sum after the old
 *   groups (docs/numerics.md, the int8 dot product's order).
 * - **Pass-through blocks.** Blocks after the demo's four copy a demo block's weights with the
 *   attention output and down projections zero: each computes attention and a feed-forward
 *   as a real block does (and fills its KV cache), then adds exactly 0 to the residual.
 *
 * Defaults: 28 blocks and `hidden_dim` 27648, 639 MB at group 64 (the 0.6B-shaped bench
 * model is 633.5 MB). The folder gets the model.bin and the demo's side files
 * (`model.bin.tokenizer`, `model.bin.template*`, `tokenizer.json`), and with `--gguf` the same
 * widening of the demo's Hugging Face folder (models/demo/hf, bf16) exported to GGUF Q8_0 by
 * `qwen3 export` (model-q8_0.gguf), for llama.cpp: the widened folder is written beside it
 * and removed after the export.
 *
 *   deno run -A bench/make_wide_demo.ts OUT_DIR [--layers N] [--hidden-dim N] [--gguf]
 * @module
 */

import { parseArgs } from "node:util";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readCheckpoint } from "../src/formats/model_file.ts";
import {
  type Checkpoint,
  checkpointTensorOrder,
  encodeHeader,
  expectedFileSize,
  type LayerTensors,
  type TensorSlot,
} from "../src/formats/checkpoint.ts";
import type { Q8Tensor } from "../src/formats/weights.ts";
import type { ModelConfig } from "../src/types.ts";
import {
  encodeSafetensorsHeader,
  readSafetensorsHeader,
  type SafetensorsTensor,
  type SafetensorsTensorSpec,
} from "../src/formats/safetensors.ts";
import { exportHfModel } from "../src/export/export.ts";
import { writeAll } from "../src/export/output_files.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
/** The demo model this widens. */
export const DEMO_MODEL = join(ROOT, "models/demo/model.bin");
/** Where bench/compare_speculate.ts keeps the widened model (git-ignored). */
export const WIDE_DEMO_DIR = join(ROOT, "bench/models/demo-wide");

/** The default widening: Qwen3-0.6B's block count and about its bytes per token. */
export const WIDE_DEMO_SHAPE = { nLayers: 28, hiddenDim: 27648 } as const;

function bytesOf(a: Int8Array | Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * A layer matrix of the widened model: the demo's `t` copied into the top-left of a
 * `rows` x `cols` zero matrix (row by row, scales by group), or all zero.
 */
function widened(
  t: Q8Tensor,
  rows: number,
  cols: number,
  zero: boolean,
): [Int8Array, Float32Array] {
  const gs = t.groupSize;
  const q = new Int8Array(rows * cols);
  const s = new Float32Array((rows * cols) / gs);
  if (!zero) {
    for (let r = 0; r < t.rows; r++) {
      q.set(t.q.subarray(r * t.cols, (r + 1) * t.cols), r * cols);
      s.set(t.s.subarray((r * t.cols) / gs, ((r + 1) * t.cols) / gs), (r * cols) / gs);
    }
  }
  return [q, s];
}

/** Which demo block a widened block copies, and whether it only passes its input through. */
function source(l: number, demoLayers: number): { from: number; passThrough: boolean } {
  return { from: l % demoLayers, passThrough: l >= demoLayers };
}

/** The bytes of one slot of the widened model. */
function slotBytes(slot: TensorSlot, demo: Checkpoint): Uint8Array[] {
  const t = demo.tensors;
  if (slot.kind === "f32") {
    if (slot.name === "final_norm") return [bytesOf(t.finalNorm)];
    const layer: LayerTensors = t.layers[source(slot.layer, demo.config.nLayers).from];
    const norm = {
      attn_norm: layer.attnNorm,
      ffn_norm: layer.ffnNorm,
      q_norm: layer.qNorm,
      k_norm: layer.kNorm,
    }[slot.name];
    return [bytesOf(norm)];
  }
  if (slot.name === "embed" || slot.name === "classifier") {
    const m = slot.name === "embed" ? t.embed : t.classifier;
    return [bytesOf(m.q), bytesOf(m.s)];
  }
  const { from, passThrough } = source(slot.layer, demo.config.nLayers);
  const zero = passThrough && (slot.name === "wo" || slot.name === "w2");
  const [q, s] = widened(t.layers[from][slot.name], slot.rows, slot.cols, zero);
  return [bytesOf(q), bytesOf(s)];
}

/**
 * Writes the widened demo model to `outDir`.
 *
 * @param outDir The folder (created).
 * @param opts Blocks (at least the demo's) and feed-forward width (at least the demo's, a
 * multiple of its group size); progress callback.
 * @returns The model.bin's path.
 */
export async function writeWideDemo(
  outDir: string,
  opts: {
    nLayers?: number;
    hiddenDim?: number;
    demo?: string;
    onProgress?: (written: number, total: number) => void;
  } = {},
): Promise<string> {
  const demoPath = opts.demo ?? DEMO_MODEL;
  const demo = await readCheckpoint(demoPath);
  const d = demo.config;
  const nLayers = opts.nLayers ?? WIDE_DEMO_SHAPE.nLayers;
  const hiddenDim = opts.hiddenDim ?? WIDE_DEMO_SHAPE.hiddenDim;
  if (!Number.isInteger(nLayers) || nLayers < d.nLayers) {
    throw new Error(`--layers must be an integer >= the demo's ${d.nLayers}, got ${nLayers}`);
  }
  if (!Number.isInteger(hiddenDim) || hiddenDim < d.hiddenDim || hiddenDim % d.groupSize) {
    throw new Error(
      `--hidden-dim must be >= ${d.hiddenDim} and a multiple of ${d.groupSize}, got ${hiddenDim}`,
    );
  }
  if (d.hiddenDim % d.groupSize) {
    // the new zero groups must not share a group with the demo's neurons
    throw new Error(`the demo's hidden_dim ${d.hiddenDim} is not a multiple of its group size`);
  }
  const config: ModelConfig = { ...d, nLayers, hiddenDim };
  await Deno.mkdir(outDir, { recursive: true });
  const path = join(outDir, "model.bin");
  const total = expectedFileSize(config);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const header = encodeHeader(config, "qwen3.c");
    await writeAll(file, header);
    let written = header.length;
    for (const slot of checkpointTensorOrder(config)) {
      for (const part of slotBytes(slot, demo)) {
        await writeAll(file, part);
        written += part.length;
      }
      opts.onProgress?.(written, total);
    }
    if (written !== total) throw new Error(`${path}: wrote ${written} bytes, expected ${total}`);
  } finally {
    file.close();
  }
  const demoDir = dirname(demoPath);
  const side = basename(demoPath);
  for await (const e of Deno.readDir(demoDir)) {
    if (e.isFile && (e.name.startsWith(`${side}.`) || e.name === "tokenizer.json")) {
      const to = e.name.startsWith(`${side}.`) ? `model.bin${e.name.slice(side.length)}` : e.name;
      await Deno.copyFile(join(demoDir, e.name), join(outDir, to));
    }
  }
  return path;
}

/**
 * One tensor of the widened Hugging Face folder: its spec, and its bytes made on demand (the
 * header needs every spec before the first tensor's data).
 */
function widenedHfTensor(
  name: string,
  demo: Map<string, SafetensorsTensor>,
  raw: Uint8Array,
  demoLayers: number,
  hiddenDim: number,
): { spec: SafetensorsTensorSpec; bytes: () => Uint8Array } {
  const m = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
  const { from, passThrough } = m
    ? source(Number(m[1]), demoLayers)
    : { from: -1, passThrough: false };
  const t = demo.get(m ? `model.layers.${from}.${m[2]}` : name)!;
  const part = m?.[2] ?? "";
  const shape = !part.startsWith("mlp.")
    ? t.shape
    : part.startsWith("mlp.down_proj")
    ? [t.shape[0], hiddenDim]
    : [hiddenDim, t.shape[1]];
  const zero = passThrough &&
    (part.startsWith("self_attn.o_proj") || part.startsWith("mlp.down_proj"));
  const bytes = () => {
    const rows = t.shape.length === 2 ? t.shape[0] : 1;
    const rowBytes = t.bytes / rows;
    const outRowBytes = (rowBytes / t.shape[t.shape.length - 1]) * shape[shape.length - 1];
    const out = new Uint8Array((shape.length === 2 ? shape[0] : 1) * outRowBytes);
    if (!zero) {
      // row by row into the top-left corner (each tensor here is 1-D or [out, in])
      for (let r = 0; r < rows; r++) {
        const at = t.offset + r * rowBytes;
        out.set(raw.subarray(at, at + rowBytes), r * outRowBytes);
      }
    }
    return out;
  };
  return { spec: { name, dtype: t.dtype, shape }, bytes };
}

/**
 * Writes the widened demo as GGUF Q8_0 (for llama.cpp) to `outDir/model-q8_0.gguf`: the
 * demo's Hugging Face folder widened as {@linkcode writeWideDemo} widens its model.bin (in
 * `outDir/hf-widened`, removed afterwards), then exported by `qwen3 export`.
 *
 * @param outDir The folder (created).
 * @param opts Blocks and feed-forward width as for {@linkcode writeWideDemo}; the demo's
 * Hugging Face folder.
 * @returns The GGUF's path.
 */
export async function writeWideDemoGguf(
  outDir: string,
  opts: { nLayers?: number; hiddenDim?: number; hfDir?: string } = {},
): Promise<string> {
  const hfDir = opts.hfDir ?? join(dirname(DEMO_MODEL), "hf");
  const nLayers = opts.nLayers ?? WIDE_DEMO_SHAPE.nLayers;
  const hiddenDim = opts.hiddenDim ?? WIDE_DEMO_SHAPE.hiddenDim;
  const config = JSON.parse(await Deno.readTextFile(join(hfDir, "config.json")));
  const demoLayers: number = config.num_hidden_layers;
  if (nLayers < demoLayers || hiddenDim < config.intermediate_size) {
    throw new Error(`the widened shape must be at least the demo's`);
  }
  const st = join(hfDir, "model.safetensors");
  const header = await readSafetensorsHeader(st);
  const raw = await Deno.readFile(st);
  const names: string[] = [];
  for (const name of header.tensors.keys()) {
    const m = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
    if (!m) names.push(name);
    else if (m[1] === "0") {
      for (let l = 0; l < nLayers; l++) names.push(`model.layers.${l}.${m[2]}`);
    }
  }
  const wideHf = join(outDir, "hf-widened");
  await Deno.mkdir(wideHf, { recursive: true });
  try {
    const tensors = names.map((n) =>
      widenedHfTensor(n, header.tensors, raw, demoLayers, hiddenDim)
    );
    const file = await Deno.open(join(wideHf, "model.safetensors"), {
      write: true,
      create: true,
      truncate: true,
    });
    try {
      await writeAll(file, encodeSafetensorsHeader(tensors.map((t) => t.spec)).header);
      for (const t of tensors) await writeAll(file, t.bytes());
    } finally {
      file.close();
    }
    const wide = { ...config, num_hidden_layers: nLayers, intermediate_size: hiddenDim };
    if (Array.isArray(config.layer_types)) {
      wide.layer_types = Array(nLayers).fill(config.layer_types[0]);
    }
    await Deno.writeTextFile(join(wideHf, "config.json"), JSON.stringify(wide, null, 2));
    for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
      await Deno.copyFile(join(hfDir, f), join(wideHf, f));
    }
    const out = join(outDir, "model-q8_0.gguf");
    await exportHfModel(wideHf, out, { format: "gguf", type: "q8_0", force: true });
    return out;
  } finally {
    await Deno.remove(wideHf, { recursive: true });
  }
}

const USAGE =
  "usage: deno run -A bench/make_wide_demo.ts OUT_DIR [--layers N] [--hidden-dim N] [--gguf]";

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        layers: { type: "string", default: String(WIDE_DEMO_SHAPE.nLayers) },
        "hidden-dim": { type: "string", default: String(WIDE_DEMO_SHAPE.hiddenDim) },
        gguf: { type: "boolean", default: false },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    console.log(USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    console.error(USAGE);
    return 2;
  }
  const enc = new TextEncoder();
  const started = performance.now();
  let shown = "";
  try {
    const shape = {
      nLayers: Number(parsed.values.layers),
      hiddenDim: Number(parsed.values["hidden-dim"]),
    };
    const path = await writeWideDemo(parsed.positionals[0], {
      ...shape,
      onProgress: (written, total) => {
        const line = `\r${(written / 1e6).toFixed(0)} / ${(total / 1e6).toFixed(0)} MB`;
        if (line !== shown) Deno.stderr.writeSync(enc.encode(line));
        shown = line;
      },
    });
    const gguf = parsed.values.gguf ? await writeWideDemoGguf(parsed.positionals[0], shape) : "";
    const s = ((performance.now() - started) / 1000).toFixed(1);
    Deno.stderr.writeSync(enc.encode(`\nwrote ${path}${gguf ? ` and ${gguf}` : ""} in ${s} s\n`));
    return 0;
  } catch (e) {
    console.error(`make_wide_demo: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
