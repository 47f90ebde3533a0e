/**
 * GGUF weights in ggml block layouts, run natively (needs the C library: `deno task build`):
 *
 * - src/formats/ggml_types.ts dequantises blocks that llama.cpp wrote exactly as gguf-py does
 *   (tests/fixtures/kquants/, made by tools/make_kquant_fixture.py);
 * - GGUFs whose matrices are Q4_K / Q5_K / Q6_K (Q4_K_M- and Q5_K_M-like mixes), the 32-value
 *   Q4_1 / Q5_0 / Q5_1, and a feed-forward width that is not a multiple of 256 (llama.cpp's
 *   fallback types on ffn_down): the C and TS engines give the same greedy tokens and logits
 *   within 1e-4 relative, and the C engine's prefill equals its token-by-token decoding bit
 *   for bit, as do its logits with every kernel tier this CPU supports and with 1 or 2
 *   threads.
 *
 * - the demo model (models/demo/hf) exported by this project as Q4_K_M (src/export/) runs
 *   alike in both engines.
 *
 * The test models hold random block bytes (random packed values and scales, fp16 scales
 * chosen to give weights of about 1/sqrt(width)), which exercise every field of the formats.
 */

import assert from "node:assert/strict";
import { CEngine, kernelName, selectKernel } from "../ffi/c_engine.ts";
import { Qwen3Error } from "../src/errors.ts";
import { GgmlType, toHalf } from "../src/formats/gguf.ts";
import {
  dequantizeBlocks,
  GGML_BLOCK_LAYOUTS,
  GgmlBlockType as B,
} from "../src/formats/ggml_types.ts";
import { readCheckpoint } from "../src/formats/model_file.ts";
import { exportHfModel } from "../src/export/export.ts";
import { argmax } from "../src/text/sampler.ts";
import { TsEngine } from "../src/reference/ts_engine.ts";
import type { Engine } from "../src/types.ts";
import { checkpointGgufParts, writeGguf } from "./helpers/gguf_model.ts";
import { writeRandomModel } from "./helpers/random_model.ts";

const FIXTURES = new URL("./fixtures/kquants/", import.meta.url);

Deno.test("ggml block types: llama.cpp's blocks dequantise exactly as gguf-py does", async () => {
  for (const [type, layout] of Object.entries(GGML_BLOCK_LAYOUTS)) {
    const blocks = await Deno.readFile(new URL(`${layout.name}.blocks`, FIXTURES));
    const want = new Float32Array(
      (await Deno.readFile(new URL(`${layout.name}.f32`, FIXTURES))).buffer,
    );
    const n = (blocks.length / layout.bytes) * layout.values;
    assert.ok(
      n > 0 && n === want.length,
      `${layout.name}: ${blocks.length} bytes, ${want.length} values`,
    );
    const got = dequantizeBlocks(Number(type), blocks, 0, n);
    for (let i = 0; i < n; i++) {
      if (!Object.is(got[i], want[i])) {
        assert.fail(`${layout.name} value ${i}: ${got[i]}, llama.cpp gives ${want[i]}`);
      }
    }
  }
});

const dir = await Deno.makeTempDir({ prefix: "qwen3_kquant_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** A small Qwen3-style tokenizer.json (726 tokens). */
const MINI_JSON_PATH = decodeURIComponent(
  new URL("../csrc/fuzz/corpus/fuzz_tokenizer_json/seed_mini_qwen3.json", import.meta.url)
    .pathname,
);

let seed = 0x9e3779b9;
function rnd(): number { // xorshift32, [0, 2^32)
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return seed >>> 0;
}

/**
 * Random blocks for a (rows, cols) matrix: random packed bytes, then the fp16 scales set so
 * weights are about `std` in size (about centred where the type has an offset).
 */
function randomBlocks(type: number, rows: number, cols: number, std: number): Uint8Array {
  const L = GGML_BLOCK_LAYOUTS[type];
  const n = (rows * cols) / L.values;
  const out = new Uint8Array(n * L.bytes);
  for (let i = 0; i < out.length; i++) out[i] = rnd() & 255;
  const put = (at: number, v: number) => {
    const h = toHalf(v);
    out[at] = h & 255;
    out[at + 1] = h >> 8;
  };
  const sign = () => (rnd() & 1 ? 1 : -1);
  for (let b = 0; b < n; b++) {
    const o = b * L.bytes;
    const jitter = 0.5 + (rnd() % 1000) / 1000;
    switch (type) {
      case B.Q4_1:
      case B.Q5_1: {
        const half = type === B.Q4_1 ? 7.5 : 15.5;
        const d = (std * jitter) / (half / 1.7);
        put(o + L.fields.d, d);
        put(o + L.fields.m, -d * half);
        break;
      }
      case B.Q5_0:
        put(o + L.fields.d, sign() * (std * jitter) / 9);
        break;
      case B.Q4_K:
      case B.Q5_K: {
        const qMean = type === B.Q4_K ? 7.5 : 15.5;
        const d = (std * jitter) / (32 * qMean / 1.7);
        put(o + L.fields.d, d);
        put(o + L.fields.dmin, d * qMean);
        break;
      }
      case B.Q6_K:
        put(o + L.fields.d, sign() * (std * jitter) / (64 * 18));
        break;
      default:
        throw new Error(`no random blocks for type ${type}`);
    }
  }
  return out;
}

/** Matrix types per tensor-name suffix: the rest of the name picks nothing else. */
type Mix = { embed: number; classifier?: number; layer: Record<string, number> };

/** llama.cpp's Q4_K_M: Q4_K, with Q6_K for attn_v, ffn_down and the classifier. */
const Q4_K_M: Mix = {
  embed: B.Q4_K,
  classifier: B.Q6_K,
  layer: {
    attn_q: B.Q4_K,
    attn_k: B.Q4_K,
    attn_v: B.Q6_K,
    attn_output: B.Q4_K,
    ffn_gate: B.Q4_K,
    ffn_up: B.Q4_K,
    ffn_down: B.Q6_K,
  },
};

const CASES: { name: string; dim: number; hidden: number; tied: boolean; mix: Mix }[] = [
  { name: "Q4_K_M-like", dim: 256, hidden: 512, tied: false, mix: Q4_K_M },
  {
    name: "Q5_K_M-like, tied",
    dim: 256,
    hidden: 512,
    tied: true,
    mix: {
      embed: B.Q5_K,
      layer: {
        attn_q: B.Q5_K,
        attn_k: B.Q5_K,
        attn_v: B.Q6_K,
        attn_output: B.Q5_K,
        ffn_gate: B.Q5_K,
        ffn_up: B.Q5_K,
        ffn_down: B.Q5_K,
      },
    },
  },
  {
    name: "feed-forward width 320: the Q5_0 fallback on ffn_down",
    dim: 256,
    hidden: 320,
    tied: false,
    mix: { ...Q4_K_M, layer: { ...Q4_K_M.layer, ffn_down: B.Q5_0 } },
  },
  {
    name: "32-value types Q4_1 / Q5_0 / Q5_1",
    dim: 96,
    hidden: 160,
    tied: false,
    mix: {
      embed: B.Q5_1,
      classifier: B.Q4_1,
      layer: {
        attn_q: B.Q4_1,
        attn_k: B.Q5_0,
        attn_v: B.Q5_1,
        attn_output: B.Q5_0,
        ffn_gate: B.Q4_1,
        ffn_up: B.Q5_1,
        ffn_down: B.Q5_1,
      },
    },
  },
];

/** max |a - b| over max |b|. */
function relativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

const PROMPT = [10, 200, 31, 400, 57, 600, 7];
const STEPS = 16;

async function lockstep(a: Engine, b: Engine) {
  using sa = a.createSession();
  using sb = b.createSession();
  let la = await sa.forward(PROMPT);
  let lb = await sb.forward(PROMPT);
  let worst = relativeError(la, lb);
  const tokens: number[] = [];
  for (let i = 0; i < STEPS; i++) {
    const next = argmax(la);
    assert.equal(argmax(lb), next, `step ${i}: the engines chose different tokens`);
    tokens.push(next);
    la = await sa.forward([next]);
    lb = await sb.forward([next]);
    worst = Math.max(worst, relativeError(la, lb));
  }
  return { tokens, worst };
}

/** Prefill logits plus a few greedy steps: everything a kernel touches. */
async function trace(engine: Engine): Promise<Float32Array[]> {
  using s = engine.createSession();
  const out = [(await s.forward(PROMPT)).slice()];
  for (let i = 0; i < 4; i++) out.push((await s.forward([argmax(out[i])])).slice());
  return out;
}

for (const [i, c] of CASES.entries()) {
  Deno.test(`GGUF ${c.name}: C and TS engines agree; prefill equals decoding`, async () => {
    const path = await writeRandomModel(`${dir}/m${i}`, {
      dim: c.dim,
      hiddenDim: c.hidden,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 2,
      headDim: c.dim / 4,
      vocabSize: 768,
      seqLen: 64,
      groupSize: 32,
      sharedClassifier: c.tied,
      withTokenizerJson: false,
      seed: 40 + i,
    });
    const parts = await checkpointGgufParts(await readCheckpoint(path), "f32", MINI_JSON_PATH);
    for (const t of parts.tensors) {
      if (t.spec.dims.length < 2) continue;
      const [cols, rows] = t.spec.dims;
      const suffix = t.spec.name.split(".")[2];
      const type = t.spec.name === "token_embd.weight"
        ? c.mix.embed
        : t.spec.name === "output.weight"
        ? c.mix.classifier!
        : c.mix.layer[suffix];
      assert.ok(type !== undefined, `no type for ${t.spec.name}`);
      // laid out as the F32 tensor (room to spare), listed with the block type
      t.spec = { ...t.spec, type: GgmlType.F32 };
      t.data = randomBlocks(type, rows, cols, cols ** -0.5);
      t.tableType = type;
    }
    const gguf = `${dir}/m${i}.gguf`;
    await writeGguf(gguf, parts.metadata, parts.tensors);
    using ce = await CEngine.load(gguf);
    using te = await TsEngine.load(gguf);
    assert.equal(ce.config.groupSize, 32);
    const { tokens, worst } = await lockstep(ce, te);
    assert.ok(worst <= 1e-4, `worst relative logit difference ${worst}`);
    assert.ok(new Set(tokens).size > 2, `greedy output barely varies: ${tokens}`);
    // prefill in one block vs token by token, C engine: bit for bit
    using whole = ce.createSession();
    using steps = ce.createSession();
    const a = await whole.forward(PROMPT);
    let b: Float32Array = new Float32Array(0);
    for (const t of PROMPT) b = await steps.forward([t]);
    assert.deepEqual(a, b, "prefill logits differ from token-by-token decoding");
    // every tier and thread count: the same bits as scalar on one thread
    const initial = await kernelName();
    const ran: string[] = [];
    try {
      await selectKernel("scalar");
      ce.setThreads(1);
      const reference = await trace(ce);
      ce.setThreads(2);
      assert.deepEqual(await trace(ce), reference, "2 threads differ from 1");
      for (const tier of ["avx2", "avxvnni", "avx512vnni", "amx", "neon", "neondot", "sve"]) {
        try {
          await selectKernel(tier);
        } catch (e) {
          if (e instanceof Qwen3Error && e.code === "unsupported") continue;
          throw e;
        }
        ran.push(tier);
        assert.deepEqual(await trace(ce), reference, `${tier}: logits differ from scalar`);
      }
    } finally {
      await selectKernel(initial);
    }
    console.log(
      `  ${c.name}: C vs TS worst relative logit difference ${worst.toExponential(2)}; ` +
        `tiers equal to scalar: ${ran.join(", ")}`,
    );
  });
}

Deno.test("the demo model exported as Q4_K_M: C and TS engines agree", async () => {
  const out = `${dir}/demo_q4_k_m.gguf`;
  const hf = decodeURIComponent(new URL("../models/demo/hf", import.meta.url).pathname);
  await exportHfModel(hf, out, { format: "gguf", type: "q4_k_m", threads: 2 });
  using ce = await CEngine.load(out);
  using te = await TsEngine.load(out);
  const { tokens, worst } = await lockstep(ce, te);
  assert.ok(worst <= 1e-4, `worst relative logit difference ${worst}`);
  assert.ok(new Set(tokens).size > 2, `greedy output barely varies: ${tokens}`);
  console.log(
    `  demo Q4_K_M export: C vs TS worst relative logit difference ${worst.toExponential(2)}`,
  );
});
