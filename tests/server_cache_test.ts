/**
 * The server's prompt cache, `/metrics` and CORS, against the demo model in-process: a
 * conversation sent turn by turn gets the same greedy replies with the cache as without
 * it, while its later turns prefill only what is new.
 */

import assert from "node:assert/strict";
import OpenAI from "openai";
import { demoModelPath } from "../src/api/demo.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import { commonPrefix, PromptCache } from "../src/server/prompt_cache.ts";
import { type ServerOptions, startServer } from "../src/server/server.ts";

const model = await Qwen3.load(await demoModelPath(), { contextLength: 512 });
globalThis.addEventListener("unload", () => model[Symbol.dispose]());

async function withServer(
  opts: ServerOptions,
  fn: (url: string, client: OpenAI) => Promise<void>,
): Promise<void> {
  const server = startServer(model, { port: 0, ...opts });
  const client = new OpenAI({ apiKey: "none", baseURL: `${server.url}/v1`, maxRetries: 0 });
  try {
    await fn(server.url, client);
  } finally {
    await server.shutdown();
  }
}

type Message = OpenAI.ChatCompletionMessageParam;
const QUESTIONS = [
  ["What is the sea?", "And the land?", "Which is larger?"],
  ["Tell me about cats.", "Do they swim?", "Why not?"],
];

/**
 * Sends each conversation of QUESTIONS turn by turn, the conversations interleaved (turn 1
 * of each, then turn 2 of each, ...), and returns each reply with its cached tokens.
 */
async function converse(
  client: OpenAI,
  stream: boolean,
): Promise<{ text: string; prompt: number; cached: number }[][]> {
  const histories: Message[][] = QUESTIONS.map(() => [{ role: "system", content: "Be brief." }]);
  const replies: { text: string; prompt: number; cached: number }[][] = QUESTIONS.map(() => []);
  for (let turn = 0; turn < QUESTIONS[0].length; turn++) {
    for (let c = 0; c < QUESTIONS.length; c++) {
      histories[c].push({ role: "user", content: QUESTIONS[c][turn] });
      // llama-server's extra field: the SDK sends what it does not know as is.
      const request: OpenAI.ChatCompletionCreateParamsNonStreaming & {
        chat_template_kwargs: { enable_thinking: boolean };
      } = {
        model: "m",
        messages: [...histories[c]],
        temperature: 0,
        max_tokens: 20,
        chat_template_kwargs: { enable_thinking: false },
      };
      let text = "";
      let usage: OpenAI.CompletionUsage | undefined;
      if (stream) {
        const chunks = await client.chat.completions.create({
          ...request,
          stream: true as const,
          stream_options: { include_usage: true },
        });
        for await (const chunk of chunks) {
          text += chunk.choices[0]?.delta.content ?? "";
          usage ??= chunk.usage ?? undefined;
        }
      } else {
        const reply = await client.chat.completions.create(request);
        text = reply.choices[0].message.content ?? "";
        usage = reply.usage;
      }
      histories[c].push({ role: "assistant", content: text });
      replies[c].push({
        text,
        prompt: usage!.prompt_tokens,
        cached: usage!.prompt_tokens_details!.cached_tokens!,
      });
    }
  }
  return replies;
}

Deno.test("prompt cache: turn-by-turn greedy replies equal uncached ones", async () => {
  let fresh: Awaited<ReturnType<typeof converse>> = [];
  await withServer({ parallel: 2, promptCache: false }, async (_url, client) => {
    fresh = await converse(client, false);
  });
  assert.ok(fresh.flat().every((r) => r.cached === 0 && r.text.length > 0));
  for (const stream of [false, true]) {
    await withServer({ parallel: 2 }, async (_url, client) => {
      const cached = await converse(client, stream);
      assert.deepEqual(
        cached.map((c) => c.map((r) => r.text)),
        fresh.map((c) => c.map((r) => r.text)),
      );
      // Qwen3's template gives only the last turn the empty thinking block: history has none.
      const block = model.tokenizer.encode("<think>\n\n</think>\n\n", { special: true }).length;
      for (const c of cached) {
        assert.equal(c[0].cached, 0);
        // Each conversation kept its own slot: a later turn reuses the earlier prompt.
        for (let t = 1; t < c.length; t++) {
          assert.equal(c[t].cached, c[t - 1].prompt - block, `turn ${t}: ${JSON.stringify(c)}`);
          assert.ok(c[t].cached < c[t].prompt);
        }
      }
    });
  }
});

Deno.test("prompt cache: common prefix and slot choice", () => {
  assert.equal(commonPrefix([1, 2, 3], [1, 2, 4]), 2);
  assert.equal(commonPrefix([], [1]), 0);
  assert.equal(commonPrefix([1, 2], [1, 2, 3]), 2);
  using cache = new PromptCache(model, 3, true);
  // Nothing held yet: the least recently used slot, any of them.
  assert.ok([0, 1, 2].includes(cache.pick([0, 1, 2], [1, 2, 3])));
});

Deno.test("prompt cache: a slot is picked for a long shared prefix, not a short one", async () => {
  using cache = new PromptCache(model, 2, true);
  const a = model.tokenizer.encode("Once upon a time there was a cat by the sea");
  const run = cache.generate(1, a, { temperature: 0, maxTokens: 3 });
  await run.complete();
  // Slot 1 holds the prompt and the sampled tokens fed after it (the last one is not fed).
  assert.deepEqual(cache.held(1), [...a, ...run.tokens.slice(0, -1)]);
  assert.equal(cache.pick([0, 1], [...a, 7]), 1);
  // Sharing 3 tokens, under half of what slot 1 holds: not worth evicting; slot 0 is older.
  assert.equal(cache.pick([0, 1], [...a.slice(0, 3), 7]), 0);
  // Only slot 1 free: it is taken anyway, and reuses what it shares.
  assert.equal(cache.pick([1], [...a.slice(0, 3), 7]), 1);
  const again = cache.generate(1, [...a.slice(0, 3), 7], { temperature: 0, maxTokens: 1 });
  await again.complete();
  assert.equal(again.stats?.startPosition, 3);
});

Deno.test("metrics: 404 when off; counters, speeds and slots when on", async () => {
  await withServer({}, async (url) => {
    const res = await fetch(`${url}/metrics`);
    assert.equal(res.status, 404);
    await res.body?.cancel();
  });
  await withServer({ metrics: true }, async (url, client) => {
    const reply = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Hi" }],
      temperature: 0,
      max_tokens: 5,
    });
    await (await fetch(`${url}/nowhere`)).body?.cancel();
    const res = await fetch(`${url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const value = (name: string) => {
      const line = text.split("\n").find((l) => l.startsWith(name + " "));
      assert.ok(line, `${name} in ${text}`);
      return Number(line.split(" ")[1]);
    };
    assert.match(
      text,
      /^qwen3_requests_total\{endpoint="\/v1\/chat\/completions",status="200"\} 1$/m,
    );
    assert.match(text, /^qwen3_requests_total\{endpoint="other",status="404"\} 1$/m);
    assert.match(text, /^# TYPE qwen3_prompt_tokens_total counter$/m);
    assert.equal(value("qwen3_prompt_tokens_total"), reply.usage!.prompt_tokens);
    assert.equal(value("qwen3_generated_tokens_total"), reply.usage!.completion_tokens);
    assert.ok(value("qwen3_prefill_tokens_per_second") > 0);
    assert.ok(value("qwen3_decode_tokens_per_second") > 0);
    assert.equal(value("qwen3_slots_busy"), 0);
    assert.equal(value("qwen3_slots_total"), 1);
    assert.equal(value("qwen3_queue_length"), 0);
  });
});

Deno.test("cors: no headers unless --cors; then the origin and a preflight answer", async () => {
  await withServer({}, async (url) => {
    const res = await fetch(`${url}/health`);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    await res.body?.cancel();
    const pre = await fetch(`${url}/v1/chat/completions`, { method: "OPTIONS" });
    assert.equal(pre.status, 405);
    await pre.body?.cancel();
  });
  const origin = "http://localhost:5173";
  await withServer({ cors: origin, apiKey: "k" }, async (url) => {
    const pre = await fetch(`${url}/v1/chat/completions`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), origin);
    assert.match(pre.headers.get("access-control-allow-methods") ?? "", /POST/);
    assert.match(pre.headers.get("access-control-allow-headers") ?? "", /Authorization/);
    assert.match(pre.headers.get("access-control-allow-headers") ?? "", /Content-Type/);
    await pre.body?.cancel();
    // Real requests carry the origin, errors included (here: no API key).
    const denied = await fetch(`${url}/v1/models`, { headers: { origin } });
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get("access-control-allow-origin"), origin);
    await denied.body?.cancel();
    const ok = await fetch(`${url}/v1/models`, { headers: { origin, authorization: "Bearer k" } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("access-control-allow-origin"), origin);
    await ok.body?.cancel();
  });
});
