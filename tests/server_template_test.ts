/**
 * `qwen3 serve`'s prompts against Hugging Face transformers' `apply_chat_template` (the
 * fixtures under tests/fixtures/chat_templates/, recorded by tools/chat_template_fixtures.py),
 * byte for byte, through `POST /apply-template` and the chat endpoint; the model loading
 * behind `GET /health`; and the request limits (`--max-messages`, `--timeout`).
 */

import assert from "node:assert/strict";
import type { Piece } from "../src/api/generate.ts";
import type { Qwen3 } from "../src/api/qwen3.ts";
import { loadChatTemplate } from "../src/server/prompt.ts";
import { type ServerOptions, startServer } from "../src/server/server.ts";
import { type ScriptedModel, scriptedModel } from "./helpers/scripted_model.ts";

const CONTEXT = 1024;
const FIXTURES = new URL("./fixtures/chat_templates/", import.meta.url);

interface Fixture {
  request: Record<string, unknown> & { messages: unknown[] };
  template: string;
  prompt: string;
}

const fixtures: [string, Fixture][] = [];
for (const e of Deno.readDirSync(FIXTURES)) {
  if (!e.name.endsWith(".json")) continue;
  fixtures.push([e.name, JSON.parse(Deno.readTextFileSync(new URL(e.name, FIXTURES)))]);
}
fixtures.sort(([a], [b]) => a.localeCompare(b));

async function withServer(
  m: Qwen3 | Promise<Qwen3>,
  opts: ServerOptions,
  fn: (url: string, server: ReturnType<typeof startServer>) => Promise<void>,
): Promise<void> {
  const server = startServer(m, { port: 0, log: () => {}, ...opts });
  try {
    await fn(server.url, server);
  } finally {
    await server.shutdown();
  }
}

function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(url, { method: "POST", body: JSON.stringify(body), headers });
}

Deno.test("templates: /apply-template and the chat prompt equal transformers' text", async () => {
  assert.ok(fixtures.length >= 10, "the fixtures are committed");
  using m: ScriptedModel = await scriptedModel([{ kind: "answer", text: "ok" }], CONTEXT);
  const imEnd = m.tokenizer.tokenId("<|im_end|>")!;
  for (const template of ["qwen3", "custom.jinja"]) {
    const chatTemplateFile = template === "qwen3"
      ? undefined
      : new URL(template, FIXTURES).pathname;
    await withServer(m, { chatTemplateFile }, async (url) => {
      for (const [name, f] of fixtures.filter(([, f]) => f.template === template)) {
        const shown = await post(`${url}/apply-template`, f.request);
        assert.equal(shown.status, 200, name);
        assert.equal((await shown.json()).prompt, f.prompt, name);

        const before = m.prompts.length;
        const res = await post(`${url}/v1/chat/completions`, { ...f.request, max_tokens: 4 });
        assert.equal(res.status, 200, `${name}: ${await res.clone().text()}`);
        await res.body?.cancel();
        const ids = m.prompts[before];
        assert.equal(m.tokenizer.decode(ids), f.prompt, name);
        // Control tokens only where the template wrote them: `<|im_end|>` typed in a
        // message stays text, so it counts once per message here, not once per spelling.
        const written = f.prompt.split("<|im_end|>").length - 1;
        const typed = JSON.stringify(f.request).split("<|im_end|>").length - 1;
        assert.equal(ids.filter((t) => t === imEnd).length, written - typed, name);
      }
    });
  }
});

Deno.test("health: 503 loading while the model loads, then 200; a failed load ends it", async () => {
  using m = await scriptedModel([{ kind: "answer", text: "ok" }], CONTEXT);
  const { promise, resolve } = Promise.withResolvers<Qwen3>();
  await withServer(promise, {}, async (url, server) => {
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { status: "loading" });
    const chat = await post(`${url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "Hi" }],
    });
    assert.equal(chat.status, 503);
    assert.equal(chat.headers.get("retry-after"), "5");
    assert.equal((await chat.json()).error.code, "loading");
    // Unknown routes are still 404s.
    assert.equal(await fetch(`${url}/nope`).then((r) => (r.body?.cancel(), r.status)), 404);
    assert.equal(server.chatTemplate, undefined);
    resolve(m);
    await server.ready;
    assert.equal(server.chatTemplate, "the stock Qwen3 chat template");
    const ok = await fetch(`${url}/health`);
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { status: "ok" });
    const models = await fetch(`${url}/v1/models`).then((r) => r.json());
    assert.equal(models.data[0].id, "model.bin");
  });

  const failing = startServer(Promise.reject(new Error("no such model: x.gguf")), {
    port: 0,
    log: () => {},
  });
  await assert.rejects(failing.ready, /no such model: x\.gguf/);
  await assert.rejects(failing.finished, /no such model: x\.gguf/);
});

Deno.test("limits: --max-messages, reserved template kwargs; --timeout ends as length", async () => {
  // A model that writes a piece every 20 ms until its signal fires (after `holdMs` of
  // deaf silence).
  let holdMs = 0;
  const slow = async function* (signal: AbortSignal | undefined): AsyncIterable<Piece> {
    if (holdMs > 0) await new Promise((r) => setTimeout(r, holdMs));
    for (let i = 0; !signal?.aborted; i++) {
      await new Promise((r) => setTimeout(r, 20));
      if (!signal?.aborted) yield { kind: "answer", text: `w${i} ` };
    }
  };
  using m = await scriptedModel(slow, CONTEXT);
  const log: string[] = [];
  const opts = { maxMessages: 3, timeout: 0.3, log: (l: string) => log.push(l) };
  await withServer(m, opts, async (url) => {
    const four = [1, 2, 3, 4].map((i) => ({ role: i % 2 ? "user" : "assistant", content: "x" }));
    for (const route of ["/v1/chat/completions", "/apply-template"]) {
      const res = await post(`${url}${route}`, { messages: four.concat([four[0]]) });
      assert.equal(res.status, 400);
      const { error } = await res.json();
      assert.equal(error.param, "messages");
      assert.match(error.message, /at most 3 messages per request .*--max-messages.*, got 5/);
    }

    // chat_template_kwargs may not set what the server sets.
    const reserved = await post(`${url}/apply-template`, {
      messages: [{ role: "user", content: "x" }],
      chat_template_kwargs: { add_generation_prompt: false },
    });
    assert.equal(reserved.status, 400);
    assert.equal((await reserved.json()).error.param, "chat_template_kwargs.add_generation_prompt");

    const request = { messages: [{ role: "user", content: "Go on forever." }] };
    const started = performance.now();
    const whole = await post(`${url}/v1/chat/completions`, request).then((r) => r.json());
    const took = performance.now() - started;
    assert.ok(took >= 250 && took < 3000, `${took} ms`);
    assert.equal(whole.choices[0].finish_reason, "length");
    assert.match(whole.choices[0].message.content, /^w0 w1 /);
    assert.equal(
      whole.usage.completion_tokens,
      whole.choices[0].message.content.split(" ").length - 1,
    );
    assert.match(
      log[0],
      /^chatcmpl-\w+: stopped at the --timeout deadline \(0\.3 s\) after \d+ generated tokens/,
    );

    // Streamed: the text so far, then the closing chunk with "length", then [DONE].
    const text = await post(`${url}/v1/chat/completions`, { ...request, stream: true })
      .then((r) => r.text());
    const events = text.split("\n\n").filter((e) => e !== "").map((e) => e.slice(6));
    assert.equal(events.at(-1), "[DONE]");
    assert.equal(JSON.parse(events.at(-2)!).choices[0].finish_reason, "length");
    assert.equal(log.length, 2);

    // A request still waiting for the slot at its deadline is a 503 with Retry-After.
    holdMs = 700;
    const first = post(`${url}/v1/chat/completions`, request);
    await new Promise((r) => setTimeout(r, 50));
    const second = await post(`${url}/v1/chat/completions`, request);
    assert.equal(second.status, 503);
    assert.equal(second.headers.get("retry-after"), "1");
    assert.match((await second.json()).error.message, /no slot came free within .* 0\.3 s/);
    assert.equal((await first.then((r) => r.json())).choices[0].finish_reason, "length");
  });
});

Deno.test("templates: found in a GGUF, a Hugging Face folder beside the model, else Qwen3's", async () => {
  const at = (path: string) => new URL(path, import.meta.url).pathname;
  const cases: [string, RegExp][] = [
    ["../models/demo/model-q8_0.gguf", /model-q8_0\.gguf \(tokenizer\.chat_template\)$/],
    [
      "./fixtures/hf_tiny_tied_f32_sharded/config.json",
      /hf_tiny_tied_f32_sharded\/chat_template\.jinja$/,
    ],
    ["./fixtures/hf_tiny_tied_bf16/config.json", /hf_tiny_tied_bf16\/tokenizer_config\.json$/],
    ["../models/demo/model.bin", /^the stock Qwen3 chat template$/],
  ];
  for (const [path, file] of cases) {
    assert.match((await loadChatTemplate({ path: at(path) })).file, file);
  }
  const custom = await loadChatTemplate({ path: at("../models/demo/model.bin") }, {
    file: at("./fixtures/chat_templates/custom.jinja"),
  });
  assert.match(custom.file, /custom\.jinja$/);
  await assert.rejects(
    loadChatTemplate({ path: at("../models/demo/model.bin") }, { file: at("./nope.jinja") }),
    /nope\.jinja: cannot read the chat template/,
  );
  // A model's template that does not parse is replaced by Qwen3's, with a note.
  const dir = await Deno.makeTempDir({ prefix: "qwen3_template_" });
  try {
    await Deno.writeTextFile(`${dir}/chat_template.jinja`, "{% for m in messages %}");
    await Deno.writeTextFile(`${dir}/model.bin`, "not read");
    const notes: string[] = [];
    const t = await loadChatTemplate({ path: `${dir}/model.bin` }, { note: (l) => notes.push(l) });
    assert.equal(t.file, "the stock Qwen3 chat template");
    assert.match(
      notes[0],
      /chat_template\.jinja: chat_template does not parse .*; using the stock/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
