/**
 * Load test of `qwen3 serve`: starts the server in-process on 127.0.0.1 over a model (the
 * demo model by default), sends a fixed set of streamed greedy chat requests at 1, 4 and 16
 * concurrent clients (`--parallel` equal to the clients), and prints a markdown table:
 * aggregate generated tok/s, time to first token (p50, p99) and the share of prompt tokens
 * the prompt cache supplied. Every reply must be complete (`finish_reason` "stop" or
 * "length", usage counted) and equal the same request run alone, one at a time with the
 * prompt cache off; any difference fails the run. It stops by itself: a fixed request
 * count per level and a time limit for the whole run.
 *
 *   deno run -A bench/serve_load.ts [--model PATH] [--requests 32] [--max-tokens 48]
 *     [--clients 1,4,16] [--time-limit 600]
 * @module
 */

import { parseArgs } from "node:util";
import OpenAI from "openai";
import { demoModelPath } from "../src/api/demo.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import { startServer } from "../src/server/server.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    requests: { type: "string", default: "32" },
    "max-tokens": { type: "string", default: "48" },
    clients: { type: "string", default: "1,4,16" },
    "time-limit": { type: "string", default: "600" },
    context: { type: "string", default: "1024" },
  },
});
const REQUESTS = Number(values.requests);
const MAX_TOKENS = Number(values["max-tokens"]);
const CLIENTS = values.clients!.split(",").map(Number);
// Ends every request still running when the time limit passes (the run then fails).
const limit = new AbortController();
const deadline = limit.signal;
const timer = setTimeout(() => limit.abort(), Number(values["time-limit"]) * 1000);
Deno.unrefTimer(timer);

const SUBJECTS = [
  "the sea",
  "cats",
  "the moon",
  "bread",
  "a river",
  "the king",
  "winter",
  "a ship",
  "the forest",
  "gold",
  "a horse",
  "the city",
  "rain",
  "a garden",
  "the mountain",
  "a letter",
];

/** Request i: a shared system prompt, then a question (every 4th one a second turn). */
function messages(i: number): OpenAI.ChatCompletionMessageParam[] {
  const subject = SUBJECTS[i % SUBJECTS.length];
  const variant = Math.floor(i / SUBJECTS.length);
  const m: OpenAI.ChatCompletionMessageParam[] = [
    { role: "system", content: "You are a storyteller. Answer in a few sentences." },
    {
      role: "user",
      content: `Tell me about ${subject}${variant ? ` (part ${variant + 1})` : ""}.`,
    },
  ];
  if (i % 4 === 3) {
    m.push({ role: "assistant", content: `There was once ${subject}.` }, {
      role: "user",
      content: "And then?",
    });
  }
  return m;
}

interface Reply {
  text: string;
  finish: string | null;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  ttftMs: number;
}

async function ask(client: OpenAI, i: number): Promise<Reply> {
  const start = performance.now();
  // llama-server's extra field: the SDK sends what it does not know as is.
  const request: OpenAI.ChatCompletionCreateParamsStreaming & {
    chat_template_kwargs: { enable_thinking: boolean };
  } = {
    model: "m",
    messages: messages(i),
    temperature: 0,
    max_tokens: MAX_TOKENS,
    stream: true,
    stream_options: { include_usage: true },
    chat_template_kwargs: { enable_thinking: false },
  };
  const stream = await client.chat.completions.create(request, { signal: deadline });
  let text = "";
  let ttftMs = NaN;
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    const piece = choice?.delta.content ?? "";
    if (piece !== "" && Number.isNaN(ttftMs)) ttftMs = performance.now() - start;
    text += piece;
    finish = choice?.finish_reason ?? finish;
    usage = chunk.usage ?? usage;
  }
  if (!usage) throw new Error(`request ${i}: no usage chunk`);
  return {
    text,
    finish,
    promptTokens: usage.prompt_tokens,
    cachedTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
    completionTokens: usage.completion_tokens,
    ttftMs,
  };
}

/** Runs requests 0..REQUESTS-1 with `clients` at once; returns the replies and the wall time. */
async function level(
  clients: number,
  promptCache: boolean,
): Promise<{ replies: Reply[]; wallMs: number }> {
  const server = startServer(model, { port: 0, parallel: clients, queue: clients, promptCache });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0 });
  const replies: Reply[] = new Array(REQUESTS);
  let next = 0;
  const start = performance.now();
  try {
    await Promise.all(Array.from({ length: clients }, async () => {
      while (next < REQUESTS) {
        const i = next++;
        replies[i] = await ask(client, i);
      }
    }));
  } finally {
    await server.shutdown();
  }
  return { replies, wallMs: performance.now() - start };
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

const path = values.model ?? await demoModelPath();
using model = await Qwen3.load(path, { contextLength: Number(values.context) });

// The reference: each request alone, one after another, every prompt prefilled whole.
const alone = await level(1, false);
let failures = 0;
const rows: string[] = [];
for (const clients of CLIENTS) {
  const { replies, wallMs } = await level(clients, true);
  let same = 0;
  replies.forEach((r, i) => {
    const ref = alone.replies[i];
    const complete = (r.finish === "stop" || r.finish === "length") &&
      (r.finish !== "length" || r.completionTokens === MAX_TOKENS);
    if (complete && r.text === ref.text && r.completionTokens === ref.completionTokens) same++;
    else {
      failures++;
      console.error(`clients ${clients}, request ${i}: ${JSON.stringify({ r, ref })}`);
    }
  });
  const generated = replies.reduce((n, r) => n + r.completionTokens, 0);
  const prompt = replies.reduce((n, r) => n + r.promptTokens, 0);
  const cached = replies.reduce((n, r) => n + r.cachedTokens, 0);
  const ttft = replies.map((r) => r.ttftMs).filter((t) => !Number.isNaN(t));
  rows.push(
    `| ${clients} | ${REQUESTS} | ${generated} | ${(wallMs / 1000).toFixed(2)} | ` +
      `${(generated / (wallMs / 1000)).toFixed(0)} | ${percentile(ttft, 50).toFixed(1)} | ` +
      `${percentile(ttft, 99).toFixed(1)} | ${((100 * cached) / prompt).toFixed(0)}% | ` +
      `${same}/${REQUESTS} |`,
  );
}

const name = path.split(/[\\/]/).pop();
console.log(
  `${name}, ${model.engine.kind} engine, ${model.engine.threads} threads, ` +
    `max_tokens ${MAX_TOKENS}, greedy, streamed; --parallel = clients\n`,
);
console.log(
  "| clients | requests | tokens | wall s | gen tok/s | TTFT p50 ms | TTFT p99 ms | cached prompt | same as alone |",
);
console.log("| --: | --: | --: | --: | --: | --: | --: | --: | --: |");
for (const r of rows) console.log(r);
if (failures > 0) {
  console.error(`${failures} replies were incomplete or differed from the request run alone`);
  Deno.exit(1);
}
