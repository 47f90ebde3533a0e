/**
 * Writes a Qwen3-0.6B-shaped checkpoint with random weights (about 630 MB) for benchmarks:
 * dim 1024, hidden 3072, 28 layers, 16 heads, 8 kv heads, head_dim 128, vocab 151936,
 * seq_len 40960, group 64, tied classifier, plus a copy of the real tokenizer.json.
 *
 *   deno run -A bench/make_model.ts OUT_DIR [--layout qwen3.c|qwen3-rs] [--seed N]
 *
 * Tensors are generated and written a block of rows at a time (tests/helpers/random_model.ts),
 * so memory stays far below the file size.
 * @module
 */

import { parseArgs } from "node:util";
import { type RandomModelOptions, writeRandomModel } from "../tests/helpers/random_model.ts";

/** Qwen3-0.6B's exact shapes (docs/numerics.md#model-shapes). */
export const QWEN3_0_6B_SHAPE: Readonly<
  Pick<
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
  >
> = {
  dim: 1024,
  hiddenDim: 3072,
  nLayers: 28,
  nHeads: 16,
  nKvHeads: 8,
  headDim: 128,
  vocabSize: 151936,
  seqLen: 40960,
  groupSize: 64,
  sharedClassifier: true,
};

const USAGE =
  "usage: deno run -A bench/make_model.ts OUT_DIR [--layout qwen3.c|qwen3-rs] [--seed N]";

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        layout: { type: "string", default: "qwen3.c" },
        seed: { type: "string", default: "1" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const layout = values.layout;
  const seed = Number(values.seed);
  if (
    positionals.length !== 1 || (layout !== "qwen3.c" && layout !== "qwen3-rs") ||
    !Number.isInteger(seed)
  ) {
    console.error(USAGE);
    return 2;
  }
  const dir = positionals[0];
  const enc = new TextEncoder();
  const started = performance.now();
  const path = await writeRandomModel(dir, {
    ...QWEN3_0_6B_SHAPE,
    layout,
    seed,
    onProgress: (written, total, tensor) => {
      const pct = ((100 * written) / total).toFixed(1).padStart(5);
      const mb = (written / 1e6).toFixed(0);
      Deno.stderr.writeSync(
        enc.encode(`\r${pct}%  ${mb} / ${(total / 1e6).toFixed(0)} MB  ${tensor.padEnd(16)}`),
      );
    },
  });
  const s = ((performance.now() - started) / 1000).toFixed(1);
  Deno.stderr.writeSync(enc.encode(`\nwrote ${path} (${layout}) and tokenizer.json in ${s} s\n`));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
