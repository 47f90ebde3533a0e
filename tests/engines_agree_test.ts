/**
 * The two engines decide alike (needs the C library: `deno task build`):
 *
 * - every bad input in one table (hostile side files, a tokenizer larger than the
 *   vocabulary, truncated and foreign model files, a FIFO or a device as the model path,
 *   GGUF files) is refused by `Qwen3.load` on both engines with the same Qwen3Error code,
 *   and by the bare C loader (`CEngine.load`) too, or accepted by all three;
 * - strings from a GGUF file (key and tensor names, metadata values) with terminal escapes,
 *   newlines, invalid UTF-8 or 100 KB of text appear in both engines' messages byte for
 *   byte alike (escaped and cut by the C engine's rule, src/errors.ts quoteBytes).
 *
 * Rows marked `needsC` depend on the C engine's side-file checks (regular files only, the
 * 64 KiB / 64 MiB limits, `MODEL.tokenizer.json` first); they run in their own test.
 */

import assert from "node:assert/strict";
import { CEngine } from "../ffi/c_engine.ts";
import { quoteBytes, Qwen3Error } from "../src/errors.ts";
import { GgmlType, type GgufValue } from "../src/formats/gguf.ts";
import { HEADER_BYTES } from "../src/formats/checkpoint.ts";
import { readCheckpoint } from "../src/formats/model_file.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import {
  QWEN3C_TOKENIZER_LIMIT,
  TEMPLATE_FILE_LIMIT,
  TOKENIZER_JSON_LIMIT,
} from "../src/formats/side_file.ts";
import type { EngineKind } from "../src/types.ts";
import { checkpointGgufParts, type GgufTensorData, writeGguf } from "./helpers/gguf_model.ts";
import { writeRandomModel } from "./helpers/random_model.ts";

const dir = await Deno.makeTempDir({ prefix: "qwen3_engines_agree_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** A small Qwen3-style tokenizer.json (726 tokens, the special ones included). */
const MINI_JSON_PATH = decodeURIComponent(
  new URL("../csrc/fuzz/corpus/fuzz_tokenizer_json/seed_mini_qwen3.json", import.meta.url)
    .pathname,
);
const MINI_TOKENS = 726;
const SHAPE = { nLayers: 1, seqLen: 64, withTokenizerJson: false } as const;
/** A model whose 768 embedding rows hold the mini tokenizer, and one whose 700 do not. */
const MODEL = await writeRandomModel(`${dir}/model`, { ...SHAPE, vocabSize: 768 });
const SMALL_VOCAB = await writeRandomModel(`${dir}/small`, { ...SHAPE, vocabSize: 700 });
const GGUF_PARTS = await checkpointGgufParts(await readCheckpoint(MODEL), "f32", MINI_JSON_PATH);

async function mkfifo(path: string): Promise<void> {
  const r = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(r.success, `mkfifo ${path}`);
}

/** A file of `size` zero bytes that takes no disk space. */
async function sparse(path: string, size: number): Promise<void> {
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  await f.truncate(size);
}

let serial = 0;
/** A fresh folder holding the good model.bin (or `from`) and the mini tokenizer.json. */
async function folder(opts: { from?: string; tokenizer?: boolean } = {}): Promise<string> {
  const d = `${dir}/row${serial++}`;
  await Deno.mkdir(d);
  await Deno.copyFile(opts.from ?? MODEL, `${d}/model.bin`);
  if (opts.tokenizer ?? true) await Deno.copyFile(MINI_JSON_PATH, `${d}/tokenizer.json`);
  return `${d}/model.bin`;
}

/** A GGUF of the good model, changed by `mutate`, in a fresh folder. */
async function gguf(
  mutate: (m: [string, GgufValue][], t: GgufTensorData[]) => void,
): Promise<string> {
  const d = `${dir}/row${serial++}`;
  await Deno.mkdir(d);
  const metadata = GGUF_PARTS.metadata.map(([k, v]) => [k, v] as [string, GgufValue]);
  const tensors = GGUF_PARTS.tensors.map((x) => ({ ...x, spec: { ...x.spec } }));
  mutate(metadata, tensors);
  await writeGguf(`${d}/model.gguf`, metadata, tensors);
  return `${d}/model.gguf`;
}

/** "ok", or the code and message of the Qwen3Error the load threw. */
async function outcome(
  load: () => Promise<Disposable>,
): Promise<{ code: string; message: string }> {
  try {
    const m = await load();
    m[Symbol.dispose]();
    return { code: "ok", message: "" };
  } catch (e) {
    if (!(e instanceof Qwen3Error)) throw e;
    return { code: e.code, message: e.message };
  }
}

interface Row {
  what: string;
  /** Makes the input; returns the model path. */
  make: () => Promise<string>;
  /** "ok" or the Qwen3Error code every loader must give. */
  expect: string;
  /** What the messages must say (the real reason, not a neighbour's). */
  why?: RegExp;
  /** The C engine change this row depends on. */
  needsC?: string;
}

const C_SIDE_FILES = "the C engine's side-file checks";

const ROWS: Row[] = [
  { what: "a good model", make: () => folder(), expect: "ok" },
  {
    what: "a FIFO as .template",
    make: async () => {
      const m = await folder();
      await mkfifo(`${m}.template`);
      return m;
    },
    expect: "io",
    why: /FIFO/,
    needsC: C_SIDE_FILES,
  },
  {
    what: ".template.with-system linked to /dev/zero",
    make: async () => {
      const m = await folder();
      await Deno.symlink("/dev/zero", `${m}.template.with-system`);
      return m;
    },
    expect: "io",
    why: /character device|\bdevice\b/,
    needsC: C_SIDE_FILES,
  },
  {
    what: "a template of exactly 64 KiB",
    make: async () => {
      const m = await folder();
      await Deno.writeTextFile(`${m}.template`, "%s" + "x".repeat(TEMPLATE_FILE_LIMIT - 2));
      return m;
    },
    expect: "ok",
  },
  {
    what: "a template of 64 KiB + 1 byte",
    make: async () => {
      const m = await folder();
      await Deno.writeTextFile(`${m}.template`, "%s" + "x".repeat(TEMPLATE_FILE_LIMIT - 1));
      return m;
    },
    expect: "format",
    why: /limit of 65536 bytes/,
  },
  {
    what: "a template with a NUL byte",
    make: async () => {
      const m = await folder();
      await Deno.writeTextFile(`${m}.template`, "a\0 %s");
      return m;
    },
    expect: "format",
    why: /NUL/,
  },
  {
    what: "a template with a %d directive",
    make: async () => {
      const m = await folder();
      await Deno.writeTextFile(`${m}.template.with-thinking`, "%d %s");
      return m;
    },
    expect: "format",
  },
  {
    what: "a FIFO as MODEL.tokenizer.json beside a good tokenizer.json",
    make: async () => {
      const m = await folder();
      await mkfifo(`${m}.tokenizer.json`);
      return m;
    },
    expect: "io",
    why: /FIFO/,
    needsC: C_SIDE_FILES,
  },
  {
    what: "a FIFO as tokenizer.json and no other tokenizer",
    make: async () => {
      const m = await folder({ tokenizer: false });
      await mkfifo(`${m.replace(/model\.bin$/, "")}tokenizer.json`);
      return m;
    },
    expect: "io",
    why: /FIFO/,
    needsC: C_SIDE_FILES,
  },
  {
    what: "a symlink loop as tokenizer.json",
    make: async () => {
      const m = await folder({ tokenizer: false });
      const t = `${m.replace(/model\.bin$/, "")}tokenizer.json`;
      await Deno.symlink(t, t);
      return m;
    },
    expect: "io",
    why: /symbolic links|symlink loop/i,
    needsC: C_SIDE_FILES,
  },
  {
    what: "a tokenizer.json over 64 MiB",
    make: async () => {
      const m = await folder({ tokenizer: false });
      await sparse(`${m.replace(/model\.bin$/, "")}tokenizer.json`, TOKENIZER_JSON_LIMIT + 1);
      return m;
    },
    expect: "format",
    why: /limit of 67108864 bytes/,
    needsC: C_SIDE_FILES,
  },
  {
    what: "a qwen3.c .tokenizer over 64 MiB",
    make: async () => {
      const m = await folder({ tokenizer: false });
      await sparse(`${m}.tokenizer`, QWEN3C_TOKENIZER_LIMIT + 1);
      return m;
    },
    expect: "format",
    why: /limit of 67108864 bytes/,
    needsC: C_SIDE_FILES,
  },
  {
    what: "MODEL.tokenizer.json is used before a broken tokenizer.json",
    make: async () => {
      const m = await folder({ tokenizer: false });
      await Deno.writeTextFile(`${m.replace(/model\.bin$/, "")}tokenizer.json`, "{broken");
      await Deno.copyFile(MINI_JSON_PATH, `${m}.tokenizer.json`);
      return m;
    },
    expect: "ok",
    needsC: "the C engine's MODEL.tokenizer.json lookup",
  },
  {
    what: `a tokenizer of ${MINI_TOKENS} entries for 700 embedding rows`,
    make: () => folder({ from: SMALL_VOCAB }),
    expect: "format",
    why: /726 tokens, more than the model's vocab_size 700/,
  },
  { what: "no tokenizer at all", make: () => folder({ tokenizer: false }), expect: "io" },
  {
    what: "a truncated model.bin",
    make: async () => {
      const m = await folder();
      await Deno.truncate(m, (await Deno.stat(m)).size - 1);
      return m;
    },
    expect: "format",
    why: /truncated/,
  },
  {
    what: "a model.bin with a wrong magic",
    make: async () => {
      const m = await folder();
      using f = await Deno.open(m, { write: true });
      await f.write(new TextEncoder().encode("NOPE"));
      return m;
    },
    expect: "format",
    why: /magic/,
  },
  {
    what: "a model.bin shorter than its header",
    make: async () => {
      const m = await folder();
      await Deno.truncate(m, HEADER_BYTES - 1);
      return m;
    },
    expect: "format",
  },
  {
    what: "a FIFO as the model path",
    make: async () => {
      const m = `${dir}/row${serial++}.bin`;
      await mkfifo(m);
      return m;
    },
    expect: "io",
    why: /FIFO/,
  },
  {
    what: "/dev/zero (through a link) as the model path",
    make: async () => {
      const m = `${dir}/row${serial++}.bin`;
      await Deno.symlink("/dev/zero", m);
      return m;
    },
    expect: "io",
    why: /device/,
  },
  {
    what: "a directory as the model path",
    make: async () => {
      const m = `${dir}/row${serial++}.bin`;
      await Deno.mkdir(m);
      return m;
    },
    expect: "io",
  },
  { what: "a missing model file", make: () => Promise.resolve(`${dir}/none.bin`), expect: "io" },
  { what: "a good GGUF", make: () => gguf(() => {}), expect: "ok" },
  {
    what: "a GGUF with an unused tensor of a type the engines cannot run (Q3_K)",
    make: () =>
      gguf((_, t) => {
        // laid out as 256 F32 values (1 KiB); listed as one Q3_K block of 110 bytes
        t.push({
          spec: { name: "extra.q3_k", dims: [256], type: GgmlType.F32 },
          data: new Uint8Array(1024),
          tableType: 11,
        });
      }),
    expect: "ok",
  },
  {
    what: "a GGUF with more tokens than embedding rows",
    make: () =>
      gguf((m) => {
        const grow = <T>(key: string, f: (v: T) => T) => {
          const entry = m.find(([k]) => k === key)!;
          entry[1] = { ...entry[1], value: f(entry[1].value as T) } as GgufValue;
        };
        grow<readonly string[]>("tokenizer.ggml.tokens", (v) => [...v, "[EXTRA]"]);
        grow<ArrayLike<number>>("tokenizer.ggml.token_type", (v) => [...Array.from(v), 1]);
      }),
    expect: "format",
  },
  {
    what: "a GGUF whose tokenizer.ggml.model is a number",
    make: () =>
      gguf((m) => {
        const entry = m.find(([k]) => k === "tokenizer.ggml.model")!;
        entry[1] = { type: "u32", value: 2 };
      }),
    expect: "format",
  },
];

/** Runs one row on Qwen3.load (both engines) and the bare C loader. */
async function checkRow(row: Row): Promise<string[]> {
  const path = await row.make();
  const problems: string[] = [];
  const results: [string, { code: string; message: string }][] = [];
  for (const engine of ["ts", "c"] as EngineKind[]) {
    results.push([`Qwen3.load ${engine}`, await outcome(() => Qwen3.load(path, { engine }))]);
  }
  results.push(["CEngine.load", await outcome(() => CEngine.load(path))]);
  for (const [who, r] of results) {
    if (r.code !== row.expect) {
      problems.push(`${row.what}: ${who} gave ${r.code} (${r.message}), expected ${row.expect}`);
    } else if (row.why && !row.why.test(r.message)) {
      problems.push(`${row.what}: ${who}'s message does not match ${row.why}: ${r.message}`);
    }
  }
  return problems;
}

Deno.test("engines agree: each bad input is refused by both with the same code", async () => {
  const problems: string[] = [];
  for (const row of ROWS.filter((r) => !r.needsC)) problems.push(...await checkRow(row));
  assert.deepEqual(problems, []);
});

Deno.test("engines agree on hostile side files (needs the C engine's side-file checks)", async () => {
  const problems: string[] = [];
  for (const row of ROWS.filter((r) => r.needsC)) problems.push(...await checkRow(row));
  assert.deepEqual(problems, []);
});

// ---------------------------------------------------------------------------------------------
// File strings in messages

/** Strings a hostile GGUF might carry; `bytes` when they are not valid UTF-8. */
const TRICKY: { what: string; text?: string; bytes?: Uint8Array }[] = [
  { what: "terminal escapes", text: "\u001b[2J\u001b]0;owned\u0007x" },
  { what: "a newline", text: "qwen3\nerror: a fake second line" },
  { what: "100 KB", text: "A".repeat(100_000) },
  { what: "invalid UTF-8", bytes: new Uint8Array([0x71, 0xff, 0xfe, 0xc3, 0x28, 0x80]) },
  { what: "backslash and quotes", text: "q\\w'e\"n" },
  { what: "non-ASCII UTF-8", text: "qwén3 \u2028" },
  { what: "80 bytes", text: "c".repeat(80) },
  { what: "81 bytes", text: "b".repeat(81) },
];

/** Where a string shows up in a load error, and the start of the message both must give. */
const SITES: {
  what: string;
  put: (s: string, m: [string, GgufValue][], t: GgufTensorData[]) => void;
  message: (path: string, q: string) => string;
  code: string;
}[] = [
  {
    what: "general.architecture",
    put: (s, m) => m.find(([k]) => k === "general.architecture")![1] = { type: "string", value: s },
    message: (p, q) =>
      `${p}: GGUF general.architecture is '${q}'; this engine runs only 'qwen3' (dense Qwen3)`,
    code: "unsupported",
  },
  {
    what: "tokenizer.ggml.model",
    put: (s, m) => m.find(([k]) => k === "tokenizer.ggml.model")![1] = { type: "string", value: s },
    message: (p, q) =>
      `${p}: GGUF tokenizer.ggml.model is '${q}'; only 'gpt2' (byte-level BPE, as Qwen3 uses) ` +
      "is supported",
    code: "unsupported",
  },
  {
    what: "a metadata key given twice",
    put: (s, m) => m.push([s, { type: "u32", value: 1 }], [s, { type: "u32", value: 2 }]),
    message: (p, q) => `${p}: GGUF metadata key '${q}' appears twice`,
    code: "format",
  },
  {
    what: "a tensor of an unknown type",
    put: (s, _, t) =>
      t.push({
        spec: { name: s, dims: [32], type: GgmlType.F32 },
        data: new Uint8Array(128),
        tableType: 99,
      }),
    message: (p, q) =>
      `${p}: GGUF tensor '${q}' has ggml type 99, unknown to this engine (it runs F32, F16, ` +
      "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
    code: "unsupported",
  },
  {
    what: "a Q8_0 tensor with rows of 48 values",
    put: (s, _, t) =>
      t.push({
        spec: { name: s, dims: [48], type: GgmlType.F32 },
        data: new Uint8Array(192),
        tableType: GgmlType.Q8_0,
      }),
    message: (p, q) =>
      `${p}: GGUF tensor '${q}' has rows of 48 values, not a multiple of the Q8_0 block of 32`,
    code: "format",
  },
];

/** Writes a GGUF with `s` at `site`; invalid UTF-8 goes in through a same-length stand-in. */
async function ggufWith(site: (typeof SITES)[number], s: (typeof TRICKY)[number]) {
  const stand = s.bytes ? "\u0001".repeat(s.bytes.length) : s.text!;
  const path = await gguf((m, t) => site.put(stand, m, t));
  if (s.bytes) {
    const b = await Deno.readFile(path);
    for (let i = 0; i + s.bytes.length <= b.length; i++) {
      if (b.subarray(i, i + s.bytes.length).every((x) => x === 1)) b.set(s.bytes, i);
    }
    await Deno.writeFile(path, b);
  }
  return path;
}

Deno.test("engines agree: file strings in messages are escaped and cut alike", async () => {
  const problems: string[] = [];
  for (const site of SITES) {
    for (const s of TRICKY) {
      const path = await ggufWith(site, s);
      const expected = site.message(path, quoteBytes(s.bytes ?? s.text!));
      const got: string[] = [];
      for (const engine of ["ts", "c"] as EngineKind[]) {
        const r = await outcome(() => Qwen3.load(path, { engine }));
        got.push(r.message);
        const where = `${site.what}, ${s.what}, ${engine}`;
        if (r.code !== site.code) problems.push(`${where}: ${r.code} ${r.message}`);
        else if (!r.message.startsWith(expected)) {
          problems.push(`${where}: ${JSON.stringify(r.message)}`);
        }
        // deno-lint-ignore no-control-regex -- raw control characters are what must not be there
        if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(r.message)) {
          problems.push(`${where}: raw control characters`);
        }
        if (r.message.length > path.length + 500) {
          problems.push(`${where}: ${r.message.length} characters`);
        }
      }
      // The same text, but for the byte offset the TS parser adds to a duplicate key.
      const [ts, c] = got.map((m) => m.replace(/ \(at byte \d+\)$/, ""));
      if (ts !== c) problems.push(`${site.what}, ${s.what}: TS ${ts} / C ${c}`);
    }
  }
  assert.deepEqual(problems, []);
});
