/**
 * Tool calls on `qwen3 serve`, spoken to with the official `openai` client: the prompt
 * equals Qwen3's real chat template (tests/fixtures' chat_template.jinja, rendered by
 * @huggingface/jinja, whose `tojson` writes Python's separators), and the model's
 * `<tool_call>` output becomes `tool_calls`. The demo model never calls a tool, so
 * `model.generate` is replaced by a scripted one that does.
 */

import assert from "node:assert/strict";
import OpenAI from "openai";
// deno-lint-ignore no-import-prefix
import { Template } from "npm:@huggingface/jinja@0.5.11";
import type { Piece } from "../src/api/generate.ts";
import type { Qwen3 } from "../src/api/qwen3.ts";
import { renderChatRequest, stockChatTemplate } from "../src/server/prompt.ts";
import { type ScriptedModel, scriptedModel } from "./helpers/scripted_model.ts";
import { startServer } from "../src/server/server.ts";
import { type ChatDelta, ToolCallParser } from "../src/server/tools.ts";
import { parseChatRequest } from "../src/server/validate.ts";

const CONTEXT = 512;
const QWEN3_TEMPLATE = await Deno.readTextFile(
  new URL("./fixtures/hf_tiny_tied_f32_sharded/chat_template.jinja", import.meta.url),
);

/** A model whose `generate` streams `pieces`, a token each, and records each prompt. */
function scripted(pieces: Piece[]): Promise<ScriptedModel> {
  return scriptedModel(pieces, CONTEXT);
}

async function withServer(
  m: Qwen3,
  fn: (url: string, client: OpenAI) => Promise<void>,
): Promise<void> {
  const server = startServer(m, { port: 0 });
  const client = new OpenAI({ apiKey: "none", baseURL: `${server.url}/v1`, maxRetries: 0 });
  try {
    await fn(server.url, client);
  } finally {
    await server.shutdown();
  }
}

const WEATHER: OpenAI.ChatCompletionTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city, now. «Quoted» text stays.",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, days: { type: "integer", minimum: 1 } },
      required: ["city"],
    },
  },
};

/** The model's reply: a little reasoning, then two calls, as Qwen3 writes them. */
const CALLS: Piece[] = [
  { kind: "thinking", text: "\nWeather, twice.\n" },
  { kind: "answer", text: "\n\n" },
  { kind: "answer", text: "<tool_call>" },
  { kind: "answer", text: '\n{"name": "get_weather", "arguments": {"city": "Par' },
  { kind: "answer", text: 'is"}}\n' },
  { kind: "answer", text: "</tool_call>" },
  { kind: "answer", text: "\n<tool_" },
  { kind: "answer", text: 'call>\n{"name": "get_weather", "arguments": {"city": "Oslo", ' },
  { kind: "answer", text: '"days": 2}}\n</tool_call>' },
];

/** Renders the real Qwen3 template (as Hugging Face would) over OpenAI-shaped messages. */
function reference(
  messages: unknown[],
  tools: unknown[] | undefined,
  thinking = true,
): string {
  // Clients send null content beside tool calls; servers read it as "" (Jinja cannot add null).
  return new Template(QWEN3_TEMPLATE).render({
    messages: messages.map((m) => {
      const x = m as { content?: unknown };
      return x.content == null ? { ...x, content: "" } : m;
    }),
    tools,
    add_generation_prompt: true,
    enable_thinking: thinking,
  });
}

function promptOf(body: Record<string, unknown>): string {
  const req = parseChatRequest(body);
  return renderChatRequest(stockChatTemplate(), req).parts.map((p) => p.text).join("");
}

const ROUND_TRIP: OpenAI.ChatCompletionMessageParam[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Weather in Paris and Oslo?" },
  {
    role: "assistant",
    content: null,
    tool_calls: [
      {
        id: "call_1",
        type: "function",
        function: { name: "get_weather", arguments: '{"city": "Paris"}' },
      },
      {
        id: "call_2",
        type: "function",
        function: { name: "get_weather", arguments: '{"city": "Oslo", "days": 2}' },
      },
    ],
  },
  { role: "tool", tool_call_id: "call_1", content: "18 C, sun" },
  { role: "tool", tool_call_id: "call_2", content: "4 C, snow" },
];

Deno.test("tools: the prompt equals Qwen3's chat template, text for text", () => {
  const cases: [unknown[], unknown[] | undefined, boolean][] = [
    [[{ role: "user", content: "Hi" }], [WEATHER], true],
    [[{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }], [WEATHER], false],
    [ROUND_TRIP, [WEATHER], true],
    [ROUND_TRIP, undefined, false],
    [
      [
        ...ROUND_TRIP,
        { role: "assistant", content: "Sun in Paris.", reasoning_content: "Easy." },
        { role: "user", content: "Thanks" },
      ],
      [WEATHER],
      true,
    ],
    [
      [
        { role: "user", content: "Go" },
        {
          role: "assistant",
          content: "Calling.",
          tool_calls: (ROUND_TRIP[2] as { tool_calls: unknown }).tool_calls,
        },
        { role: "tool", tool_call_id: "call_1", content: "ok" },
      ],
      [WEATHER, { type: "function", function: { name: "noop", parameters: {} } }],
      true,
    ],
  ];
  for (const [messages, tools, thinking] of cases) {
    const body = {
      messages,
      tools,
      chat_template_kwargs: { enable_thinking: thinking },
    };
    // OpenAI sends arguments as JSON text; the template writes text as it is.
    assert.equal(promptOf(body), reference(messages, tools, thinking));
  }
  // A plain conversation renders as before (the model's printf templates).
  const plain = [{ role: "system", content: "S" }, { role: "user", content: "Hi" }];
  assert.equal(promptOf({ messages: plain }), reference(plain, undefined));
});

Deno.test("tools: a round trip with the SDK, JSON and streamed", async () => {
  using m = await scripted(CALLS);
  await withServer(m, async (url, client) => {
    const request = {
      model: "m",
      messages: ROUND_TRIP.slice(0, 2),
      tools: [WEATHER],
    };
    const reply = await client.chat.completions.create(request);
    const choice = reply.choices[0];
    assert.equal(choice.finish_reason, "tool_calls");
    assert.equal(choice.message.content, null);
    assert.equal(
      (choice.message as { reasoning_content?: string }).reasoning_content,
      "Weather, twice.",
    );
    const calls = choice.message.tool_calls!.map((c) => {
      assert.equal(c.type, "function");
      assert.match(c.id, /^call_/);
      return c.type === "function" ? [c.function.name, JSON.parse(c.function.arguments)] : [];
    });
    assert.deepEqual(calls, [
      ["get_weather", { city: "Paris" }],
      ["get_weather", { city: "Oslo", days: 2 }],
    ]);
    // The prompt declared the tool as Qwen3's template does.
    const prompt = m.tokenizer.decode(m.prompts[0]);
    assert.equal(prompt, reference(request.messages, request.tools));

    // The next request: the calls and their results, rendered as the template renders them.
    const next = [...ROUND_TRIP];
    await client.chat.completions.create({ ...request, messages: next });
    assert.equal(m.tokenizer.decode(m.prompts[1]), reference(next, request.tools));

    // /apply-template shows the same text.
    const shown = await fetch(`${url}/apply-template`, {
      method: "POST",
      body: JSON.stringify({ messages: next, tools: [WEATHER] }),
    });
    assert.deepEqual(await shown.json(), { prompt: reference(next, request.tools) });

    // Streamed: name first, then arguments; never `<tool_call>` in content.
    const stream = await client.chat.completions.create({ ...request, stream: true });
    const deltas: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
    let content = "";
    let finish = "";
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      content += c.delta.content ?? "";
      deltas.push(...(c.delta.tool_calls ?? []));
      finish = c.finish_reason ?? finish;
    }
    assert.equal(content, "");
    assert.equal(finish, "tool_calls");
    // Each call: a head (index, id, type, name), then its arguments in fragments.
    const heads = deltas.filter((d) => d.id !== undefined);
    assert.deepEqual(heads.map((d) => [d.index, d.type, d.function?.name]), [
      [0, "function", "get_weather"],
      [1, "function", "get_weather"],
    ]);
    assert.ok(heads.every((d) => /^call_/.test(d.id!) && d.function?.arguments === ""));
    assert.ok(deltas.indexOf(heads[1]) > 2, "the first call's arguments came in fragments");
    const args = [0, 1].map((i) =>
      JSON.parse(deltas.filter((d) => d.index === i).map((d) => d.function?.arguments).join(""))
    );
    assert.deepEqual(args, [{ city: "Paris" }, { city: "Oslo", days: 2 }]);

    // The SDK's stream helper assembles the same calls.
    const helper = client.chat.completions.stream({ ...request, stream: true });
    const final = await helper.finalChatCompletion();
    const message = final.choices[0].message;
    assert.equal(final.choices[0].finish_reason, "tool_calls");
    assert.deepEqual(
      message.tool_calls?.map((c) => c.type === "function" && JSON.parse(c.function.arguments)),
      [{ city: "Paris" }, { city: "Oslo", days: 2 }],
    );
    assert.ok(!(message.content ?? "").includes("tool_call"));
  });
});

Deno.test("tools: tool_choice none leaves them out; required and a named one force a call", async () => {
  using m = await scripted([{ kind: "answer", text: '<tool_call>\n{"name": "x"}\n</tool_call>' }]);
  await withServer(m, async (_url, client) => {
    const messages = [{ role: "user" as const, content: "Hi" }];
    const reply = await client.chat.completions.create({
      model: "m",
      messages,
      tools: [WEATHER],
      tool_choice: "none",
    });
    // No tools in the prompt, and the text is not parsed: it stays content.
    assert.equal(m.tokenizer.decode(m.prompts[0]), reference(messages, undefined));
    assert.equal(reply.choices[0].finish_reason, "stop");
    assert.match(reply.choices[0].message.content!, /^<tool_call>/);
    assert.equal(reply.choices[0].message.tool_calls, undefined);
  });

  // Forced: the prompt ends with the call's opening, the model writes the arguments.
  using forced = await scripted([{ kind: "answer", text: '{"city": "Rome"}}\n</tool_call>' }]);
  await withServer(forced, async (_url, client) => {
    const messages = [{ role: "user" as const, content: "Hi" }];
    const reply = await client.chat.completions.create({
      model: "m",
      messages,
      tools: [WEATHER],
      tool_choice: { type: "function", function: { name: "get_weather" } },
    });
    assert.equal(
      forced.tokenizer.decode(forced.prompts[0]),
      reference(messages, [WEATHER]) +
        '<think>\n\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": ',
    );
    const call = reply.choices[0].message.tool_calls![0];
    assert.equal(reply.choices[0].finish_reason, "tool_calls");
    assert.ok(call.type === "function");
    assert.equal(call.function.name, "get_weather");
    assert.deepEqual(JSON.parse(call.function.arguments), { city: "Rome" });
  });

  // Required, thinking off: the call's opening follows the template's own empty think block.
  using required = await scripted([{
    kind: "answer",
    text: CALLS.slice(3).map((p) => p.text).join(""),
  }]);
  await withServer(required, async (_url, client) => {
    const messages = [{ role: "user" as const, content: "Hi" }];
    const reply = await client.chat.completions.create({
      model: "m",
      messages,
      tools: [WEATHER],
      tool_choice: "required",
      reasoning_effort: "none",
    } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.equal(
      required.tokenizer.decode(required.prompts[0]),
      reference(messages, [WEATHER], false) + "<tool_call>\n",
    );
    assert.equal(reply.choices[0].finish_reason, "tool_calls");
    assert.deepEqual(
      reply.choices[0].message.tool_calls?.map((c) => c.type === "function" && c.function.name),
      [
        "get_weather",
        "get_weather",
      ],
    );
  });
});

Deno.test("tools: bad tools, tool_choice and tool messages are 400s naming the field", async () => {
  using m = await scripted([]);
  await withServer(m, async (url, client) => {
    const user = [{ role: "user", content: "Hi" }];
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ messages: user, tools: {} }, /^tools: must be an array/],
      [{ messages: user, tools: [{ type: "code" }] }, /^tools\[0\]\.type:/],
      [
        { messages: user, tools: [{ type: "function", function: {} }] },
        /tools\[0\]\.function\.name/,
      ],
      [
        { messages: user, tools: [WEATHER, { type: "function", function: { name: "a b" } }] },
        /^tools\[1\]\.function\.name:/,
      ],
      [{ messages: user, tools: [WEATHER, WEATHER] }, /^tools\[1\]\.function\.name: .*already/],
      [
        { messages: user, tools: [{ ...WEATHER, function: { name: "f", parameters: 3 } }] },
        /^tools\[0\]\.function\.parameters:/,
      ],
      [{ messages: user, tools: [WEATHER], tool_choice: "always" }, /^tool_choice:/],
      [
        {
          messages: user,
          tools: [WEATHER],
          tool_choice: { type: "function", function: { name: "f" } },
        },
        /^tool_choice\.function\.name:/,
      ],
      [{ messages: user, tool_choice: "required" }, /^tool_choice:/],
      [
        { messages: [...user, { role: "tool", content: "x", tool_call_id: "c" }] },
        /^messages\[1\]\.role: a "tool" message must follow/,
      ],
      [
        { messages: [...user, ...ROUND_TRIP.slice(2, 3), { role: "tool", content: "x" }] },
        /^messages\[2\]\.tool_call_id:/,
      ],
      [
        {
          messages: [...user, { role: "assistant", content: null, tool_calls: [{ function: {} }] }],
        },
        /^messages\[1\]\.tool_calls\[0\]\.function\.name:/,
      ],
    ];
    for (const [body, message] of cases) {
      await assert.rejects(
        client.chat.completions.create({ model: "m", ...body } as never),
        (e: unknown) => {
          assert.ok(e instanceof OpenAI.BadRequestError, String(e));
          assert.match(e.message.replace(/^400 /, ""), message, JSON.stringify(body));
          return true;
        },
      );
    }
    // Text completions take no tools; /apply-template checks as chat does.
    const r = await fetch(`${url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: "x", tools: [WEATHER] }),
    });
    assert.equal(r.status, 400);
    assert.match((await r.json()).error.message, /^tools:/);
    const a = await fetch(`${url}/apply-template`, {
      method: "POST",
      body: JSON.stringify({ messages: user, tools: [{}] }),
    });
    assert.equal(a.status, 400);
    assert.equal((await a.json()).error.param, "tools[0].type");
  });
});

Deno.test("tool call parser: held tags, streamed arguments, malformed and unfinished calls", () => {
  const run = (pieces: string[], prefill = "") => {
    const p = new ToolCallParser(prefill);
    const out: ChatDelta[] = [];
    for (const x of pieces) out.push(...p.push(x));
    out.push(...p.flush());
    // Neighbouring pieces of one kind joined: how text is split into deltas is not the point.
    const texts: string[] = [];
    let last = "";
    for (const d of out) {
      const kind = d.kind !== "tool_call" ? "text" : d.id !== undefined ? "head" : "args";
      const text = d.kind !== "tool_call"
        ? d.text
        : d.id !== undefined
        ? `head:${d.name}`
        : `args:${d.arguments}`;
      if (kind === last && kind !== "head") {
        texts[texts.length - 1] += kind === "args" ? text.slice(5) : text;
      } else texts.push(text);
      last = kind;
    }
    return texts;
  };
  assert.deepEqual(run(["Hi <tool", "s> and <", "b> "]), ["Hi <tools> and <b> "]);
  assert.deepEqual(run(["A\n<tool_call>\n{bad}\n</tool_call>"]), [
    "A\n<tool_call>\n{bad}\n</tool_call>",
  ]);
  // Arguments stream as they come, braces inside strings not counted; the tags never leak.
  const pieces = [
    '<tool_call>\n{"name": "f", "argu',
    'ments": {"a": "}{", "b"',
    ": [1]}}\n</tool",
    "_call>",
  ];
  assert.deepEqual(run(pieces), ["head:f", 'args:{"a": "}{", "b": [1]}']);
  for (let i = 1; i < pieces.join("").length; i++) {
    const all = pieces.join("");
    assert.deepEqual(run([all.slice(0, i), all.slice(i)]), [
      "head:f",
      'args:{"a": "}{", "b": [1]}',
    ]);
  }
  // Unfinished: a streaming call just ends; any other block stays content, as written.
  assert.deepEqual(run(['A \n<tool_call>\n{"name": "f", "arguments": {"a": 1', "\n"]), [
    "A",
    "head:f",
    'args:{"a": 1\n',
  ]);
  assert.deepEqual(run(['A \n<tool_call>\n{"name": "f", "arguments": "x']), [
    'A \n<tool_call>\n{"name": "f", "arguments": "x',
  ]);
  // Arguments as a string, read whole; text after calls loses the whitespace around them.
  assert.deepEqual(run(['<tool_call>{"name":"f","arguments":"{}"}</tool_call>\n\nDone. ', "ok"]), [
    "head:f",
    "args:{}",
    "Done. ok",
  ]);
  // A forced call: the prefill is read as the reply's start.
  assert.deepEqual(run(['"x"}}\n</tool_call>'], '<tool_call>\n{"name": "f", "arguments": {"a": '), [
    "head:f",
    'args:{"a": "x"}',
  ]);
});
