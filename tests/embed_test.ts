/**
 * `Qwen3.embed` against Hugging Face transformers: tools/hf_embedding_reference.py saved a
 * tiny random Qwen3Model (the bare body, no lm_head, as Qwen3-Embedding checkpoints are) and
 * recorded transformers' last-token-pooled, L2-normalised embeddings of a few inputs (queries
 * with the model card's instruction format, documents without). The folder is exported as
 * model.bin (int8, W8A8 path) and as an F32 GGUF (unquantised); both engines must produce the
 * same token ids, cosine >= 0.999 (int8) and >= 0.99999 (F32) to each reference vector, the
 * same bits as each other, and stay far from the other texts' vectors. Also: Matryoshka
 * truncation, batches, and the errors. Where llama-cpp-python is installed, llama.cpp (last
 * pooling) must embed the F32 and Q8_0 GGUF exports as transformers does too. Needs the C
 * library built (`deno task build`).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { exportHfModel } from "../src/export/export.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import type { Qwen3Error } from "../src/errors.ts";
import type { EngineKind } from "../src/types.ts";
import { findLlamaPython, llamaSkipLine } from "./helpers/llama_python.ts";
import { materializeHfFixture } from "./helpers/hf_fixture.ts";

/** Smallest cosine to transformers' embedding, per input: int8 path and unquantised. */
const Q8_MIN_COSINE = 0.999;
const F32_MIN_COSINE = 0.99999;

interface Reference {
  largest_cross_cosine: number;
  inputs: {
    name: string;
    instruction?: string;
    text: string;
    ids: number[];
    embedding: number[];
  }[];
}

const fixture = new URL("./fixtures/hf_tiny_embedding/", import.meta.url);
const ref: Reference = JSON.parse(await Deno.readTextFile(new URL("reference.json", fixture)));
const tmp = await Deno.makeTempDir({ prefix: "qwen3_embed_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));

/** The fixture folder with its weights unzipped and the real tokenizer.json. */
async function materialize(): Promise<string> {
  const dest = join(tmp, "hf");
  return await materializeHfFixture(fixture, dest);
}

const hf = await materialize();
const notes: string[] = [];
const bin = (await exportHfModel(hf, join(tmp, "model.bin"), { onNote: (n) => notes.push(n) }))
  .path;
const gguf = (await exportHfModel(hf, join(tmp, "model.gguf"), { format: "gguf", type: "f32" }))
  .path;

/** Each (file, engine) loaded once: the 11 MB tokenizer.json parse dominates a load. */
const models = new Map<string, Promise<Qwen3>>();
function loaded(path: string, engine: EngineKind = "c"): Promise<Qwen3> {
  const key = `${engine}:${path}`;
  let m = models.get(key);
  if (!m) models.set(key, m = Qwen3.load(path, { engine }));
  return m;
}
globalThis.addEventListener("unload", () => {
  for (const m of models.values()) m.then((x) => x[Symbol.dispose]());
});

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function unit(v: ArrayLike<number>, n = v.length): number[] {
  const x = Array.from(v).slice(0, n);
  const norm = Math.sqrt(dot(x, x));
  return x.map((e) => e / norm);
}

const FILES = [
  { file: "model.bin (int8)", path: () => bin, min: Q8_MIN_COSINE },
  { file: "F32 GGUF", path: () => gguf, min: F32_MIN_COSINE },
];
const ENGINES: EngineKind[] = ["c", "ts"];

Deno.test("a bare Qwen3Model folder exports, with the embedding as classifier", async () => {
  assert.ok(notes.some((n) => n.includes("Qwen3Model body without lm_head")), notes.join("\n"));
  const model = await loaded(bin, "ts");
  assert.equal(model.config.sharedClassifier, true);
  assert.equal(model.config.dim, ref.inputs[0].embedding.length);
  // the fixture can tell inputs apart: a wrong pooling could not pass by luck
  assert.ok(ref.largest_cross_cosine < 0.95, `cross cosine ${ref.largest_cross_cosine}`);
});

Deno.test("bare folders export the same whatever config.json says of the head", async () => {
  // The 8B's body is untied, and a config may name Qwen3ForCausalLM over bare tensor names:
  // with no lm_head the embedding is the classifier, and the embeddings do not change.
  const base = await loaded(bin);
  const want = await base.embed(ref.inputs.map((i) => i.text));
  for (const arch of ["Qwen3ForCausalLM"]) {
    const dir = join(tmp, `bare_${arch}`);
    await Deno.mkdir(dir);
    for await (const e of Deno.readDir(hf)) {
      if (e.name !== "config.json") await Deno.link(join(hf, e.name), join(dir, e.name));
    }
    const config = JSON.parse(await Deno.readTextFile(join(hf, "config.json")));
    config.architectures = [arch];
    config.tie_word_embeddings = false;
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
    const out = (await exportHfModel(dir, join(dir, "model.bin"))).path;
    using model = await Qwen3.load(out);
    assert.equal(model.config.sharedClassifier, true, arch);
    assert.deepEqual(await model.embed(ref.inputs.map((i) => i.text)), want, arch);
    model[Symbol.dispose]();
    await assert.rejects(model.embed("sea"), (e: Qwen3Error) => e.code === "disposed");
  }
});

for (const { file, path, min } of FILES) {
  const results = new Map<EngineKind, Float32Array[]>();
  for (const engine of ENGINES) {
    Deno.test(`[${engine}] ${file}: embeddings match transformers (cosine >= ${min})`, async () => {
      const model = await loaded(path(), engine);
      const got: Float32Array[] = [];
      for (const input of ref.inputs) {
        assert.deepEqual(
          model.embeddingTokens(input.text, input.instruction),
          input.ids,
          input.name,
        );
        const e = await model.embed(input.text, { instruction: input.instruction });
        assert.equal(e.length, model.config.dim);
        assert.ok(Math.abs(dot(e, e) - 1) < 1e-5, `${input.name}: |e|^2 = ${dot(e, e)}`);
        const cos = dot(e, input.embedding);
        assert.ok(cos >= min, `${input.name}: cosine ${cos} < ${min}`);
        for (const other of ref.inputs) {
          if (other === input) continue;
          const cross = dot(e, other.embedding);
          assert.ok(cross < 0.99, `${input.name} is as close to ${other.name} (${cross})`);
        }
        got.push(e);
      }
      results.set(engine, got);
      // a batch gives the same vectors, in order
      const batch = await model.embed(
        ref.inputs.map((i) => i.text),
        { instruction: undefined },
      );
      for (let i = 0; i < ref.inputs.length; i++) {
        if (ref.inputs[i].instruction) continue;
        assert.deepEqual(batch[i], got[i], `batch entry ${i}`);
      }
    });
  }
  // int8: the same bits (docs/numerics.md); unquantised, the C float kernels sum in 16
  // lanes, so the engines agree to rounding only.
  const exact = min === Q8_MIN_COSINE;
  Deno.test(`${file}: the C and TypeScript engines agree${exact ? " bit for bit" : ""}`, () => {
    const c = results.get("c"), ts = results.get("ts");
    if (!c || !ts) throw new Error("run the engine tests first (same file)");
    for (let i = 0; i < c.length; i++) {
      if (exact) assert.deepEqual(c[i], ts[i], ref.inputs[i].name);
      else assert.ok(dot(c[i], ts[i]) >= 1 - 1e-6, `${ref.inputs[i].name}: ${dot(c[i], ts[i])}`);
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] dimensions truncates and renormalises (Matryoshka)`, async () => {
    const model = await loaded(gguf, engine);
    const input = ref.inputs[3];
    for (const n of [1, 16, 48, model.config.dim]) {
      const e = await model.embed(input.text, { dimensions: n });
      assert.equal(e.length, n);
      const want = unit(input.embedding, n);
      assert.ok(dot(e, want) >= F32_MIN_COSINE, `dimensions ${n}: cosine ${dot(e, want)}`);
      // the same as truncating the full unit vector, to rounding (the engine truncates the
      // hidden state before it normalises)
      const full = unit(await model.embed(input.text), n);
      e.forEach((v, i) => assert.ok(Math.abs(v - full[i]) < 1e-6, `dimensions ${n} [${i}]`));
    }
  });

  Deno.test(`[${engine}] embed errors name the problem and run nothing`, async () => {
    const model = await loaded(bin, engine);
    for (const dimensions of [0, -1, 1.5, model.config.dim + 1]) {
      await assert.rejects(
        model.embed("sea", { dimensions }),
        (e: Qwen3Error) =>
          e.code === "invalid_argument" && e.message.includes(`got ${dimensions}`) &&
          e.message.includes(`${model.config.dim}`),
      );
    }
    using probe = model.engine.createSession();
    const n = probe.contextLength; // 512, the fixture's
    const long = "sea ".repeat(n);
    const count = model.embeddingTokens(long).length;
    assert.ok(count > n);
    await assert.rejects(
      model.embed(["sea", long]),
      (e: Qwen3Error) =>
        e.code === "context_full" && e.message.includes(`input 1 has ${count} tokens`) &&
        e.message.includes(`context length ${n}`),
    );
    assert.deepEqual(await model.embed([]), []);
    const ac = new AbortController();
    ac.abort(new Error("stop"));
    await assert.rejects(model.embed(["a", "b"], { signal: ac.signal }), /stop/);
    // the session still works for text after an embed
    using session = model.engine.createSession();
    await assert.rejects(session.embed([]), (e: Qwen3Error) => e.code === "invalid_argument");
    await session.embed([1, 2, 3]);
    const logits = await session.forward([4]);
    assert.equal(logits.length, model.config.vocabSize);
  });
}

const LLAMA_PYTHON = await findLlamaPython();
if (!LLAMA_PYTHON) console.log(llamaSkipLine("the llama.cpp embedding check"));

Deno.test({
  name: "llama.cpp (last pooling) embeds the GGUF exports as transformers (QWEN3_LLAMA_PYTHON)",
  ignore: LLAMA_PYTHON === null,
  async fn() {
    const q8 = (await exportHfModel(hf, join(tmp, "model_q8_0.gguf"), { format: "gguf" })).path;
    // llama.cpp's own tokenizer is bypassed: the ids are transformers' (checked above).
    const script = `
import json, sys, numpy as np
from llama_cpp import Llama, LLAMA_POOLING_TYPE_LAST
m = Llama(sys.argv[1], embedding=True, pooling_type=LLAMA_POOLING_TYPE_LAST, n_ctx=128,
          n_threads=1, verbose=False)
ids = {}
m.tokenize = lambda b, *a, **k: ids[b]
out = []
for i, seq in enumerate(json.loads(sys.argv[2])):
    ids[str(i).encode()] = seq
    out.append(np.array(m.embed(str(i), normalize=True), dtype=np.float32))
sys.stdout.buffer.write(np.concatenate(out).tobytes())
`;
    const ids = JSON.stringify(ref.inputs.map((i) => i.ids));
    const ours = await loaded(q8);
    for (const [path, min] of [[gguf, F32_MIN_COSINE], [q8, Q8_MIN_COSINE]] as const) {
      const r = await new Deno.Command(LLAMA_PYTHON!, { args: ["-c", script, path, ids] }).output();
      assert.ok(r.success, new TextDecoder().decode(r.stderr));
      const all = new Float32Array(r.stdout.slice().buffer);
      const dim = ref.inputs[0].embedding.length;
      let worst = 1;
      for (const [i, input] of ref.inputs.entries()) {
        const e = all.subarray(i * dim, (i + 1) * dim);
        const cos = dot(e, input.embedding);
        assert.ok(cos >= min, `llama.cpp ${path} ${input.name}: cosine ${cos} < ${min}`);
        worst = Math.min(worst, cos);
        if (path === q8) {
          const mine = await ours.embed(input.text, { instruction: input.instruction });
          assert.ok(dot(mine, e) >= Q8_MIN_COSINE, `${input.name}: ours vs llama.cpp Q8_0`);
        }
      }
      console.log(`  llama.cpp ${path.split("/").pop()}: smallest cosine to transformers ${worst}`);
    }
  },
});
