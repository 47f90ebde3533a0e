/**
 * Hostile paths where a model or its side files should be: a FIFO (reading one waits for a
 * writer forever), a symlink to /dev/zero (never ends), a directory, a symlink loop, files
 * over the size limits; and the tokenizer lookup order, where only a missing file passes on
 * to the next candidate.
 *
 * A test that would hang on a FIFO opens the FIFO's write end after a few seconds, so a
 * regression fails with a message instead of stalling the run.
 */

import assert from "node:assert/strict";
import { Qwen3Error } from "../src/errors.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import { readGgufMetadata, readModel } from "../src/formats/model_file.ts";
import {
  QWEN3C_TOKENIZER_LIMIT,
  readSideFile,
  readSideText,
  TEMPLATE_FILE_LIMIT,
  TOKENIZER_JSON_LIMIT,
} from "../src/formats/side_file.ts";
import { loadTemplates, STOCK_TEMPLATES } from "../src/text/template.ts";
import { Tokenizer } from "../src/text/tokenizer.ts";
import { writeQwen3cTokenizer } from "../src/formats/tokenizer_file.ts";

const dir = await Deno.makeTempDir({ prefix: "qwen3_side_file_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** The small Qwen3-style tokenizer.json the C fuzzer starts from (726 tokens). */
const MINI_JSON = await Deno.readTextFile(
  new URL("../csrc/fuzz/corpus/fuzz_tokenizer_json/seed_mini_qwen3.json", import.meta.url),
);
const MINI = Tokenizer.fromJson(MINI_JSON, "mini");

let serial = 0;
/** A fresh folder for one case. */
async function caseDir(): Promise<string> {
  const d = `${dir}/case${serial++}`;
  await Deno.mkdir(d);
  return d;
}

async function mkfifo(path: string): Promise<void> {
  const r = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(r.success, `mkfifo ${path}: ${new TextDecoder().decode(r.stderr)}`);
}

/**
 * Runs `body`, which must not block on the FIFO at `fifo`: after `ms` a writer opens and
 * closes it, so a reader stuck on it gets an empty file and the assertions fail instead of
 * the test hanging.
 */
async function withoutBlocking<T>(fifo: string, body: () => Promise<T>, ms = 5000): Promise<T> {
  let fired = false;
  const timer = setTimeout(() => {
    fired = true;
    Deno.open(fifo, { write: true }).then((f) => f.close(), () => {});
  }, ms);
  try {
    return await body();
  } finally {
    clearTimeout(timer);
    assert.ok(!fired, `blocked on the FIFO ${fifo} for ${ms} ms`);
  }
}

/** Asserts that `run` rejects with a Qwen3Error of `code` whose message matches every re. */
async function rejects(run: () => Promise<unknown>, code: string, ...res: RegExp[]) {
  await assert.rejects(run, (e: unknown) => {
    assert.ok(e instanceof Qwen3Error, `not a Qwen3Error: ${e}`);
    assert.equal(e.code, code, e.message);
    for (const re of res) assert.match(e.message, re);
    return true;
  });
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

Deno.test("readSideFile: a FIFO, a device and a directory are refused before any read", async () => {
  const d = await caseDir();
  const opts = { limit: TEMPLATE_FILE_LIMIT, what: "chat template" };
  await mkfifo(`${d}/fifo`);
  await withoutBlocking(`${d}/fifo`, () =>
    rejects(
      () => readSideFile(`${d}/fifo`, opts),
      "io",
      new RegExp(`^${escape(d)}/fifo: cannot read the chat template: it is a FIFO`),
    ));
  // stat follows the link: /dev/zero is a character device, refused without reading it.
  await Deno.symlink("/dev/zero", `${d}/zero`);
  await rejects(() => readSideFile(`${d}/zero`, opts), "io", /zero: .* a character device/);
  await rejects(() => readSideFile(d, opts), "io", /it is a directory, not a regular file/);
  await Deno.symlink(`${d}/loop`, `${d}/loop`);
  await rejects(() => readSideFile(`${d}/loop`, opts), "io", /loop: .*symlink loop/);
  await rejects(() => readSideFile(`${d}/missing`, opts), "io", /missing: .*no such file/);
  assert.equal(await readSideFile(`${d}/missing`, { ...opts, optional: true }), undefined);
  // optional covers a missing file only: a FIFO is still an error.
  await withoutBlocking(
    `${d}/fifo`,
    () => rejects(() => readSideFile(`${d}/fifo`, { ...opts, optional: true }), "io", /FIFO/),
  );
});

Deno.test("readSideFile: the limit is inclusive; one byte over is refused unread", async () => {
  const d = await caseDir();
  const limit = 1000;
  await Deno.writeFile(`${d}/at`, new Uint8Array(limit).fill(0x61));
  await Deno.writeFile(`${d}/over`, new Uint8Array(limit + 1).fill(0x61));
  assert.equal((await readSideFile(`${d}/at`, { limit, what: "x" })).length, limit);
  assert.equal((await readSideText(`${d}/at`, { limit, what: "x" })).length, limit);
  await rejects(
    () => readSideFile(`${d}/over`, { limit, what: "tokenizer" }),
    "format",
    /over: the tokenizer is 1001 bytes, larger than the limit of 1000 bytes/,
  );
  // A byte-order mark is kept, as Deno.readTextFile keeps it.
  await Deno.writeFile(`${d}/bom`, new Uint8Array([0xef, 0xbb, 0xbf, 0x68]));
  assert.equal(await readSideText(`${d}/bom`, { limit, what: "x" }), "\ufeffh");
  // The limits shared with the C engine.
  assert.equal(TEMPLATE_FILE_LIMIT, 65536);
  assert.equal(TOKENIZER_JSON_LIMIT, 64 * 1024 * 1024);
  assert.equal(QWEN3C_TOKENIZER_LIMIT, 64 * 1024 * 1024);
});

Deno.test("templates: FIFO, /dev/zero, oversize and NUL side files are refused", async () => {
  const d = await caseDir();
  const model = `${d}/m.bin`;
  await mkfifo(`${model}.template`);
  await withoutBlocking(
    `${model}.template`,
    () => rejects(() => loadTemplates(model), "io", /m\.bin\.template: .*FIFO/),
  );
  await Deno.remove(`${model}.template`);
  await Deno.symlink("/dev/zero", `${model}.template.with-thinking`);
  await rejects(() => loadTemplates(model), "io", /with-thinking: .*character device/);
  await Deno.remove(`${model}.template.with-thinking`);
  // 64 KiB is allowed, one byte more is not (the C engine's QWEN3_TEMPLATE_MAX_BYTES).
  const big = "%s" + "x".repeat(TEMPLATE_FILE_LIMIT - 2);
  await Deno.writeTextFile(`${model}.template`, big);
  assert.equal((await loadTemplates(model)).plain, big);
  await Deno.writeTextFile(`${model}.template`, big + "x");
  await rejects(() => loadTemplates(model), "format", /larger than the limit of 65536 bytes/);
  await Deno.writeTextFile(`${model}.template`, "a\0b %s");
  await rejects(() => loadTemplates(model), "format", /m\.bin\.template: .*NUL character at 1/);
  await Deno.remove(`${model}.template`);
  assert.deepEqual(await loadTemplates(model), STOCK_TEMPLATES);
});

Deno.test("tokenizer lookup: MODEL.tokenizer.json, then tokenizer.json, then MODEL.tokenizer", async () => {
  const d = await caseDir();
  const model = `${d}/m.bin`;
  await rejects(
    () => Tokenizer.load(model),
    "io",
    new RegExp(
      `no tokenizer for ${escape(model)}: none of ${escape(model)}\\.tokenizer\\.json, ` +
        `${escape(d)}/tokenizer\\.json, ${escape(model)}\\.tokenizer exists`,
    ),
  );
  await Deno.writeFile(`${model}.tokenizer`, writeQwen3cTokenizer(MINI));
  assert.equal((await Tokenizer.load(model)).source, `${model}.tokenizer`);
  await Deno.writeTextFile(`${d}/tokenizer.json`, MINI_JSON);
  assert.equal((await Tokenizer.load(model)).source, `${d}/tokenizer.json`);
  await Deno.writeTextFile(`${model}.tokenizer.json`, MINI_JSON);
  assert.equal((await Tokenizer.load(model)).source, `${model}.tokenizer.json`);
  // Another model in the same folder keeps its own.
  assert.equal((await Tokenizer.load(`${d}/other.bin`)).source, `${d}/tokenizer.json`);
});

Deno.test("tokenizer lookup: a candidate that exists but cannot be used is an error, not skipped", async () => {
  const d = await caseDir();
  const model = `${d}/m.bin`;
  await Deno.writeTextFile(`${d}/tokenizer.json`, MINI_JSON);
  await mkfifo(`${model}.tokenizer.json`);
  await withoutBlocking(`${model}.tokenizer.json`, () =>
    rejects(
      () => Tokenizer.load(model),
      "io",
      new RegExp(`^${escape(model)}\\.tokenizer\\.json: cannot read the tokenizer: it is a FIFO`),
    ));
  await Deno.remove(`${model}.tokenizer.json`);
  await Deno.symlink(`${model}.tokenizer.json`, `${model}.tokenizer.json`);
  await rejects(() => Tokenizer.load(model), "io", /m\.bin\.tokenizer\.json: .*symlink loop/);
  await Deno.remove(`${model}.tokenizer.json`);
  await Deno.symlink("/dev/zero", `${model}.tokenizer.json`);
  await rejects(() => Tokenizer.load(model), "io", /character device/);
  await Deno.remove(`${model}.tokenizer.json`);
  // A dangling link is "no such file": the next candidate is used.
  await Deno.symlink(`${d}/gone`, `${model}.tokenizer.json`);
  assert.equal((await Tokenizer.load(model)).source, `${d}/tokenizer.json`);
  if (Deno.uid() !== 0) { // root reads a mode-000 file anyway
    await Deno.chmod(`${d}/tokenizer.json`, 0);
    await rejects(() => Tokenizer.load(model), "io", /tokenizer\.json: .*permission denied/);
    await Deno.chmod(`${d}/tokenizer.json`, 0o644);
  }
  // Over the 64 MiB limit: refused from its size, without reading it.
  await Deno.remove(`${d}/tokenizer.json`);
  using f = await Deno.open(`${model}.tokenizer`, { write: true, create: true });
  await f.truncate(QWEN3C_TOKENIZER_LIMIT + 1);
  const before = Deno.memoryUsage().rss;
  await rejects(
    () => Tokenizer.load(model),
    "format",
    /m\.bin\.tokenizer: the tokenizer is 67108865 bytes, larger than the limit of 67108864/,
  );
  assert.ok(Deno.memoryUsage().rss - before < 32 << 20, "the oversize file was read");
});

Deno.test("model path: a FIFO, a device or a directory is an io error on both readers", async () => {
  const d = await caseDir();
  await mkfifo(`${d}/fifo.bin`);
  await Deno.symlink("/dev/zero", `${d}/zero.bin`);
  for (const read of [readModel, readGgufMetadata]) {
    await withoutBlocking(`${d}/fifo.bin`, () =>
      rejects(
        () => read(`${d}/fifo.bin`),
        "io",
        new RegExp(`^${escape(d)}/fifo\\.bin: cannot read the model file: it is a FIFO`),
      ));
    await rejects(() => read(`${d}/zero.bin`), "io", /zero\.bin: .*a character device/);
    await rejects(() => read(d), "io", /a directory, not a regular file/);
    await rejects(() => read(`${d}/missing.bin`), "io", /missing\.bin: .*\(no such file\)/);
  }
  // The API on both engines (the CLI checks the path itself; library callers did not).
  for (const engine of ["ts", "c"] as const) {
    await withoutBlocking(`${d}/fifo.bin`, () =>
      rejects(
        () => Qwen3.load(`${d}/fifo.bin`, { engine }),
        "io",
        new RegExp(`^${escape(d)}/fifo\\.bin: cannot read the model file: it is a FIFO`),
      ));
    await rejects(() => Qwen3.load(`${d}/zero.bin`, { engine }), "io", /a character device/);
    await rejects(() => Qwen3.load(d, { engine }), "io", /a directory, not a regular file/);
  }
});
