/**
 * The C engine against the TypeScript reference engine on random-weight checkpoints: the
 * same greedy tokens for 64 steps and bit-identical logits (docs/numerics.md#c-and-typescript-engines:
 * every step is the same IEEE operation in both, RoPE's cos and sin included), over tied and untied
 * classifiers, group sizes 32 and 64, GQA ratios 1 and 2 and both header layouts; and
 * bit-identical logits from every kernel tier this CPU supports, and from 1 or 2 threads.
 * Needs the C library built (`deno task build`).
 */

import assert from "node:assert/strict";
import { CEngine, kernelName, selectKernel } from "../ffi/c_engine.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import { Qwen3Error } from "../src/errors.ts";
import { argmax } from "../src/text/sampler.ts";
import { Tokenizer } from "../src/text/tokenizer.ts";
import { TsEngine } from "../src/reference/ts_engine.ts";
import type { Engine, EngineSession } from "../src/types.ts";
import { type RandomModelOptions, writeRandomModel } from "./helpers/random_model.ts";

const dir = await Deno.makeTempDir({ prefix: "qwen3_engines_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const STEPS = 64;
/** The largest relative logit difference allowed: none, the engines agree bit for bit. */
const REL_TOL = 0;

/** Four shapes covering every pair of (classifier, group size, GQA ratio). */
const CASES: { name: string; opts: Partial<RandomModelOptions> }[] = [
  {
    name: "tied, group 32, GQA 2",
    opts: { sharedClassifier: true, groupSize: 32, nHeads: 4, nKvHeads: 2, seed: 1 },
  },
  {
    name: "untied, group 32, GQA 1",
    opts: { sharedClassifier: false, groupSize: 32, nHeads: 4, nKvHeads: 4, seed: 2 },
  },
  {
    name: "tied, group 64, GQA 1",
    opts: { sharedClassifier: true, groupSize: 64, nHeads: 2, nKvHeads: 2, seed: 3 },
  },
  {
    name: "untied, group 64, GQA 2, qwen3-rs header",
    opts: {
      sharedClassifier: false,
      groupSize: 64,
      nHeads: 4,
      nKvHeads: 2,
      layout: "qwen3-rs",
      seed: 4,
    },
  },
];

const SHAPE: Partial<RandomModelOptions> = {
  dim: 128,
  hiddenDim: 192,
  nLayers: 2,
  headDim: 32,
  seqLen: 128,
};

let tokenizer: Tokenizer | undefined;
async function prompt(path: string): Promise<number[]> {
  tokenizer ??= await Tokenizer.load(path);
  return tokenizer.encode("The capital of France is Paris. The capital of Japan is");
}

/** max |a - b| over max |b|: the error relative to the logits' scale. */
function relativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

async function greedyLockstep(c: EngineSession, t: EngineSession, tokens: number[], steps = STEPS) {
  let lc = await c.forward(tokens);
  let lt = await t.forward(tokens);
  const out: number[] = [];
  let worst = 0;
  for (let step = 0; step < steps; step++) {
    worst = Math.max(worst, relativeError(lc, lt));
    const next = argmax(lc);
    assert.equal(argmax(lt), next, `step ${step}: the engines chose different tokens`);
    out.push(next);
    lc = await c.forward([next]);
    lt = await t.forward([next]);
  }
  worst = Math.max(worst, relativeError(lc, lt));
  return { tokens: out, worst };
}

for (const { name, opts } of CASES) {
  Deno.test(`C vs TS engine, ${name}: same greedy tokens for ${STEPS} steps, bit-identical logits`, async () => {
    const path = await writeRandomModel(`${dir}/${opts.seed}`, { ...SHAPE, ...opts });
    const tokens = await prompt(path);
    using c = await CEngine.load(path);
    using t = await TsEngine.load(path);
    // The C engine holds eps as a float: compare it at that precision.
    assert.deepEqual(c.config, { ...t.config, rmsEps: Math.fround(t.config.rmsEps) });
    using cs = c.createSession();
    using ts = t.createSession();
    const { tokens: out, worst } = await greedyLockstep(cs, ts, tokens);
    assert.ok(worst <= REL_TOL, `worst relative logit error ${worst}`);
    assert.equal(cs.position, tokens.length + STEPS);
    assert.equal(ts.position, tokens.length + STEPS);
    // Output stuck on one or two tokens would exercise little of the model.
    assert.ok(new Set(out).size > 8, `greedy output barely varies: ${out}`);
  });
}

// The compact KV caches (docs/numerics.md#int8-kv-cache, #fp16-kv-cache): both engines
// round keys and values the same way, so they agree as closely as with the f32 cache; and
// neither is f32. One shape and 24 steps: the numerics are per row, and the default tests
// must stay short.
const Q8_STEPS = 24;
for (const kvType of ["q8", "f16"] as const) {
  const { name, opts } = CASES[0];
  Deno.test(`C vs TS engine, ${kvType} KV cache, ${name}: same greedy tokens, bit-identical logits`, async () => {
    const path = await writeRandomModel(`${dir}/${kvType}_${opts.seed}`, { ...SHAPE, ...opts });
    const tokens = await prompt(path);
    using c = await CEngine.load(path, { kvType });
    using t = await TsEngine.load(path, { kvType });
    using f = await CEngine.load(path, { kvType: "f32" });
    assert.equal(c.kvType, kvType);
    assert.equal(t.kvType, kvType);
    using cs = c.createSession();
    using ts = t.createSession();
    const { tokens: out, worst } = await greedyLockstep(cs, ts, tokens, Q8_STEPS);
    assert.ok(worst <= REL_TOL, `worst relative logit error ${worst}`);
    assert.ok(new Set(out).size > 4, `greedy output barely varies: ${out}`);
    using fs = f.createSession();
    using qs = c.createSession();
    const lq = await qs.forward(tokens);
    const lf = await fs.forward(tokens);
    const off = relativeError(lq, lf);
    assert.ok(
      off > 0 && off < 0.05,
      `${kvType} against f32 cache: relative logit difference ${off}`,
    );
  });
}

// Generation samples with the C sampler on the C engine (CSession.sampler) and with the
// TypeScript one on the TypeScript engine: with the engines' logits equal and the samplers
// sharing every operation, seeded sampling gives the same tokens on both.
Deno.test("Qwen3.generate, seeded sampling: the same tokens on both engines (C and TS samplers)", async () => {
  const demo = new URL("../models/demo/model.bin", import.meta.url).pathname;
  using c = await Qwen3.load(demo, { contextLength: 256 });
  using t = await Qwen3.load(demo, { contextLength: 256, engine: "ts" });
  const settings = [
    { temperature: 0.6, topP: 0.95, topK: 20 },
    { temperature: 1, topP: 0.9, presencePenalty: 0.5, frequencyPenalty: 0.3 },
  ];
  for (const opts of settings) {
    for (const seed of [1, 2, 3]) {
      const run = async (m: Qwen3) => {
        const g = m.generate("Once upon a time", { ...opts, seed, maxTokens: 24 });
        for await (const _ of g) { /* drain */ }
        return [...g.tokens];
      };
      assert.deepEqual(await run(c), await run(t), `${JSON.stringify(opts)} seed ${seed}`);
    }
  }
});

Deno.test("kvType other than f32, f16 or q8 is refused by both engines", async () => {
  const path = await writeRandomModel(`${dir}/kv_bad`, { ...SHAPE, ...CASES[0].opts });
  const bad = { kvType: "q4" } as unknown as { kvType: "q8" };
  await assert.rejects(
    CEngine.load(path, bad),
    (e) => e instanceof Qwen3Error && e.code === "invalid_argument",
  );
  await assert.rejects(
    TsEngine.load(path, bad),
    (e) => e instanceof Qwen3Error && e.code === "invalid_argument",
  );
});

/**
 * Fails at the first logit whose bits differ, naming it (assert.deepEqual's diff of two
 * large Float32Arrays that differ everywhere takes gigabytes).
 */
function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: lengths`);
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const n = a.findIndex((x, i) => x !== b[i]);
  if (n >= 0) assert.fail(`${what}: logit ${n} is ${got[n]}, want ${want[n]}`);
}

/** Prefill logits plus a few decode steps: everything a kernel touches. */
async function trace(engine: Engine, tokens: number[]): Promise<Float32Array[]> {
  using s = engine.createSession();
  const out = [(await s.forward(tokens)).slice()];
  for (let i = 0; i < 4; i++) out.push((await s.forward([argmax(out[i])])).slice());
  return out;
}

Deno.test("every kernel tier this CPU supports gives bit-identical logits", async () => {
  const path = await writeRandomModel(`${dir}/tiers`, { ...SHAPE, ...CASES[0].opts, seed: 9 });
  const tokens = await prompt(path);
  using engine = await CEngine.load(path);
  const initial = await kernelName();
  const tiers = ["scalar", "avx2", "avxvnni", "avx512vnni", "amx", "neon", "neondot", "sve"];
  const ran: string[] = [];
  try {
    await selectKernel("scalar");
    const reference = await trace(engine, tokens);
    for (const tier of tiers) {
      try {
        await selectKernel(tier);
      } catch (e) {
        if (e instanceof Qwen3Error && e.code === "unsupported") continue;
        throw e;
      }
      ran.push(tier);
      const got = await trace(engine, tokens);
      for (let i = 0; i < reference.length; i++) {
        assertSameBits(got[i], reference[i], `${tier}: logits of step ${i} differ from scalar`);
      }
    }
  } finally {
    await selectKernel(initial);
  }
  assert.ok(ran.includes("scalar"));
  assert.ok(ran.includes(initial), `the default tier ${initial} was not among ${tiers}`);
  console.log(`tiers compared: ${ran.join(", ")}`);
});

Deno.test("1 and 2 threads give bit-identical logits", async () => {
  const path = await writeRandomModel(`${dir}/threads`, { ...SHAPE, ...CASES[1].opts, seed: 10 });
  const tokens = await prompt(path);
  using engine = await CEngine.load(path, { threads: 1 });
  const one = await trace(engine, tokens);
  engine.setThreads(2);
  const two = await trace(engine, tokens);
  for (let i = 0; i < one.length; i++) assertSameBits(two[i], one[i], `step ${i}: 2 threads`);
});
