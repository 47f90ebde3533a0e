/**
 * Mutation fuzzing of the TypeScript readers of outside data: random bit flips, byte and
 * integer overwrites, truncations, splices and appended garbage applied to valid
 * model.bin checkpoints, qwen3.c .tokenizer files, GGUF headers (written with
 * src/formats/gguf.ts's writer), tokenizer.json documents and chat template files. Whatever the
 * bytes, a reader may only return a result or throw a Qwen3Error: a RangeError,
 * TypeError or any other exception (or a call that runs away) fails the test.
 *
 * Accepted inputs are then used (tensor views read, tokenizers encode and decode,
 * templates rendered), since a reader that accepts garbage must still hand out something
 * safe. Readers owned by this module's tokenizer and template code must also keep their
 * messages clean: no raw control characters and no long quotes of the file.
 *
 * The C loaders get the same treatment from libFuzzer (tools/fuzz.ts); the seeds here are
 * the C harnesses' committed seeds (csrc/fuzz/corpus/), so both start from the same files.
 * Deterministic: a fixed seed and a fixed number of cases per reader (a longer run:
 * QWEN3_FUZZ_CASES=200000 QWEN3_FUZZ_SEED=7 deno test -A tests/fuzz_readers_test.ts).
 */

import assert from "node:assert/strict";
import { Qwen3Error } from "../src/errors.ts";
import { encodeGgufHeader, GgmlType, type GgufValue, readGgufHeader } from "../src/formats/gguf.ts";
import { checkpointTensors, HEADER_BYTES, parseHeader } from "../src/formats/checkpoint.ts";
import { encodeSafetensorsHeader, parseSafetensorsHeader } from "../src/formats/safetensors.ts";
import { loadTemplates, renderTurn, splitTemplate, STOCK_TEMPLATES } from "../src/text/template.ts";
import { Tokenizer } from "../src/text/tokenizer.ts";

const corpus = new URL("../csrc/fuzz/corpus/", import.meta.url);
/** Cases per reader; QWEN3_FUZZ_CASES and QWEN3_FUZZ_SEED make a longer or other run. */
const CASES = Number(Deno.env.get("QWEN3_FUZZ_CASES") ?? 4000);
const SEED_OFFSET = Number(Deno.env.get("QWEN3_FUZZ_SEED") ?? 0);
/** A single read of a few KB taking longer than this is a runaway, not slowness. */
const SLOW_MS = 1000;

/** mulberry32: a tiny deterministic PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const INTERESTING_U32 = [
  0,
  1,
  2,
  3,
  4,
  7,
  8,
  31,
  32,
  64,
  255,
  256,
  0x7fff,
  0xffff,
  0x10000,
  0x7fffffff,
  0x80000000,
  0xffffffff,
];

/** One to three random mutations of `input`, as libFuzzer's mutators would do. */
function mutate(input: Uint8Array, r: () => number): { bytes: Uint8Array; how: string } {
  let b = input.slice();
  const how: string[] = [];
  const pick = (n: number) => Math.floor(r() * n);
  const rounds = 1 + pick(3);
  for (let k = 0; k < rounds; k++) {
    const at = b.length ? pick(b.length) : 0;
    switch (pick(7)) {
      case 0: { // bit flips
        const n = 1 + pick(8);
        for (let i = 0; i < n && b.length; i++) b[pick(b.length)] ^= 1 << pick(8);
        how.push(`flip${n}`);
        break;
      }
      case 1: { // interesting bytes
        const v = [0, 0xff, 0x7f, 0x80, 0x25, 0x22, 0x5c, 0x0a, 0x3c, pick(256)][pick(10)];
        if (b.length) b[at] = v;
        how.push(`byte@${at}=${v}`);
        break;
      }
      case 2: { // interesting little-endian u32 (counts, lengths, header fields)
        const v = INTERESTING_U32[pick(INTERESTING_U32.length)];
        if (b.length >= 4) {
          const p = r() < 0.7 ? Math.min(at & ~3, b.length - 4) : Math.min(at, b.length - 4);
          new DataView(b.buffer).setUint32(p, v, true);
          how.push(`u32@${p}=${v}`);
        }
        break;
      }
      case 3: { // truncate
        b = b.slice(0, at);
        how.push(`truncate@${at}`);
        break;
      }
      case 4: { // splice a chunk of the input somewhere else (duplicates structure)
        const from = pick(input.length + 1), len = pick(Math.min(64, input.length - from) + 1);
        const chunk = input.subarray(from, from + len);
        const out = new Uint8Array(b.length + chunk.length);
        out.set(b.subarray(0, at));
        out.set(chunk, at);
        out.set(b.subarray(at), at + chunk.length);
        b = out;
        how.push(`splice${len}@${at}`);
        break;
      }
      case 5: { // delete a range
        const len = pick(Math.min(64, b.length - at) + 1);
        const out = new Uint8Array(b.length - len);
        out.set(b.subarray(0, at));
        out.set(b.subarray(at + len), at);
        b = out;
        how.push(`delete${len}@${at}`);
        break;
      }
      default: { // append garbage
        const extra = new Uint8Array(1 + pick(32)).map(() => pick(256));
        const out = new Uint8Array(b.length + extra.length);
        out.set(b);
        out.set(extra, b.length);
        b = out;
        how.push(`append${extra.length}`);
      }
    }
  }
  return { bytes: b, how: how.join(",") };
}

/** Messages may quote a file only escaped and briefly. */
function assertCleanMessage(e: Qwen3Error, context: string): void {
  assert.ok(
    // deno-lint-ignore no-control-regex -- looking for raw control characters is the point
    !/[\u0000-\u001f\u007f-\u009f]/.test(e.message),
    `${context}: raw control character in ${JSON.stringify(e.message)}`,
  );
  assert.ok(e.message.length < 600, `${context}: a ${e.message.length}-character message`);
}

interface Stats {
  accepted: number;
  rejected: number;
}

/**
 * Runs `read` on CASES mutations of the seeds; only Qwen3Error may escape. With
 * `cleanMessages`, rejections must also pass assertCleanMessage.
 */
function fuzz(
  name: string,
  seeds: Uint8Array[],
  seed: number,
  read: (bytes: Uint8Array) => void,
  cleanMessages: boolean,
  mutationRate = 1,
): Stats {
  const r = rng(seed + SEED_OFFSET);
  const stats: Stats = { accepted: 0, rejected: 0 };
  for (let i = 0; i < CASES; i++) {
    const base = seeds[i % seeds.length];
    const { bytes, how } = i < seeds.length || r() >= mutationRate
      ? { bytes: base, how: "seed" }
      : mutate(base, r);
    const context = `${name} case ${i} (seed ${i % seeds.length}, ${how})`;
    const t0 = performance.now();
    try {
      read(bytes);
      stats.accepted++;
    } catch (e) {
      if (!(e instanceof Qwen3Error)) {
        throw new assert.AssertionError({
          message: `${context}: ${(e as Error)?.name}: ${(e as Error)?.message}\n${
            (e as Error)?.stack
          }`,
        });
      }
      if (cleanMessages) assertCleanMessage(e, context);
      stats.rejected++;
    }
    const ms = performance.now() - t0;
    assert.ok(ms < SLOW_MS, `${context}: ${ms.toFixed(0)} ms for ${bytes.length} bytes`);
  }
  // Both outcomes must occur, or the mutations are too weak (or too strong) to mean anything.
  assert.ok(
    stats.accepted >= seeds.length && stats.rejected > CASES / 10,
    `${name}: ${JSON.stringify(stats)}`,
  );
  return stats;
}

async function seedFiles(harness: string, filter: (name: string) => boolean = () => true) {
  const out: Uint8Array[] = [];
  const names: string[] = [];
  for await (const e of Deno.readDir(new URL(`${harness}/`, corpus))) {
    if (e.isFile && e.name.startsWith("seed_") && filter(e.name)) names.push(e.name);
  }
  for (const n of names.sort()) out.push(await Deno.readFile(new URL(`${harness}/${n}`, corpus)));
  assert.ok(out.length > 0, `no seeds in csrc/fuzz/corpus/${harness}`);
  return out;
}

const dec = new TextDecoder();
const SAMPLE = "Héllo wörld <|im_end|> 123 \u{1F600}\n\n  x";

Deno.test("fuzz: model.bin checkpoints (header, sizes, tensor views)", async () => {
  const seeds = await seedFiles("fuzz_model_header", (n) => n.endsWith(".bin"));
  const s = fuzz("model.bin", seeds, 1, (bytes) => {
    const config = parseHeader(bytes.subarray(0, HEADER_BYTES), bytes.length, "fuzz.bin");
    const t = checkpointTensors(bytes, config);
    // Every view must lie inside the file: touch the last element of each.
    const q8 = [
      t.embed,
      t.classifier,
      ...t.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3]),
    ];
    for (const m of q8) {
      assert.equal(m.q.length, m.rows * m.cols);
      assert.equal(m.s.length, (m.rows * m.cols) / config.groupSize);
      void m.q[m.q.length - 1], m.s[m.s.length - 1];
    }
    assert.equal(t.finalNorm.length, config.dim);
  }, false);
  console.log(`model.bin: ${s.accepted} accepted, ${s.rejected} rejected`);
});

Deno.test("fuzz: qwen3.c .tokenizer files", async () => {
  const seeds = await seedFiles("fuzz_tokenizer_bin");
  const s = fuzz("tokenizer", seeds, 2, (bytes) => {
    const tok = Tokenizer.fromQwen3c(bytes, "fuzz.tokenizer");
    const ids = tok.encode(SAMPLE, { special: true });
    for (const id of ids) assert.ok(id >= 0 && id < tok.size, `id ${id}`);
    tok.decode(ids);
  }, true);
  console.log(`.tokenizer: ${s.accepted} accepted, ${s.rejected} rejected`);
});

/**
 * Structural mutations of a JSON document: a random member (anywhere in the tree, vocab
 * and merge entries included) replaced by a value of another type, deleted, or given a
 * clashing id, so the loader's checks are reached with valid JSON.
 */
function jsonVariants(text: string, count: number, r: () => number): Uint8Array[] {
  const odd: unknown[] = [null, true, 0, -1, 2 ** 31, 1e300, 0.5, "", "Ġ", "a b", "<|x|>", [], {}, [
    "a",
    1,
  ], { type: 1 }];
  const out: Uint8Array[] = [];
  const enc = new TextEncoder();
  for (let n = 0; n < count; n++) {
    const doc = JSON.parse(text);
    const edits = 1 + Math.floor(r() * 2);
    for (let e = 0; e < edits; e++) {
      // Walk down from the root through random children, stopping at a random depth.
      let parent: Record<string, unknown> | unknown[] | null = null;
      let key: string | number = "";
      let node: unknown = doc;
      for (let depth = 0; depth < 5 && node !== null && typeof node === "object"; depth++) {
        const keys: (string | number)[] = Array.isArray(node)
          ? node.map((_, i) => i)
          : Object.keys(node);
        if (keys.length === 0 || (depth > 0 && r() < 0.3)) break;
        parent = node as Record<string, unknown>;
        key = keys[Math.floor(r() * keys.length)];
        node = (parent as Record<string | number, unknown>)[key];
      }
      if (parent === null) continue;
      const target = parent as Record<string | number, unknown>;
      const op = Math.floor(r() * 4);
      if (op === 0 && !Array.isArray(parent)) delete target[key];
      else if (op === 1 && typeof node === "number") {
        target[key] = [0, 1, 255, 256, 699, 700, 1e6, -1][Math.floor(r() * 8)];
      } else if (op === 2 && typeof node === "string") target[key] = node + node.slice(0, 1);
      else target[key] = odd[Math.floor(r() * odd.length)];
    }
    out.push(enc.encode(JSON.stringify(doc)));
  }
  return out;
}

Deno.test("fuzz: tokenizer.json documents (bytes and structure)", async () => {
  const files = await seedFiles("fuzz_tokenizer_json");
  const r = rng(33);
  const seeds = [...files];
  for (const f of files) {
    const text = dec.decode(f);
    if (text.includes('"model"')) seeds.push(...jsonVariants(text, 100, r));
  }
  const s = fuzz(
    "tokenizer.json",
    seeds,
    3,
    (bytes) => {
      const tok = Tokenizer.fromJson(dec.decode(bytes), "fuzz.json");
      for (const special of [false, true]) {
        const ids = tok.encode(SAMPLE, { special });
        for (const id of ids) {
          assert.ok(Number.isInteger(id) && id >= 0 && id < tok.size, `id ${id}`);
        }
        tok.decode(ids);
      }
    },
    true,
    0.3,
  );
  console.log(`tokenizer.json: ${s.accepted} accepted, ${s.rejected} rejected`);
});

/** A small GGUF header as a Qwen3 file has it: metadata, tokenizer lists and tensors. */
function ggufSeeds(): Uint8Array[] {
  const tokens = ["a", "b", "ab", "Ġ", "Ġa", "<|im_end|>"];
  const meta: [string, GgufValue][] = [
    ["general.architecture", { type: "string", value: "qwen3" }],
    ["qwen3.embedding_length", { type: "u32", value: 64 }],
    ["qwen3.block_count", { type: "u32", value: 1 }],
    ["qwen3.attention.head_count", { type: "u32", value: 2 }],
    ["qwen3.rope.freq_base", { type: "f32", value: 1e6 }],
    ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
    ["tokenizer.ggml.tokens", { type: "string[]", value: tokens }],
    ["tokenizer.ggml.token_type", { type: "i32[]", value: [1, 1, 1, 1, 1, 3] }],
    ["tokenizer.ggml.merges", { type: "string[]", value: ["a b", "Ġ a"] }],
    ["tokenizer.ggml.eos_token_id", { type: "u32", value: 5 }],
    ["tokenizer.chat_template", {
      type: "string",
      value: "{% for m in messages %}{{ m }}{% endfor %}",
    }],
  ];
  const tensors = [
    { name: "token_embd.weight", dims: [64, 6], type: GgmlType.Q8_0 },
    { name: "output_norm.weight", dims: [64], type: GgmlType.F32 },
    { name: "blk.0.attn_q.weight", dims: [64, 64], type: GgmlType.F16 },
  ];
  const out: Uint8Array[] = [];
  for (const alignment of [32, 64]) {
    const { header, dataBytes } = encodeGgufHeader(meta, tensors, alignment);
    const file = new Uint8Array(header.length + dataBytes);
    file.set(header);
    out.push(file);
  }
  out.push(encodeGgufHeader(meta.slice(0, 3), []).header);
  return out;
}

Deno.test("fuzz: GGUF headers (metadata, tokenizer lists, tensor table)", () => {
  const s = fuzz("gguf", ggufSeeds(), 4, (bytes) => {
    const g = readGgufHeader(bytes, bytes.length, "fuzz.gguf");
    for (const t of g.tensors.values()) assert.ok(t.offset + t.bytes <= bytes.length, t.name);
    const tokens = g.metadata.get("tokenizer.ggml.tokens");
    const merges = g.metadata.get("tokenizer.ggml.merges");
    if (
      Array.isArray(tokens) && tokens.every((t) => typeof t === "string") && Array.isArray(merges)
    ) {
      const types = g.metadata.get("tokenizer.ggml.token_type");
      const tok = Tokenizer.fromLists(
        tokens as string[],
        merges as string[],
        types instanceof Int32Array ? types : undefined,
        "fuzz.gguf",
      );
      tok.decode(tok.encode("ab a <|im_end|>", { special: true }));
    }
  }, true);
  console.log(`GGUF: ${s.accepted} accepted, ${s.rejected} rejected`);
});

/** Small safetensors files (header and zeroed data), and JSON-level variants of them. */
function safetensorsSeeds(): Uint8Array[] {
  const files: Uint8Array[] = [];
  for (
    const specs of [
      [
        { name: "model.embed_tokens.weight", dtype: "BF16", shape: [8, 4] },
        { name: "model.norm.weight", dtype: "F32", shape: [4] },
        { name: "lm_head.weight", dtype: "F16", shape: [8, 4] },
      ],
      [{ name: "w", dtype: "F32", shape: [2, 3] }],
    ] as const
  ) {
    const { header, dataBytes } = encodeSafetensorsHeader(
      specs.map((t) => ({ ...t, shape: [...t.shape] })),
    );
    const file = new Uint8Array(header.length + dataBytes);
    file.set(header);
    files.push(file);
  }
  const r = rng(44);
  const variants: Uint8Array[] = [];
  for (const f of files) {
    const n = Number(new DataView(f.buffer).getBigUint64(0, true));
    const data = f.subarray(8 + n);
    for (const json of jsonVariants(dec.decode(f.subarray(8, 8 + n)), 60, r)) {
      const out = new Uint8Array(8 + json.length + data.length);
      new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
      out.set(json, 8);
      out.set(data, 8 + json.length);
      variants.push(out);
    }
  }
  return [...files, ...variants];
}

Deno.test("fuzz: safetensors headers", () => {
  const s = fuzz(
    "safetensors",
    safetensorsSeeds(),
    7,
    (bytes) => {
      const h = parseSafetensorsHeader(bytes, bytes.length, "fuzz.safetensors");
      for (const [name, t] of h.tensors) {
        assert.ok(
          t.offset >= 0 && t.offset + t.bytes <= bytes.length,
          `${name} lies outside the file`,
        );
      }
    },
    false,
    0.5,
  );
  console.log(`safetensors: ${s.accepted} accepted, ${s.rejected} rejected`);
});

Deno.test("fuzz: chat template files", async () => {
  const tok = Tokenizer.fromQwen3c(
    (await seedFiles("fuzz_tokenizer_bin", (n) => n.includes("bytes")))[0],
  );
  const enc = new TextEncoder();
  const seeds = [
    ...Object.values(STOCK_TEMPLATES).map((t) => enc.encode(t)),
    enc.encode("100%% sure: %s<|im_end|>"),
  ];
  const dir = await Deno.makeTempDir({ prefix: "qwen3_fuzz_templates_" });
  try {
    let files = 0;
    const s = fuzz("template", seeds, 5, (bytes) => {
      const text = dec.decode(bytes);
      const slots = text.split("%s").length - 1 >= 2 ? 2 : 1;
      const pieces = splitTemplate(text, slots, "fuzz.template");
      assert.equal(pieces.length, slots + 1);
      const t = slots === 2
        ? { ...STOCK_TEMPLATES, system: text, systemThinking: text }
        : { ...STOCK_TEMPLATES, plain: text, thinking: text };
      const { parts } = renderTurn(t, {
        user: "hi <|im_end|>",
        system: "sys",
        thinking: slots === 1,
        first: true,
      });
      tok.encodeParts(parts);
    }, true);
    // The side-file loader on a sample of the same inputs (file I/O is slower).
    const r = rng(6);
    for (let i = 0; i < 60; i++) {
      const { bytes } = mutate(seeds[i % seeds.length], r);
      await Deno.writeFile(`${dir}/m.bin.template.with-system`, bytes);
      try {
        await loadTemplates(`${dir}/m.bin`);
        files++;
      } catch (e) {
        assert.ok(
          e instanceof Qwen3Error,
          `loadTemplates threw ${(e as Error)?.name}: ${(e as Error)?.message}`,
        );
        assertCleanMessage(e, `loadTemplates case ${i}`);
        assert.ok(e.message.includes(`${dir}/m.bin.template.with-system`), e.message);
      }
    }
    console.log(
      `templates: ${s.accepted} accepted, ${s.rejected} rejected; ${files} of 60 side files loaded`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fuzz regressions: escaped file bytes in messages, bounded token ids", () => {
  // A template directive with an escape character, and a tokenizer.json whose merge and
  // parse error would carry one: the messages show \u001b, never the raw byte.
  assert.throws(
    () => splitTemplate("a%\u001b[2J %s", 1, "t.template"),
    (e: unknown) => e instanceof Qwen3Error && e.message.includes('"%\\u001b" at offset 1'),
  );
  const json = '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a \\u001b[31m"]}}';
  assert.throws(
    () => Tokenizer.fromJson(json, "x.json"),
    (e: unknown) =>
      e instanceof Qwen3Error && !e.message.includes("\u001b") && e.message.includes("\\u001b"),
  );
  assert.throws(
    () => Tokenizer.fromJson('{"model": \u001b[31m', "x.json"),
    (e: unknown) =>
      e instanceof Qwen3Error && !e.message.includes("\u001b") &&
      e.message.startsWith("x.json: not JSON"),
  );
  // Token ids far past any vocabulary were a RangeError (2^32) or a multi-GB table (1e9).
  for (const id of [2 ** 32, 1e9, 2 ** 24]) {
    assert.throws(
      () => Tokenizer.fromJson(`{"model": {"vocab": {"a": ${id}}, "merges": []}}`, "x.json"),
      (e: unknown) =>
        e instanceof Qwen3Error &&
        /x\.json: token id \d+ exceeds the limit of 16777215/.test(e.message),
    );
  }
  // GGUF names: shown byte for byte as the C engine shows them, the file and tensor named;
  // two invalid UTF-8 names that decode alike are two names, as in the C parser.
  const named = (names: string[], dims = [32]) =>
    encodeGgufHeader(
      [["general.architecture", { type: "string", value: "qwen3" }]],
      names.map((name) => ({ name, dims, type: GgmlType.F32 })),
    ).header;
  const patchBytes = (b: Uint8Array, from: string, to: number[]) => {
    const at = new TextDecoder("latin1").decode(b).indexOf(from);
    b.set(to, at);
    return b;
  };
  const pair = patchBytes(
    patchBytes(named(["t\u0001", "t\u0002"]), "t\u0001", [0x74, 0xff]),
    "t\u0002",
    [
      0x74,
      0xfe,
    ],
  );
  const g = readGgufHeader(pair, pair.length + 256, "x.gguf");
  assert.equal(g.tensors.size, 1, "both decode to t\ufffd; the first is kept");
  const rows = named(["a\u001b[2J\nb"], [48]);
  // the table entry: name, u32 n_dims, one u64 dim, then the u32 type
  const typeAt = new TextDecoder("latin1").decode(rows).indexOf("a\u001b[2J\nb") + 7 + 4 + 8;
  new DataView(rows.buffer).setUint32(typeAt, GgmlType.Q8_0, true);
  assert.throws(
    () => readGgufHeader(rows, rows.length + 256, "x.gguf"),
    (e: unknown) =>
      e instanceof Qwen3Error &&
      e.message ===
        "x.gguf: GGUF tensor 'a\\x1B[2J\\x0Ab' has rows of 48 values, not a multiple of the " +
          "Q8_0 block of 32",
  );
  const huge = JSON.stringify({ model: { type: "x".repeat(100_000), vocab: {}, merges: [] } });
  assert.throws(
    () => Tokenizer.fromJson(huge, "x.json"),
    (e: unknown) => e instanceof Qwen3Error && e.message.length < 200,
  );
});
