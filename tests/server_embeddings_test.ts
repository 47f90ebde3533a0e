/**
 * `POST /v1/embeddings` end to end over the demo model, spoken to with the official `openai`
 * client (`client.embeddings.create`) and `fetch` for the error cases: the vectors equal
 * `model.embed`'s, float and base64 encodings, token-array inputs, `dimensions`, `usage`,
 * and a 400 naming the field for every bad request. (Agreement with transformers is
 * tests/embed_test.ts's.)
 */

import assert from "node:assert/strict";
import OpenAI from "openai";
import { demoModelPath } from "../src/api/demo.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import { startServer } from "../src/server/server.ts";

const CONTEXT = 64;
const model = await Qwen3.load(await demoModelPath(), { contextLength: CONTEXT });
globalThis.addEventListener("unload", () => model[Symbol.dispose]());

async function withServer(
  fn: (url: string, client: OpenAI) => Promise<void>,
  timeout?: number,
): Promise<void> {
  const server = startServer(model, { port: 0, timeout });
  const client = new OpenAI({ apiKey: "none", baseURL: `${server.url}/v1`, maxRetries: 0 });
  try {
    await fn(server.url, client);
  } finally {
    await server.shutdown();
  }
}

const TEXTS = ["The sea is wide.", "A cat sat on the mat."];

Deno.test("embeddings: openai client, float and base64, equal to model.embed", async () => {
  const want = await model.embed(TEXTS);
  const tokens = TEXTS.map((t) => model.embeddingTokens(t).length);
  await withServer(async (_url, client) => {
    const r = await client.embeddings.create({
      model: "model.bin",
      input: TEXTS,
      encoding_format: "float",
    });
    assert.equal(r.object, "list");
    assert.equal(r.model, "model.bin");
    assert.equal(r.data.length, 2);
    r.data.forEach((d, i) => {
      assert.equal(d.object, "embedding");
      assert.equal(d.index, i);
      assert.deepEqual(Float32Array.from(d.embedding), want[i]);
    });
    assert.deepEqual(r.usage, {
      prompt_tokens: tokens[0] + tokens[1],
      total_tokens: tokens[0] + tokens[1],
    });
    // The SDK asks for base64 when no format is given and decodes it to floats itself.
    const b = await client.embeddings.create({ model: "model.bin", input: TEXTS[1] });
    assert.equal(b.data.length, 1);
    assert.deepEqual(Float32Array.from(b.data[0].embedding), want[1]);
    assert.equal(b.usage.prompt_tokens, tokens[1]);
  });
});

Deno.test("embeddings: dimensions, token arrays, raw base64 bytes", async () => {
  const [full] = await model.embed([TEXTS[0]]);
  const short = await model.embed(TEXTS[0], { dimensions: 32 });
  const ids = model.embeddingTokens(TEXTS[0]);
  await withServer(async (url, client) => {
    const r = await client.embeddings.create({
      model: "model.bin",
      input: TEXTS[0],
      dimensions: 32,
      encoding_format: "float",
    });
    assert.deepEqual(Float32Array.from(r.data[0].embedding), short);
    // token ids: as given, with <|endoftext|> appended unless already last
    for (const input of [ids, ids.slice(0, -1), [ids, ids.slice(0, -1)]]) {
      const t = await client.embeddings.create({
        model: "model.bin",
        input,
        encoding_format: "float",
      });
      for (const d of t.data) assert.deepEqual(Float32Array.from(d.embedding), full);
      assert.equal(t.usage.total_tokens, ids.length * t.data.length);
    }
    // base64 is the little-endian float32 bytes
    const res = await fetch(`${url}/v1/embeddings`, {
      method: "POST",
      body: JSON.stringify({ input: TEXTS[0], encoding_format: "base64" }),
    });
    const body = await res.json();
    const bytes = Uint8Array.from(atob(body.data[0].embedding), (c) => c.charCodeAt(0));
    const view = new DataView(bytes.buffer);
    const decoded = Float32Array.from(
      { length: bytes.length / 4 },
      (_, i) => view.getFloat32(i * 4, true),
    );
    assert.deepEqual(decoded, full);
  });
});

Deno.test("embeddings: bad requests are 400s naming the field", async () => {
  const vocab = model.config.vocabSize;
  const cases: [unknown, string, string][] = [
    [{}, "input", "required"],
    [{ input: 3 }, "input", "array of strings"],
    [{ input: [] }, "input", "must not be empty"],
    [{ input: "" }, "input", "empty string"],
    [{ input: ["a", ""] }, "input[1]", "empty string"],
    [{ input: ["a", 3] }, "input", "array of strings"],
    [{ input: [[1, 2], []] }, "input[1]", "must not be empty"],
    [{ input: [1, vocab] }, "input[1]", `0..${vocab - 1}`],
    [{ input: [1, 2.5] }, "input[1]", "token id"],
    [{ input: "a", encoding_format: "int8" }, "encoding_format", '"int8"'],
    [{ input: "a", dimensions: 0 }, "dimensions", `1..${model.config.dim}`],
    [{ input: "a", dimensions: model.config.dim + 1 }, "dimensions", "got"],
    [{ input: "a", dimensions: "8" }, "dimensions", '"8"'],
    [{ input: "a", model: 5 }, "model", "string"],
    [{ input: "a", instruction: 5 }, "instruction", "string"],
    [{ input: ["a", "word ".repeat(CONTEXT)] }, "input[1]", `context length ${CONTEXT}`],
  ];
  await withServer(async (url) => {
    for (const [body, param, fragment] of cases) {
      const res = await fetch(`${url}/v1/embeddings`, {
        method: "POST",
        body: JSON.stringify(body),
      });
      const e = (await res.json()).error;
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(e.param, param, JSON.stringify(body));
      assert.ok(e.message.includes(fragment), `${JSON.stringify(body)}: ${e.message}`);
    }
  });
});

Deno.test("embeddings: instruction (extension) gives the query format's vector", async () => {
  const instruction = "Given a question, retrieve passages that answer it";
  const want = await model.embed("Where do fish live?", { instruction });
  await withServer(async (url) => {
    const res = await fetch(`${url}/v1/embeddings`, {
      method: "POST",
      body: JSON.stringify({ input: "Where do fish live?", instruction }),
    });
    const body = await res.json();
    assert.deepEqual(Float32Array.from(body.data[0].embedding), want);
    assert.equal(
      body.usage.prompt_tokens,
      model.embeddingTokens("Where do fish live?", instruction).length,
    );
  });
});

Deno.test("embeddings: the server's timeout ends a long request with a 503", async () => {
  await withServer(async (url) => {
    const res = await fetch(`${url}/v1/embeddings`, {
      method: "POST",
      body: JSON.stringify({ input: Array.from({ length: 200 }, (_, i) => `text ${i}`) }),
    });
    const e = (await res.json()).error;
    assert.equal(res.status, 503);
    assert.equal(e.code, "timeout");
    assert.match(e.message, /timeout of 0\.001 s/);
    assert.equal(res.headers.get("retry-after"), "1");
  }, 0.001);
});
