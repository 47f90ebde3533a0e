import assert from "node:assert/strict";
import { Qwen3Error } from "../src/errors.ts";
import {
  checkpointTensors,
  encodeHeader,
  expectedFileSize,
  HEADER_BYTES,
  parseHeader,
} from "../src/formats/checkpoint.ts";
import { readCheckpoint } from "../src/formats/model_file.ts";
import type { ModelConfig } from "../src/types.ts";
import { writeRandomCheckpoint, writeRandomModel } from "./helpers/random_model.ts";

const SMALL = {
  dim: 32,
  hiddenDim: 96,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  vocabSize: 300,
  seqLen: 64,
  groupSize: 16,
  withTokenizerJson: false,
};

const CONFIG: ModelConfig = {
  format: "qwen3.c",
  dim: 64,
  hiddenDim: 192,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 32,
  vocabSize: 1000,
  seqLen: 256,
  groupSize: 32,
  sharedClassifier: true,
  ropeTheta: 1e6,
  rmsEps: 1e-6,
};

/** Asserts `fn` throws a Qwen3Error of `code` whose message matches every pattern. */
function assertQwen3Error(fn: () => unknown, code: string, ...patterns: RegExp[]): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof Qwen3Error, `not a Qwen3Error: ${e}`);
    assert.equal(e.code, code, e.message);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

Deno.test("both layouts parse, with every tensor a view at its documented offset", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const c = await readCheckpoint(await writeRandomModel(`${dir}/c`, { ...SMALL, seed: 4 }));
    const rs = await readCheckpoint(
      await writeRandomModel(`${dir}/rs`, { ...SMALL, seed: 4, layout: "qwen3-rs" }),
    );
    assert.equal(c.config.format, "qwen3.c");
    assert.equal(rs.config.format, "qwen3-rs");
    assert.equal(new DataView(rs.bytes.buffer).getUint32(8, true), 1); // architecture_id
    for (const ck of [c, rs]) {
      const { config, tensors, bytes } = ck;
      assert.equal(config.dim, 32);
      assert.equal(config.hiddenDim, 96);
      assert.equal(config.headDim, 16);
      assert.equal(config.vocabSize, 300);
      assert.equal(config.seqLen, 64);
      assert.equal(config.groupSize, 16);
      assert.equal(config.ropeTheta, 1e6);
      assert.equal(config.rmsEps, 1e-6);
      assert.equal(config.sharedClassifier, true);
      assert.equal(tensors.classifier, tensors.embed);
      assert.equal(bytes.length, expectedFileSize(config));
      // Offsets by hand: norms 4 * (2 L dim + dim + 2 L head_dim), then Q8 = n + 4 n / 16.
      const q8 = (rows: number, cols: number) => rows * cols * (1 + 4 / 16);
      const norms = 4 * (2 * 2 * 32 + 32 + 2 * 2 * 16);
      assert.equal(tensors.layers[0].attnNorm.byteOffset, 256);
      assert.equal(tensors.layers[1].ffnNorm.byteOffset, 256 + 4 * (3 * 32));
      assert.equal(tensors.finalNorm.byteOffset, 256 + 4 * (4 * 32));
      assert.equal(tensors.layers[1].kNorm.byteOffset, 256 + 4 * (5 * 32 + 3 * 16));
      assert.equal(tensors.embed.q.byteOffset, 256 + norms);
      assert.equal(tensors.embed.s.byteOffset, 256 + norms + 300 * 32);
      const wk1 = 256 + norms + q8(300, 32) + 2 * q8(64, 32) + q8(32, 32);
      assert.equal(tensors.layers[1].wk.q.byteOffset, wk1);
      const w3last = bytes.length - q8(96, 32);
      assert.equal(tensors.layers[1].w3.q.byteOffset, w3last);
      assert.equal(
        tensors.layers[1].w3.s.byteOffset + tensors.layers[1].w3.s.byteLength,
        bytes.length,
      );
      // Views, not copies.
      for (const l of tensors.layers) {
        for (const t of [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3]) {
          assert.equal(t.q.buffer, bytes.buffer);
          assert.equal(t.s.buffer, bytes.buffer);
          assert.equal(t.q.length, t.rows * t.cols);
          assert.equal(t.s.length, (t.rows * t.cols) / 16);
        }
        assert.equal(l.qNorm.buffer, bytes.buffer);
      }
      assert.deepEqual([tensors.layers[0].wo.rows, tensors.layers[0].wo.cols], [32, 64]);
      assert.deepEqual([tensors.layers[0].w2.rows, tensors.layers[0].w2.cols], [32, 96]);
    }
    // Same seed, same body: the two layouts differ only in the header.
    assert.deepEqual(c.bytes.subarray(HEADER_BYTES), rs.bytes.subarray(HEADER_BYTES));
    assert.deepEqual(c.tensors.layers[1].w2.s, rs.tensors.layers[1].w2.s);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an untied classifier is the last tensor, after the embedding", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ck = await readCheckpoint(
      await writeRandomModel(dir, { ...SMALL, sharedClassifier: false }),
    );
    const { embed, classifier } = ck.tensors;
    assert.equal(ck.config.sharedClassifier, false);
    assert.notEqual(classifier, embed);
    assert.equal(classifier.s.byteOffset + classifier.s.byteLength, ck.bytes.length);
    assert.equal(classifier.q.byteOffset, ck.bytes.length - 300 * 32 * 1.25);
    assert.notDeepEqual(classifier.q, embed.q);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("unaligned input bytes give copied scales with the same values", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ck = await readCheckpoint(await writeRandomModel(dir, { ...SMALL, seed: 9 }));
    const shifted = new Uint8Array(ck.bytes.length + 1);
    shifted.set(ck.bytes, 1);
    const unaligned = shifted.subarray(1);
    const t = checkpointTensors(unaligned, parseHeader(unaligned, unaligned.length, "x"));
    assert.notEqual(t.embed.s.buffer, shifted.buffer);
    assert.deepEqual(t.embed.s, ck.tensors.embed.s);
    assert.deepEqual(t.layers[1].qNorm, ck.tensors.layers[1].qNorm);
    assert.equal(t.layers[1].wv.q.buffer, shifted.buffer); // int8 never needs a copy
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A valid header for CONFIG in `layout`, with `edit` applied to its fields. */
function header(
  edit: (v: DataView, base: number) => void,
  layout: "qwen3.c" | "qwen3-rs" = "qwen3.c",
) {
  const h = encodeHeader(CONFIG, layout);
  edit(new DataView(h.buffer), layout === "qwen3-rs" ? 12 : 8);
  return h;
}

const SIZE = expectedFileSize(CONFIG);
const FIELD_OFFSET = {
  dim: 0,
  hidden_dim: 4,
  n_layers: 8,
  n_heads: 12,
  n_kv_heads: 16,
  vocab_size: 20,
  seq_len: 24,
  head_dim: 28,
  shared_classifier: 32,
  group_size: 36,
} as const;

Deno.test("parseHeader accepts the layouts and rejects a wrong magic or version", () => {
  assert.equal(parseHeader(header(() => {}), SIZE, "m.bin").format, "qwen3.c");
  assert.equal(parseHeader(header(() => {}, "qwen3-rs"), SIZE, "m.bin").format, "qwen3-rs");
  assertQwen3Error(
    () => parseHeader(header((v) => v.setUint32(0, 0x46554747, true)), SIZE, "gguf.bin"),
    "format",
    /gguf\.bin/,
    /magic/,
    /0x46554747/,
    /0x616A6331/,
  );
  assertQwen3Error(
    () => parseHeader(header((v) => v.setInt32(4, 3, true)), SIZE, "m.bin"),
    "format",
    /version = 3/,
    /expected 1 \(dense\) or 2 \(Qwen3-MoE\)/,
  );
  // a dense header marked version 2 is read as a Qwen3-MoE one and refused by its fields
  assertQwen3Error(
    () => parseHeader(header((v) => v.setInt32(4, 2, true)), SIZE, "m.bin"),
    "format",
    /n_experts = 0 is not in 1\.\.1024/,
  );
});

Deno.test("parseHeader rejects truncated files and size mismatches", () => {
  const h = header(() => {});
  assertQwen3Error(
    () => parseHeader(h.subarray(0, 100), 100, "short.bin"),
    "format",
    /short\.bin/,
    /100 bytes/,
  );
  assertQwen3Error(() => parseHeader(h, 255, "m.bin"), "format", /255 bytes/, /256/);
  assertQwen3Error(
    () => parseHeader(h, SIZE - 1, "m.bin"),
    "format",
    /file size/,
    new RegExp(`${SIZE - 1} bytes`),
    new RegExp(`header implies ${SIZE}`),
    /truncated/,
  );
  assertQwen3Error(
    () => parseHeader(h, SIZE + 4, "m.bin"),
    "format",
    /longer than its header says/,
  );
  // A different shape makes the same file the wrong size.
  assertQwen3Error(
    () =>
      parseHeader(header((v, b) => v.setInt32(b + FIELD_OFFSET.n_layers, 3, true)), SIZE, "m.bin"),
    "format",
    /file size/,
    /n_layers 3/,
  );
});

Deno.test("parseHeader names every zero, negative or oversized field", () => {
  for (const layout of ["qwen3.c", "qwen3-rs"] as const) {
    for (const [name, off] of Object.entries(FIELD_OFFSET)) {
      if (name === "shared_classifier") continue;
      for (const bad of [0, -5]) {
        assertQwen3Error(
          () =>
            parseHeader(header((v, b) => v.setInt32(b + off, bad, true), layout), SIZE, "m.bin"),
          "format",
          new RegExp(`field ${name} = ${bad}`),
          /must be positive/,
        );
      }
    }
    assertQwen3Error(
      () =>
        parseHeader(
          header((v, b) => v.setInt32(b + FIELD_OFFSET.n_layers, 5000, true), layout),
          SIZE,
          "m.bin",
        ),
      "format",
      /n_layers = 5000/,
      /limit of 4096/,
    );
    assertQwen3Error(
      () =>
        parseHeader(
          header((v, b) => v.setInt32(b + FIELD_OFFSET.shared_classifier, 2, true), layout),
          SIZE,
          "m",
        ),
      "format",
      /shared_classifier = 2/,
      /0 or 1/,
    );
  }
});

Deno.test("parseHeader checks group size, GQA ratio, head_dim and the qwen3-rs architecture", () => {
  const set = (field: keyof typeof FIELD_OFFSET, value: number) => (v: DataView, b: number) =>
    v.setInt32(b + FIELD_OFFSET[field], value, true);
  assertQwen3Error(
    () => parseHeader(header(set("group_size", 48)), SIZE, "m.bin"),
    "format",
    /group_size 48/,
    /dim = 64/,
  );
  assertQwen3Error(
    () =>
      parseHeader(
        header((v, b) => {
          set("group_size", 16)(v, b);
          set("hidden_dim", 200)(v, b);
        }),
        SIZE,
        "m.bin",
      ),
    "format",
    /group_size 16/,
    /hidden_dim = 200/,
  );
  assertQwen3Error(
    () => parseHeader(header(set("n_kv_heads", 3)), SIZE, "m.bin"),
    "format",
    /n_kv_heads 3/,
    /n_heads 4/,
  );
  assertQwen3Error(
    () => parseHeader(header(set("head_dim", 33)), SIZE, "m.bin"),
    "format",
    /head_dim 33/,
    /even/,
  );
  assertQwen3Error(
    () =>
      parseHeader(
        header((v, b) => {
          set("dim", 6)(v, b);
          set("group_size", 2)(v, b);
        }),
        SIZE,
        "m.bin",
      ),
    "unsupported",
    /dim 6/,
    /multiple of 4/,
  );
  assertQwen3Error(
    () => parseHeader(header((v) => v.setUint32(8, 2, true), "qwen3-rs"), SIZE, "llama.bin"),
    "unsupported",
    /architecture_id 2/,
    /LlamaForCausalLM/,
  );
  // Only 1 and 2 at byte 8 read as a qwen3-rs architecture_id; 0 reads as a qwen3.c dim.
  assertQwen3Error(
    () => parseHeader(header((v) => v.setUint32(8, 0, true), "qwen3-rs"), SIZE, "m.bin"),
    "format",
    /field dim = 0/,
    /qwen3\.c layout/,
  );
});

Deno.test("a missing file is a Qwen3Error io naming the path", async () => {
  const path = "/nonexistent/dir/model.bin";
  await assert.rejects(readCheckpoint(path), (e) => {
    assert.ok(e instanceof Qwen3Error);
    assert.equal(e.code, "io");
    assert.match(e.message, /\/nonexistent\/dir\/model\.bin/);
    return true;
  });
});

Deno.test("fuzz: random header byte flips never escape as anything but Qwen3Error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ck = await readCheckpoint(await writeRandomModel(dir, { ...SMALL, seed: 12 }));
    let state = 0x1234567;
    const rand = (n: number) => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return (state >>> 8) % n;
    };
    let accepted = 0;
    for (let iter = 0; iter < 2000; iter++) {
      const bytes = ck.bytes.slice();
      const flips = 1 + rand(4);
      for (let f = 0; f < flips; f++) {
        // Mostly the 52 meaningful bytes, sometimes the padding.
        const at = rand(8) === 0 ? rand(HEADER_BYTES) : rand(52);
        bytes[at] ^= 1 << rand(8);
      }
      const size = rand(10) === 0 ? rand(bytes.length) : bytes.length;
      try {
        const config = parseHeader(bytes, size, "fuzz.bin");
        const t = checkpointTensors(bytes.subarray(0, size), config);
        assert.equal(t.layers.length, config.nLayers);
        accepted++;
      } catch (e) {
        if (!(e instanceof Qwen3Error)) throw e;
        assert.ok(e.code === "format" || e.code === "unsupported", e.message);
        assert.match(e.message, /fuzz\.bin/);
      }
    }
    // Padding flips and harmless fields (seq_len) must still load.
    assert.ok(accepted > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A minimal qwen3.c `.tokenizer`: the 256 byte tokens, so the C loader accepts the model. */
function byteTokenizer(): Uint8Array {
  const out = new Uint8Array(12 + 256 * 9);
  const v = new DataView(out.buffer);
  v.setUint32(0, 1, true); // max_token_length
  v.setUint32(4, 0, true); // bos
  v.setUint32(8, 0, true); // eos
  for (let i = 0; i < 256; i++) {
    const at = 12 + 9 * i;
    v.setFloat32(at, -1e6, true);
    v.setUint32(at + 4, 1, true);
    out[at + 8] = i;
  }
  return out;
}

for (const moe of [false, true]) {
  const what = moe ? " (Qwen3-MoE, version 2)" : "";
  Deno.test(`the C loader accepts and rejects the same fuzzed headers, with the same message${what}`, async () => {
    const { CEngine } = await import("../ffi/c_engine.ts");
    const dir = await Deno.makeTempDir();
    try {
      let path = await writeRandomModel(dir, { ...SMALL, seed: 13 });
      if (moe) {
        // 4 experts of width 16, block 1 sparse: flips also reach the mixture's fields (48..63)
        path = `${dir}/moe.bin`;
        const sparse = [false, true];
        const config = { ...CONFIG, ...SMALL, sharedClassifier: true };
        await writeRandomCheckpoint(
          path,
          {
            ...config,
            moe: { nExperts: 4, nExpertsUsed: 2, expertHiddenDim: 16, normTopkProb: false, sparse },
          },
          "qwen3.c",
          13,
        );
      }
      await Deno.writeFile(`${path}.tokenizer`, byteTokenizer());
      const original = await Deno.readFile(path);
      let state = 0x2468ace;
      const rand = (n: number) => {
        state = (Math.imul(state, 1103515245) + 12345) >>> 0;
        return (state >>> 8) % n;
      };
      let accepted = 0;
      for (let iter = 0; iter < 150; iter++) {
        let bytes = original.slice();
        for (let f = 1 + rand(3); f > 0; f--) {
          bytes[
            rand(8) === 0 ? rand(HEADER_BYTES) : moe && rand(4) === 0 ? 128 : rand(moe ? 64 : 52)
          ] ^= 1 << rand(8);
        }
        if (rand(8) === 0) bytes = bytes.subarray(0, rand(bytes.length));
        await Deno.writeFile(path, bytes);
        let tsError = "";
        try {
          parseHeader(bytes, bytes.length, path);
        } catch (e) {
          if (!(e instanceof Qwen3Error)) throw e;
          tsError = e.message;
        }
        let cError = "";
        try {
          using _engine = await CEngine.load(path, { threads: 1 });
        } catch (e) {
          cError = (e as Error).message;
        }
        assert.equal(tsError, cError, `iteration ${iter}`);
        if (!tsError) accepted++;
      }
      assert.ok(accepted > 0, "no fuzzed header was valid: the comparison only saw rejections");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
