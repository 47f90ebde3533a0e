/**
 * `qwen3 serve` end to end: the server runs in-process on a free port over the demo model
 * and is spoken to with the official `openai` client (and `fetch` where the SDK has no
 * call). Where the demo model cannot show a behaviour (it never reasons aloud, and it is
 * too fast to disconnect from mid-stream), `model.generate` is replaced by a scripted one.
 */

import assert from "node:assert/strict";
import OpenAI from "openai";
import type { Piece } from "../src/api/generate.ts";
import { demoModelPath } from "../src/api/demo.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import { ReasoningTrim } from "../src/server/completion.ts";
import { renderChatRequest, stockChatTemplate } from "../src/server/prompt.ts";
import type { TemplateMessage } from "../src/server/tools.ts";
import { scriptedModel } from "./helpers/scripted_model.ts";
import { type ServerOptions, startServer } from "../src/server/server.ts";
import { StopFilter } from "../src/server/stop.ts";

const CONTEXT = 256;
const model = await Qwen3.load(await demoModelPath(), { contextLength: CONTEXT });
globalThis.addEventListener("unload", () => model[Symbol.dispose]());

/** Runs `fn` against a fresh server on a free port, then stops it. */
async function withServer(
  opts: ServerOptions,
  fn: (url: string, client: OpenAI, server: ReturnType<typeof startServer>) => Promise<void>,
  on: Qwen3 = model,
): Promise<void> {
  const server = startServer(on, { port: 0, ...opts });
  const client = new OpenAI({
    apiKey: opts.apiKey ?? "none",
    baseURL: `${server.url}/v1`,
    maxRetries: 0,
  });
  try {
    await fn(server.url, client, server);
  } finally {
    await server.shutdown();
  }
}

/** A model whose `generate` streams the given pieces (tests/helpers/scripted_model.ts). */
function scripted(
  pieces: Piece[] | ((signal: AbortSignal | undefined) => AsyncIterable<Piece>),
): Promise<Qwen3> {
  return scriptedModel(pieces, CONTEXT);
}

/** The prompt parts the server renders (the demo model has no Jinja template: Qwen3's). */
function renderConversation(messages: TemplateMessage[], thinking: boolean) {
  const tools = { tools: [], choice: { kind: "auto" as const } };
  return renderChatRequest(stockChatTemplate(), { messages, thinking, tools }).parts;
}

const CONVERSATION = [
  { role: "system" as const, content: "You are terse." },
  { role: "user" as const, content: "What is the sea?" },
  { role: "assistant" as const, content: "Water." },
  { role: "user" as const, content: "And the land?" },
];

Deno.test("chat: greedy reply equals model.generate on the rendered conversation", async () => {
  const tokens = model.tokenizer.encodeParts(
    renderConversation(CONVERSATION, false),
  );
  const expected = model.generate(tokens, { temperature: 0, maxTokens: 24 });
  await expected.complete();
  assert.ok(expected.text.length > 0);

  await withServer({}, async (url, client) => {
    // llama-server's extra field: the SDK sends what it does not know as is.
    const request: OpenAI.ChatCompletionCreateParamsNonStreaming & {
      chat_template_kwargs: { enable_thinking: boolean };
    } = {
      model: "model.bin",
      messages: CONVERSATION,
      temperature: 0,
      max_tokens: 24,
      chat_template_kwargs: { enable_thinking: false },
    };
    const reply = await client.chat.completions.create(request);
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.choices.length, 1);
    assert.equal(reply.choices[0].message.role, "assistant");
    assert.equal(reply.choices[0].message.content, expected.text);
    assert.equal(reply.choices[0].finish_reason, "length");
    assert.deepEqual(reply.usage && { ...reply.usage }, {
      prompt_tokens: tokens.length,
      completion_tokens: 24,
      total_tokens: tokens.length + 24,
      prompt_tokens_details: { cached_tokens: 0 },
    });

    // Streamed: the same text, one id and created, role first, finish_reason last, usage.
    const stream = await client.chat.completions.create({
      ...request,
      stream: true as const,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.ok(chunks.every((c) => c.id === chunks[0].id && c.created === chunks[0].created));
    assert.ok(chunks.every((c) => c.object === "chat.completion.chunk"));
    assert.equal(chunks[0].choices[0].delta.role, "assistant");
    const withChoice = chunks.filter((c) => c.choices.length > 0);
    assert.equal(withChoice.at(-1)!.choices[0].finish_reason, "length");
    assert.ok(withChoice.slice(0, -1).every((c) => c.choices[0].finish_reason === null));
    const text = withChoice.map((c) => c.choices[0].delta.content ?? "").join("");
    assert.equal(text, expected.text);
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage?.completion_tokens, 24);
    // The same prompt again: all of it but the last token comes from the slot's cache.
    assert.equal(last.usage?.prompt_tokens_details?.cached_tokens, tokens.length - 1);

    // The SDK's stream helper accepts the chunks and assembles the same message.
    const helper = client.chat.completions.stream({ ...request, stream: true });
    const final = await helper.finalChatCompletion();
    assert.equal(final.choices[0].message.content, expected.text);
    assert.equal(final.choices[0].finish_reason, "length");

    // reasoning_effort "none" turns thinking off as enable_thinking false does.
    const { chat_template_kwargs: _, ...plain } = request;
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ ...plain, reasoning_effort: "none" }),
    });
    const effort = await res.json();
    assert.equal(effort.choices[0].message.content, expected.text);

    // Content as OpenAI's text parts, and "developer" for "system", render the same prompt.
    const parts = CONVERSATION.map((m) => ({
      role: m.role === "system" ? "developer" : m.role,
      content: [{ type: "text", text: m.content.slice(0, 3) }, {
        type: "text",
        text: m.content.slice(3),
      }],
    }));
    const partsReply = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ ...plain, messages: parts, reasoning_effort: "none" }),
    }).then((r) => r.json());
    assert.equal(partsReply.choices[0].message.content, expected.text);
    assert.equal(partsReply.usage.prompt_tokens, tokens.length);
  });
});

Deno.test("chat: thinking on renders no empty <think> block; never leaks tags", async () => {
  const on = renderConversation([CONVERSATION[1]], true);
  const off = renderConversation([CONVERSATION[1]], false);
  const text = (parts: { text: string }[]) => parts.map((p) => p.text).join("");
  assert.ok(!text(on).includes("<think>"));
  assert.ok(text(off).includes("<think>\n\n</think>"));
  // Earlier assistant turns are rendered as Qwen3's template renders history: no block.
  const history = text(renderConversation(CONVERSATION, false));
  assert.ok(history.includes("assistant\nWater.<|im_end|>\n"), JSON.stringify(history));
  assert.equal(history.split("<think>").length, 2, "only the last turn gets the empty block");

  await withServer({}, async (_url, client) => {
    const reply = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Hi" }],
      temperature: 0,
      max_tokens: 16,
    });
    const content = reply.choices[0].message.content ?? "";
    assert.ok(!content.includes("<think>") && !content.includes("</think>"));
    assert.ok(!content.startsWith("\n"), JSON.stringify(content));
  });
});

Deno.test("chat: reasoning goes to reasoning_content, trimmed, in both reply forms", async () => {
  using thinker = await scripted([
    { kind: "thinking", text: "\n" },
    { kind: "thinking", text: "Let me think" },
    { kind: "thinking", text: " about it.\n" },
    { kind: "answer", text: "\n\n" },
    { kind: "answer", text: "The answer." },
  ]);
  await withServer({}, async (_url, client) => {
    const request = { model: "m", messages: [{ role: "user" as const, content: "Q" }] };
    const reply = await client.chat.completions.create(request);
    const message = reply.choices[0].message as { content: string; reasoning_content?: string };
    assert.equal(message.content, "The answer.");
    assert.equal(message.reasoning_content, "Let me think about it.");
    assert.equal(reply.choices[0].finish_reason, "stop");

    const stream = await client.chat.completions.create({ ...request, stream: true });
    let reasoning = "";
    let content = "";
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string };
      reasoning += delta?.reasoning_content ?? "";
      content += delta?.content ?? "";
    }
    assert.equal(reasoning, "Let me think about it.");
    assert.equal(content, "The answer.");
  }, thinker);
});

Deno.test("chat: a stop string ends the reply and is never split across chunks", async () => {
  using talker = await scripted([
    { kind: "answer", text: "Hello wo" },
    { kind: "answer", text: "rld ST" },
    { kind: "answer", text: "OP and more" },
    { kind: "answer", text: " text" },
  ]);
  await withServer({}, async (_url, client) => {
    const request = {
      model: "m",
      messages: [{ role: "user" as const, content: "Q" }],
      stop: ["STOP"],
    };
    const reply = await client.chat.completions.create(request);
    assert.equal(reply.choices[0].message.content, "Hello world ");
    assert.equal(reply.choices[0].finish_reason, "stop");
    const stream = await client.chat.completions.create({ ...request, stream: true });
    const pieces: string[] = [];
    for await (const chunk of stream) pieces.push(chunk.choices[0]?.delta.content ?? "");
    assert.equal(pieces.join(""), "Hello world ");
    assert.ok(pieces.every((p) => !p.includes("ST")), JSON.stringify(pieces));
  }, talker);
});

Deno.test("stop filter and reasoning trim: held text, flush, kinds", () => {
  const f = new StopFilter(["</end>", "xyz"]);
  assert.equal(f.push("a</e"), "a");
  assert.equal(f.push("nx"), "</en");
  assert.equal(f.push("y"), "");
  assert.equal(f.flush(), "xy");
  const g = new StopFilter(["ab"]);
  assert.equal(g.push("xxab yy"), "xx");
  assert.ok(g.stopped);
  assert.equal(g.push("more"), "");

  const t = new ReasoningTrim();
  const out = [
    { kind: "thinking", text: "\n\n" },
    { kind: "thinking", text: "a \n" },
    { kind: "thinking", text: "b\n" },
    { kind: "answer", text: "\n\n" },
    { kind: "answer", text: " c\n" },
  ].map((d) => t.push(d as Piece)?.text);
  assert.deepEqual(out, [undefined, "a", " \nb", undefined, "c\n"]);
});

Deno.test("completions, models, tokenize and detokenize", async () => {
  const expected = model.generate("The sea", { temperature: 0, maxTokens: 8 });
  await expected.complete();
  await withServer({}, async (url, client) => {
    const reply = await client.completions.create({
      model: "m",
      prompt: "The sea",
      temperature: 0,
      max_tokens: 8,
    });
    assert.equal(reply.object, "text_completion");
    assert.equal(reply.choices[0].text, expected.text);
    assert.equal(reply.choices[0].finish_reason, "length");
    assert.equal(reply.usage?.completion_tokens, 8);

    const stream = await client.completions.create({
      model: "m",
      prompt: "The sea",
      temperature: 0,
      max_tokens: 8,
      stream: true,
    });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    assert.equal(text, expected.text);

    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["model.bin"]);

    const health = await fetch(`${url}/health`);
    assert.deepEqual(await health.json(), { status: "ok" });
    const tok = await fetch(`${url}/tokenize`, {
      method: "POST",
      body: JSON.stringify({ content: "Hello world <|im_end|>" }),
    });
    const { tokens } = await tok.json();
    assert.deepEqual(tokens, model.tokenizer.encode("Hello world <|im_end|>"));
    assert.ok(!tokens.includes(model.specialTokens.imEnd), "user text became a control token");
    const detok = await fetch(`${url}/detokenize`, {
      method: "POST",
      body: JSON.stringify({ tokens }),
    });
    assert.deepEqual(await detok.json(), { content: "Hello world <|im_end|>" });
  });
});

/** An error reply's status and body. */
async function errorOf(res: Response) {
  const body = await res.json();
  assert.equal(typeof body.error.message, "string");
  assert.equal(typeof body.error.type, "string");
  return { status: res.status, ...body.error };
}

Deno.test("errors: bad field, bad JSON, unknown route, oversized body, long prompt", async () => {
  await withServer({ maxBody: 4096 }, async (url, client) => {
    await assert.rejects(
      client.chat.completions.create({
        model: "m",
        messages: [{ role: "user", content: "Hi" }],
        temperature: -1,
      }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError);
        assert.equal(e.status, 400);
        assert.match(e.message, /temperature/);
        return true;
      },
    );
    const post = (path: string, body: string) =>
      fetch(`${url}${path}`, {
        method: "POST",
        body,
        headers: { "content-type": "application/json" },
      });
    const cases: [string, string, number, RegExp][] = [
      ["/v1/chat/completions", "{not json", 400, /not valid JSON/],
      [
        "/v1/chat/completions",
        JSON.stringify({ messages: [{ role: "user", content: "x" }], n: 2 }),
        400,
        /^n:/,
      ],
      [
        "/v1/chat/completions",
        JSON.stringify({ messages: [{ role: "tool", content: "x", tool_call_id: "c" }] }),
        400,
        /messages\[0\]\.role/,
      ],
      [
        "/v1/chat/completions",
        JSON.stringify({ messages: [{ role: "user", content: "x" }], tools: [{}] }),
        400,
        /tools/,
      ],
      ["/v1/completions", JSON.stringify({ prompt: 3 }), 400, /prompt/],
      ["/v1/nope", "{}", 404, /no endpoint POST \/v1\/nope/],
      ["/v1/completions", JSON.stringify({ prompt: "x".repeat(5000) }), 413, /4096 bytes/],
      ["/detokenize", JSON.stringify({ tokens: [1, -2] }), 400, /tokens\[1\]/],
    ];
    for (const [path, body, status, message] of cases) {
      const e = await errorOf(await post(path, body));
      assert.equal(e.status, status, `${path} ${body.slice(0, 80)}`);
      assert.match(e.message, message);
    }
    const long = "the sea and the land ".repeat(60);
    const e = await errorOf(await post("/v1/completions", JSON.stringify({ prompt: long })));
    const n = model.tokenizer.encode(long).length;
    assert.equal(e.status, 400);
    assert.equal(e.code, "context_length_exceeded");
    assert.match(e.message, new RegExp(`${n} tokens.*context length of ${CONTEXT}`));
  });
});

Deno.test("errors: --api-key guards every route but /health", async () => {
  await withServer({ apiKey: "sekret" }, async (url, client) => {
    assert.equal((await fetch(`${url}/health`).then((r) => r.json())).status, "ok");
    const models = await client.models.list();
    assert.equal(models.data.length, 1);
    const wrong = new OpenAI({ apiKey: "sekreT", baseURL: `${url}/v1`, maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => {
      assert.ok(e instanceof OpenAI.AuthenticationError);
      assert.equal(e.status, 401);
      return true;
    });
    const none = await errorOf(await fetch(`${url}/tokenize`, { method: "POST", body: "{}" }));
    assert.equal(none.status, 401);
    assert.equal((await errorOf(await fetch(`${url}/nope`))).status, 401);
  });
});

Deno.test("slots: a full queue is 503; a client that disconnects frees its slot", async () => {
  let aborted = false;
  let closed = false;
  using slow = await scripted(async function* (signal) {
    try {
      for (let i = 0; i < 10_000 && !signal?.aborted; i++) {
        await new Promise((r) => setTimeout(r, 5));
        yield { kind: "answer", text: `w${i} ` };
      }
    } finally {
      closed = true;
      aborted = signal?.aborted ?? false;
    }
  });
  await withServer({ parallel: 1, queue: 0 }, async (url, client, server) => {
    const body = JSON.stringify({ messages: [{ role: "user", content: "Q" }], stream: true });
    const res = await fetch(`${url}/v1/chat/completions`, { method: "POST", body });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    await reader.read();
    assert.equal(server.pool.busy, 1);

    const busy = await fetch(`${url}/v1/chat/completions`, { method: "POST", body });
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get("retry-after"), "1");
    assert.equal((await busy.json()).error.code, "server_busy");

    await reader.cancel();
    for (let i = 0; i < 200 && server.pool.busy > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(server.pool.busy, 0);
    assert.ok(closed && aborted, "the generation was not aborted and closed");

    // The slot serves the next request; a waiting one is queued, not refused.
    const done = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Q" }],
      max_tokens: 3,
    });
    assert.equal(done.choices[0].finish_reason, "length");
  }, slow);
});

/** Waits until `ok()` holds (at most 2 s). */
async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
}

/** A model that writes a word every 5 ms until aborted; `state` tells how it ended. */
async function slowModel() {
  const state = { closed: false, aborted: false };
  const m = await scripted(async function* (signal) {
    state.closed = false;
    try {
      for (let i = 0; i < 10_000 && !signal?.aborted; i++) {
        await new Promise((r) => setTimeout(r, 5));
        yield { kind: "answer", text: `w${i} ` };
      }
    } finally {
      state.closed = true;
      state.aborted = signal?.aborted ?? false;
    }
  });
  return { model: m, state };
}

Deno.test("slots: a request waits in line; a non-streaming client that leaves frees it", async () => {
  const { model: slow, state } = await slowModel();
  using _ = slow;
  await withServer({ parallel: 1, queue: 1 }, async (url, _client, server) => {
    const chat = (extra: object, signal?: AbortSignal) =>
      fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ messages: [{ role: "user", content: "Q" }], ...extra }),
        signal,
      });
    const leaving = new AbortController();
    const first = chat({}, leaving.signal).catch((e) => e);
    await until(() => server.pool.busy === 1);
    const second = chat({ max_tokens: 2 });
    await until(() => server.pool.queued === 1);
    const third = await chat({});
    assert.equal(third.status, 503);
    await third.body?.cancel();

    leaving.abort();
    assert.ok((await first) instanceof Error);
    const served = await second;
    assert.equal(served.status, 200);
    assert.equal((await served.json()).choices[0].message.content, "w0 w1 ");
    await until(() => server.pool.busy === 0);
    assert.equal(server.pool.busy, 0);
  }, slow);
  assert.ok(state.closed);
});

Deno.test("shutdown ends a stream in progress and refuses the line", async () => {
  const { model: slow, state } = await slowModel();
  using _ = slow;
  const server = startServer(slow, { port: 0, queue: 1 });
  const body = JSON.stringify({ messages: [{ role: "user", content: "Q" }], stream: true });
  const res = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", body });
  const waiting = fetch(`${server.url}/v1/chat/completions`, { method: "POST", body });
  await until(() => server.pool.queued === 1);
  await server.shutdown();
  const text = await res.text();
  assert.match(text, /"finish_reason":"stop"[\s\S]*data: \[DONE\]\n\n$/);
  const refused = await waiting;
  assert.equal(refused.status, 503);
  assert.equal((await refused.json()).error.code, "shutting_down");
  assert.ok(state.closed && state.aborted);
});

Deno.test("cli: qwen3 serve --help, a bad flag, and a server stopped by SIGINT", async () => {
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), { args: ["run", "-A", cli, ...args], stdin: "null" });
  const dec = new TextDecoder();
  const help = await run(["serve", "--help"]).output();
  assert.equal(help.code, 0);
  assert.match(dec.decode(help.stdout), /Usage: qwen3 serve \[MODEL\][\s\S]*--api-key KEY/);
  const bad = await run(["serve", "--port", "70000"]).output();
  assert.equal(bad.code, 2);
  assert.match(dec.decode(bad.stderr), /--port must be an integer in 0\.\.65535/);

  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "serve", model.path, "--host", "0.0.0.0", "--port", "0", "-c", "64"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const reader = server.stderr.pipeThrough(new TextDecoderStream()).getReader();
  while (!/serving .* on http:\/\/[^:]+:(\d+)/.test(log)) {
    const { done, value } = await reader.read();
    if (done) break;
    log += value;
  }
  assert.match(log, /warning: listening on 0\.0\.0\.0 exposes the model.*set --api-key/);
  const port = /on http:\/\/[^:]+:(\d+)/.exec(log)![1];
  // It listens while the model loads: 503 {"status": "loading"} until then.
  let health;
  for (let i = 0; i < 400; i++) {
    health = await fetch(`http://127.0.0.1:${port}/health`);
    if (health.status === 200) break;
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { status: "loading" });
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.deepEqual(await health!.json(), { status: "ok" });
  server.kill("SIGINT");
  assert.equal((await server.status).code, 0);
  await reader.cancel();

  // A model that fails to load ends the server with the error.
  const notModel = new URL("../models/demo/README.md", import.meta.url).pathname;
  const failed = await run(["serve", notModel, "--port", "0"]).output();
  assert.equal(failed.code, 1);
  assert.match(
    dec.decode(failed.stderr),
    /serving .* loading the model\n[\s\S]*error: .*README\.md/,
  );
});
