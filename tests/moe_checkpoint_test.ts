/**
 * Qwen3-MoE as a `model.bin` (version 2, docs/formats.md#qwen3-moe-checkpoint): the tiny
 * random Qwen3MoeForCausalLM of tools/hf_moe_reference.py (8 experts, top-2, block 1 dense)
 * exported to model.bin runs on both engines with the same logits, within the dense Q8
 * bound of transformers' at every prompt position, and continues a prompt greedily as the
 * same model exported to a Q8_0 GGUF does (the two quantise alike but for GGUF's fp16
 * scales, so their logits differ by a stated bound). The file's bytes sit at the documented
 * offsets, and both engines refuse a truncated or corrupted file with the same message.
 * Needs the C library built (`deno task build`).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { CEngine, kernelName, selectKernel } from "../ffi/c_engine.ts";
import { Qwen3Error } from "../src/errors.ts";
import { exportHfModel } from "../src/export/export.ts";
import { checkpointToGguf } from "../src/formats/gguf_convert.ts";
import { readCheckpoint } from "../src/formats/model_file.ts";
import {
  CHECKPOINT_MOE_VERSION,
  checkpointFileOrder,
  expectedFileSize,
  HEADER_BYTES,
  MOE_HEADER,
  slotBytes,
} from "../src/formats/checkpoint.ts";
import { SafetensorsModel } from "../src/formats/safetensors.ts";
import { TsEngine } from "../src/reference/ts_engine.ts";
import type { Engine, ModelConfig } from "../src/types.ts";
import { materializeHfFixture } from "./helpers/hf_fixture.ts";
import { writeRandomCheckpoint } from "./helpers/random_model.ts";

/** The dense fixtures' Q8 bound (tests/export_test.ts), in deviations of the logits. */
const Q8_TOLERANCE = 0.1;
/**
 * Largest |C - TS| logit on the same file: the engines share every rounding step but exp
 * (tests/moe_test.ts C_TS_TOLERANCE).
 */
const C_TS_TOLERANCE = 1e-4;
/**
 * Largest |model.bin - Q8_0 GGUF| logit over the whole vocabulary, in deviations of
 * transformers' logits at that position: both quantise every matrix in groups of 32, but
 * GGUF rounds the scale to fp16 before rounding the values against it, so some int8 values
 * differ by one as well (0.072 seen; each file alone stays within Q8_TOLERANCE of
 * transformers on its top tokens).
 */
const BIN_GGUF_TOLERANCE = 0.1;

const fixture = new URL("./fixtures/hf_tiny_moe_bf16/", import.meta.url);
const tmp = await Deno.makeTempDir({ prefix: "qwen3_moe_bin_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));

interface Reference {
  probe_ids: number[];
  prompts: {
    name: string;
    ids: number[];
    positions: { top_ids: number[]; top_logits: number[]; std: number }[];
  }[];
}
const reference: Reference = JSON.parse(
  await Deno.readTextFile(new URL("reference.json", fixture)),
);

const hf = materializeHfFixture(fixture, join(tmp, "hf"));
const notes: string[] = [];
const bin = (async () => {
  const out = join(tmp, "moe.bin");
  await exportHfModel(await hf, out, { onNote: (n) => notes.push(n) });
  return out;
})();
const gguf = (async () => {
  const out = join(tmp, "moe_q8_0.gguf");
  await exportHfModel(await hf, out, { format: "gguf", type: "q8_0" });
  return out;
})();

/** Every position's logits of the first `n` prompts, fed one token at a time. */
async function engineLogits(
  engine: Engine,
  n = reference.prompts.length,
): Promise<Float32Array[][]> {
  const out: Float32Array[][] = [];
  for (const p of reference.prompts.slice(0, n)) {
    using session = engine.createSession(64);
    const rows: Float32Array[] = [];
    for (const id of p.ids) rows.push((await session.forward([id])).slice());
    out.push(rows);
  }
  return out;
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** The greedy continuation of `ids` by `n` tokens. */
async function greedy(engine: Engine, ids: number[], n: number): Promise<number[]> {
  using session = engine.createSession(ids.length + n);
  let logits = await session.forward(ids);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(argmax(logits));
    logits = await session.forward([out[i]]);
  }
  return out;
}

Deno.test("moe model.bin: both engines agree, match transformers and the Q8_0 GGUF", async () => {
  const path = await bin;
  assert.ok(notes.some((n) => /group size 64 .* using 32/.test(n)), notes.join("\n"));
  using ts = await TsEngine.load(path);
  using c = await CEngine.load(path, { threads: 1 });
  const moe = {
    nExperts: 8,
    nExpertsUsed: 2,
    expertHiddenDim: 32,
    normTopkProb: true,
    sparse: [true, false],
  };
  assert.deepEqual(ts.config.moe, moe);
  assert.deepEqual(c.config.moe, moe);
  assert.equal(c.config.format, "qwen3.c");
  assert.equal(c.config.groupSize, 32);
  // the TypeScript engine on the first prompt only (its 151936-row classifier is the slow
  // part); the C engine, equal to it there, on every prompt
  const tsLogits = await engineLogits(ts, 1);
  const cLogits = await engineLogits(c);
  using g = await CEngine.load(await gguf, { threads: 1 });
  const gLogits = await engineLogits(g);
  let apart = 0, worst = 0, fromGguf = 0;
  reference.prompts.forEach((p, i) =>
    p.positions.forEach((pos, t) => {
      const where = `prompt ${p.name}, position ${t}`;
      const [cs, tss, gs] = [cLogits[i][t], tsLogits[i]?.[t], gLogits[i][t]];
      assert.equal(argmax(cs), pos.top_ids[0], `${where}: C argmax`);
      if (tss) assert.equal(argmax(tss), pos.top_ids[0], `${where}: TS argmax`);
      for (let j = 0; j < cs.length; j++) {
        if (tss) apart = Math.max(apart, Math.abs(cs[j] - tss[j]));
        fromGguf = Math.max(fromGguf, Math.abs(cs[j] - gs[j]) / pos.std);
      }
      pos.top_ids.forEach((id, k) => {
        worst = Math.max(worst, Math.abs(cs[id] - pos.top_logits[k]) / pos.std);
      });
    })
  );
  assert.ok(apart <= C_TS_TOLERANCE, `C and TS logits ${apart} apart`);
  assert.ok(worst <= Q8_TOLERANCE, `${worst} std from transformers`);
  assert.ok(fromGguf <= BIN_GGUF_TOLERANCE, `model.bin and GGUF ${fromGguf} std apart`);
  const prompt = reference.prompts[0].ids;
  const want = await greedy(g, prompt, 24);
  assert.deepEqual(await greedy(c, prompt, 24), want, "C: model.bin and GGUF continue alike");
  assert.deepEqual(await greedy(ts, prompt, 24), want, "TS: model.bin and GGUF continue alike");
  console.log(
    `moe model.bin: C - TS at most ${apart}, ${worst.toExponential(2)} std from transformers, ` +
      `${fromGguf.toExponential(2)} std from the Q8_0 GGUF`,
  );
});

Deno.test("moe model.bin: the header and the experts sit at the documented offsets", async () => {
  const path = await bin;
  const bytes = await Deno.readFile(path);
  const v = new DataView(bytes.buffer);
  assert.equal(v.getInt32(4, true), CHECKPOINT_MOE_VERSION);
  assert.deepEqual(
    [48, 52, 56, 60].map((o) => v.getInt32(o, true)),
    [8, 2, 32, 1],
  );
  assert.ok(bytes.subarray(MOE_HEADER.reserved, MOE_HEADER.sparseBitmap).every((b) => b === 0));
  assert.equal(bytes[MOE_HEADER.sparseBitmap], 0b01); // block 0 sparse, block 1 dense
  assert.ok(bytes.subarray(MOE_HEADER.sparseBitmap + 1, HEADER_BYTES).every((b) => b === 0));
  // docs/formats.md#qwen3-moe-checkpoint: the size formula, by hand for this shape
  const q8 = (r: number, c: number) => r * c + 4 * (r * c / 32);
  const dense = 256 + 4 * (2 * 2 * 64 + 64 + 2 * 2 * 32) +
    2 * (q8(128, 64) + 2 * q8(64, 64) + q8(64, 128)) + 1 * (2 * q8(96, 64) + q8(64, 96)) +
    q8(151936, 64);
  const experts = 4 * 8 * 64 + 8 * (2 * q8(32, 64) + q8(64, 32));
  assert.equal(bytes.length, dense + experts);
  using c = await CEngine.load(path, { threads: 1 });
  assert.equal(bytes.length, expectedFileSize({ ...c.config }));
  // the router of block 0 is the first tensor after the dense body, fp32 as transformers has it
  using st = await SafetensorsModel.open(await hf);
  const router = await st.readTensor("model.layers.0.mlp.gate.weight");
  assert.deepEqual(new Float32Array(bytes.slice(dense, dense + 4 * 8 * 64).buffer), router);
  // expert 7's down projection is the file's last tensor
  let off = HEADER_BYTES, last = 0;
  for (const slot of checkpointFileOrder(c.config)) {
    last = off;
    off += slotBytes(slot, 32);
  }
  assert.equal(off, bytes.length);
  assert.equal(last, bytes.length - q8(64, 32));
});

/** model.bin with `patch` applied to a copy of its bytes. */
async function patched(label: string, patch: (b: Uint8Array, v: DataView) => Uint8Array | void) {
  const bytes = await Deno.readFile(await bin);
  const out = patch(bytes, new DataView(bytes.buffer)) ?? bytes;
  const path = join(tmp, `${label}.bin`);
  await Deno.writeFile(path, out);
  for (const side of [".tokenizer", ".tokenizer.json"]) {
    await Deno.copyFile((await bin) + side, path + side);
  }
  return path;
}

Deno.test("moe model.bin: a truncated or corrupted file is refused by both engines", async () => {
  const size = (await Deno.stat(await bin)).size;
  const cases: [string, RegExp][] = [
    [
      await patched("truncated", (b) => b.subarray(0, size - 1)),
      /file size is \d+ bytes but the header implies \d+ \(qwen3\.c layout, version 2 \(Qwen3-MoE\).*the file is truncated/,
    ],
    [
      await patched("used9", (_, v) => v.setInt32(MOE_HEADER.nExpertsUsed, 9, true)),
      /header field n_experts_used = 9 is not in 1\.\.8/,
    ],
    [
      await patched("norm2", (_, v) => v.setInt32(MOE_HEADER.normTopkProb, 2, true)),
      /header field norm_topk_prob = 2 must be 0 or 1/,
    ],
    [
      await patched("width", (_, v) => v.setInt32(MOE_HEADER.expertHiddenDim, 40, true)),
      /group_size 32 does not divide expert_hidden_dim = 40/,
    ],
    [
      await patched("reserved", (b) => void (b[MOE_HEADER.reserved + 3] = 7)),
      /header byte 67 is 7, must be 0 \(reserved\)/,
    ],
    [
      await patched("bit5", (b) => void (b[MOE_HEADER.sparseBitmap] |= 1 << 5)),
      /sparse-block bit 5 is set but the model has 2 blocks/,
    ],
    [
      await patched("none", (b) => void (b[MOE_HEADER.sparseBitmap] = 0)),
      /no block is marked sparse/,
    ],
    [
      // block 1 marked sparse too: the experts section the header implies is not there
      await patched("both", (b) => void (b[MOE_HEADER.sparseBitmap] = 0b11)),
      /file size is \d+ bytes but the header implies \d+ .*the file is truncated/,
    ],
  ];
  for (const [path, pattern] of cases) {
    const messages: string[] = [];
    for (const load of [() => TsEngine.load(path), () => CEngine.load(path)]) {
      await assert.rejects(load(), (e: Error) => {
        assert.ok(e instanceof Qwen3Error && e.code === "format", `${path}: ${e}`);
        assert.match(e.message, pattern);
        assert.ok(e.message.startsWith(path), e.message);
        messages.push(e.message);
        return true;
      });
    }
    assert.equal(messages[0], messages[1], "the engines' messages differ");
  }
});

Deno.test("moe model.bin: the dense checkpoint-to-GGUF converter refuses it", async () => {
  const ckpt = await readCheckpoint(await bin);
  assert.equal(ckpt.tensors.layers[0].moe?.gate.length, 8);
  assert.equal(ckpt.tensors.layers[1].moe, undefined);
  const out = join(tmp, "converted.gguf");
  await assert.rejects(
    checkpointToGguf(ckpt, out, { tokenizerJson: join(await hf, "tokenizer.json") }),
    (e: Error) =>
      e instanceof Qwen3Error && e.code === "unsupported" && /Qwen3-MoE/.test(e.message),
  );
  await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
});

/** A qwen3.c `.tokenizer` of the 256 byte tokens, enough for the C loader. */
function byteTokenizer(): Uint8Array {
  const out = new Uint8Array(12 + 256 * 9);
  const v = new DataView(out.buffer);
  v.setUint32(0, 1, true);
  for (let i = 0; i < 256; i++) {
    v.setFloat32(12 + 9 * i, -1e6, true);
    v.setUint32(12 + 9 * i + 4, 1, true);
    out[12 + 9 * i + 8] = i;
  }
  return out;
}

Deno.test("moe model.bin, group 64: the same bits on both engines, tiers, threads, prefill", async () => {
  // GGUF quantises in groups of 32 only; a model.bin takes the group of real Qwen3 (64),
  // here with blocks 0 and 2 of 3 sparse and norm_topk_prob false
  const config: ModelConfig = {
    format: "qwen3.c",
    dim: 64,
    hiddenDim: 128,
    nLayers: 3,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 16,
    vocabSize: 300,
    seqLen: 64,
    groupSize: 64,
    sharedClassifier: false,
    ropeTheta: 1e6,
    rmsEps: 1e-6,
    moe: {
      nExperts: 6,
      nExpertsUsed: 3,
      expertHiddenDim: 64,
      normTopkProb: false,
      sparse: [true, false, true],
    },
  };
  const path = join(tmp, "random_gs64.bin");
  await writeRandomCheckpoint(path, config, "qwen3.c", 21);
  await Deno.writeFile(`${path}.tokenizer`, byteTokenizer());
  const ids = [5, 77, 200, 13, 9, 150, 42, 250, 7, 99];
  using ts = await TsEngine.load(path);
  assert.deepEqual(ts.config.moe, config.moe);
  using tsSession = ts.createSession(16);
  const want: Float32Array[] = [];
  for (const id of ids) want.push((await tsSession.forward([id])).slice());
  const initial = await kernelName();
  const ran: string[] = [];
  let apart = 0;
  let first: Float32Array[] | undefined;
  try {
    for (const tier of ["scalar", initial]) {
      await selectKernel(tier);
      ran.push(tier);
      for (const threads of [1, 2]) {
        using c = await CEngine.load(path, { threads });
        using steps = c.createSession(16);
        const rows: Float32Array[] = [];
        for (const id of ids) rows.push((await steps.forward([id])).slice());
        using whole = c.createSession(16);
        assert.deepEqual(await whole.forward(ids), rows[ids.length - 1], `${tier}/${threads}`);
        rows.forEach((row, t) => {
          assert.equal(argmax(row), argmax(want[t]), `${tier}/${threads}, position ${t}`);
          for (let j = 0; j < row.length; j++) {
            apart = Math.max(apart, Math.abs(row[j] - want[t][j]));
          }
        });
        assert.ok(apart <= C_TS_TOLERANCE, `C and TS logits ${apart} apart`);
        first ??= rows;
        assert.deepEqual(rows, first, `${tier}/${threads}: differs from the first run`);
      }
    }
  } finally {
    await selectKernel(initial);
  }
  console.log(`moe model.bin, group 64: tiers ${ran.join(", ")}; C - TS at most ${apart}`);
});
