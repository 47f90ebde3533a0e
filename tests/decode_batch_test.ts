/**
 * Batched decode steps through the binding: one-token forward passes issued together by
 * several sessions of one C model run as one `qwen3_context_decode_batch` call, with the
 * logits each session gets alone, bit for bit; generation loops (runGeneration) and
 * sessions at different positions batch with no change to the caller. The C side of the
 * contract (every tier, thread count, split) is csrc/tests/test_batch.c; the MoE path is
 * checked in tests/moe_test.ts. Needs the library built (`deno task build`).
 */

import assert from "node:assert/strict";
import { CEngine, type CSession } from "../ffi/c_engine.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import { writeRandomModel } from "./helpers/random_model.ts";

const dir = await Deno.makeTempDir({ prefix: "qwen3_decode_batch_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const SHAPE = {
  dim: 64,
  hiddenDim: 128,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  seqLen: 96,
  groupSize: 16,
  seed: 21,
};
const modelPath = await writeRandomModel(`${dir}/model`, SHAPE);

/** Five sessions prefilled to different positions (1, 4, 7, 10, 13 tokens). */
async function sessions(engine: CEngine): Promise<CSession[]> {
  const out: CSession[] = [];
  for (let i = 0; i < 5; i++) {
    const s = engine.createSession();
    await s.forward(Array.from({ length: 1 + 3 * i }, (_, t) => (t * 7 + i * 13) % 200));
    out.push(s);
  }
  return out;
}

Deno.test("decode batch: concurrent one-token steps batch, with one-at-a-time's logits", async () => {
  using engine = await CEngine.load(modelPath, { threads: 2 });
  const alone = await sessions(engine);
  const together = await sessions(engine);
  try {
    for (let step = 0; step < 6; step++) {
      const tokens = alone.map((_, i) => (step * 31 + i * 17) % 250);
      const want: Float32Array[] = [];
      const before = engine.decodeBatchStats;
      for (let i = 0; i < alone.length; i++) {
        want.push((await alone[i].forward([tokens[i]])).slice()); // one at a time
      }
      const mid = engine.decodeBatchStats;
      assert.equal(mid.batches - before.batches, alone.length, "awaited steps run alone");
      const got = await Promise.all(together.map((s, i) => s.forward([tokens[i]])));
      const after = engine.decodeBatchStats;
      assert.equal(after.batches - mid.batches, 1, "steps issued together: one batch");
      assert.equal(after.steps - mid.steps, alone.length);
      for (let i = 0; i < alone.length; i++) {
        assert.deepEqual(got[i], want[i], `step ${step}, session ${i}: logits differ`);
        assert.equal(together[i].position, alone[i].position);
      }
    }
    assert.equal(engine.decodeBatchStats.largest, 5);
  } finally {
    for (const s of [...alone, ...together]) s[Symbol.dispose]();
  }
});

Deno.test("decode batch: concurrent greedy generations batch and match sequential ones", async () => {
  using model = await Qwen3.load(modelPath, { engine: "c", threads: 1 });
  const prompts = ["The sea", "Once upon a time", "A"];
  const opts = { temperature: 0, maxTokens: 12 } as const;
  const sequential: string[] = [];
  for (const p of prompts) sequential.push(await model.generate(p, opts).complete());
  const engine = model.engine as CEngine;
  const before = engine.decodeBatchStats;
  const concurrent = await Promise.all(prompts.map((p) => model.generate(p, opts).complete()));
  const after = engine.decodeBatchStats;
  assert.deepEqual(concurrent, sequential);
  const batches = after.batches - before.batches, steps = after.steps - before.steps;
  assert.ok(
    steps / batches > 1.5,
    `three generations at once should mostly batch: ${steps} steps in ${batches} batches`,
  );
});

Deno.test("decode batch: a refused step leaves the others; a failed batch fails each step", async () => {
  const path = await writeRandomModel(`${dir}/touched`, SHAPE); // its file is modified below
  using engine = await CEngine.load(path, { threads: 1 });
  using a = engine.createSession(4);
  using b = engine.createSession();
  await a.forward([1, 2, 3]);
  await b.forward([1, 2, 3]);
  // a fills up after one more token: its second step is refused before it is queued,
  // and b's steps still run (the first ones batched with a's)
  const before = engine.decodeBatchStats;
  await Promise.all([a.forward([4]), b.forward([4])]);
  assert.equal(engine.decodeBatchStats.steps - before.steps, 2);
  await assert.rejects(a.forward([5]), /context full/);
  await b.forward([5]);
  assert.equal(a.position, 4);
  assert.equal(b.position, 5);
  // a model file modified since it was loaded: the batch fails in C before anything
  // changes, and each step, run again alone, rejects with its own io error
  using c = engine.createSession();
  const stat = await Deno.stat(path);
  await Deno.utime(path, new Date(), new Date(stat.mtime!.getTime() + 5000));
  const results = await Promise.allSettled([b.forward([6]), c.forward([6])]);
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.match(String((r as PromiseRejectedResult).reason), /truncated or modified/);
  }
  assert.equal(b.position, 5);
  assert.equal(c.position, 0);
});
