/**
 * bench/make_wide_demo.ts: the demo model widened (a wider feed-forward, pass-through blocks)
 * must compute the demo's logits bit for bit, since the speculation benchmark reads the
 * demo's acceptance off it; the same for the GGUF the llama.cpp peer reads. Small widenings
 * here (the benchmark's are 639 MB).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { CEngine, demoModelPath } from "../mod.ts";
import { writeWideDemo, writeWideDemoGguf } from "../bench/make_wide_demo.ts";
import { readCheckpoint } from "../src/formats/model_file.ts";

Deno.test("wide demo: a wider feed-forward and pass-through blocks keep every logit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const demo = await demoModelPath();
    const path = await writeWideDemo(dir, { nLayers: 7, hiddenDim: 1024, demo });
    const wide = await readCheckpoint(path);
    assert.equal(wide.config.nLayers, 7);
    assert.equal(wide.config.hiddenDim, 1024);
    // a pass-through block's output projections are all zero, a demo block's are not
    assert.ok(wide.tensors.layers[6].wo.q.every((v) => v === 0));
    assert.ok(wide.tensors.layers[6].w2.s.every((v) => v === 0));
    assert.ok(wide.tensors.layers[2].wo.q.some((v) => v !== 0));
    for (const side of ["model.bin.tokenizer", "model.bin.template", "tokenizer.json"]) {
      assert.ok((await Deno.stat(join(dir, side))).isFile, side);
    }
    const tokens = [];
    const rows: Float32Array[][] = [];
    for (const p of [demo, path]) {
      using engine = await CEngine.load(p, { contextLength: 64, threads: 1 });
      using session = engine.createSession();
      if (!tokens.length) tokens.push(...engine.tokenize("And the king said unto the people"));
      const out: Float32Array[] = [];
      out.push((await session.forward(tokens)).slice());
      // then token by token (the decode path and its kernels)
      for (const t of [17, 230, 1000]) out.push((await session.forward([t])).slice());
      rows.push(out);
    }
    for (let i = 0; i < rows[0].length; i++) {
      assert.deepEqual(rows[1][i], rows[0][i], `logits ${i} differ`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("wide demo: its GGUF, exported from the widened folder, keeps every logit", async () => {
  // Against the demo's own folder exported the same way (the widening of zero extra blocks
  // and width): models/demo/model-q8_0.gguf may round its fp16 scales otherwise.
  const same = await Deno.makeTempDir();
  const wide = await Deno.makeTempDir();
  try {
    const plain = await writeWideDemoGguf(same, { nLayers: 4, hiddenDim: 768 });
    const gguf = await writeWideDemoGguf(wide, { nLayers: 6, hiddenDim: 1024 });
    const rows: Float32Array[] = [];
    for (const p of [plain, gguf]) {
      using engine = await CEngine.load(p, { contextLength: 64, threads: 1 });
      assert.equal(engine.config.nLayers, p === gguf ? 6 : 4);
      using session = engine.createSession();
      rows.push((await session.forward(engine.tokenize("The sea is wide"))).slice());
    }
    assert.deepEqual(rows[1], rows[0]);
    // the widened folder is gone, the GGUF stays
    assert.deepEqual([...Deno.readDirSync(wide)].map((e) => e.name), ["model-q8_0.gguf"]);
  } finally {
    await Deno.remove(same, { recursive: true });
    await Deno.remove(wide, { recursive: true });
  }
});

Deno.test("wide demo: a narrower shape than the demo's is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const demo = await demoModelPath();
    await assert.rejects(writeWideDemo(dir, { nLayers: 2, demo }), /--layers must be/);
    await assert.rejects(writeWideDemo(dir, { hiddenDim: 800, demo }), /--hidden-dim must be/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
