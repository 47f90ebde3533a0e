/**
 * The endpoints: OpenAI's chat and text completions (JSON or server-sent events), models,
 * and llama-server's health, tokenize and detokenize.
 * @module
 */

import type { TokenConstraint } from "../api/generate.ts";
import type { Qwen3 } from "../api/qwen3.ts";
import { JsonTokenConstraint } from "../text/json_constraint.ts";
import { LogprobCollector } from "./logprobs.ts";
import { checkFits, type Delta, generateDeltas, type Outcome } from "./completion.ts";
import { ApiError, badField } from "./errors.ts";
import { json, readJson, sseResponse } from "./http.ts";
import type { ConversationTemplate } from "../text/chat_template.ts";
import type { Metrics } from "./metrics.ts";
import { renderChatRequest } from "./prompt.ts";
import type { PromptCache } from "./prompt_cache.ts";
import type { Slot, SlotPool } from "./slots.ts";
import {
  type ChatDelta,
  type ToolCall,
  type ToolCallDelta,
  ToolCallParser,
  withToolCalls,
} from "./tools.ts";
import {
  asObject,
  parseChatRequest,
  parseCompletionRequest,
  type SamplingRequest,
} from "./validate.ts";

/** What every handler works with. */
export interface ServerContext {
  /** The loaded model, shared by all slots. */
  model: Qwen3;
  /** The chat template conversations are rendered with. */
  template: ConversationTemplate;
  /** The model's id in replies and `/v1/models`. */
  modelName: string;
  /** Positions of one slot's context: the longest prompt accepted. */
  contextLength: number;
  /** The generation slots and their queue. */
  pool: SlotPool;
  /** Most bytes of a request body. */
  maxBody: number;
  /** Most messages in a chat request. */
  maxMessages: number;
  /** Milliseconds a request may take from its arrival (`--timeout`). */
  timeoutMs: number;
  /** The server's log. */
  log: (line: string) => void;
  /** When the server started (Unix seconds), the model's `created`. */
  started: number;
  /** Aborted when the server shuts down: generations and waits in line end. */
  closing: AbortSignal;
  /** Each slot's session and the tokens it holds. */
  cache: PromptCache;
  /** Counters for `/metrics`. */
  metrics: Metrics;
  /** Speculative decoding for every request (`Qwen3GenerateOptions.speculate`; absent:
   * the engine's default). */
  speculate?: boolean;
}

function usage(o: Outcome) {
  return {
    prompt_tokens: o.promptTokens,
    completion_tokens: o.completionTokens,
    total_tokens: o.promptTokens + o.completionTokens,
    prompt_tokens_details: { cached_tokens: o.cachedTokens },
  };
}

/**
 * Aborted when the client goes away (or the stream is cancelled) or the server shuts down;
 * `deadline` fires `timeoutMs` after `arrived` (a `performance.now()`), and `signal` on
 * either. Call `detach` once the reply is complete (it also stops the deadline's timer):
 * without `--unstable-no-legacy-abort`, Deno.serve also aborts `request.signal` after a
 * delivered response.
 */
function clientAbort(
  req: Request,
  closing: AbortSignal,
  timeoutMs: number,
  arrived: number,
): { abort: AbortController; deadline: AbortSignal; signal: AbortSignal; detach: () => void } {
  const abort = new AbortController();
  const deadline = new AbortController();
  const onAbort = () => abort.abort();
  if (req.signal.aborted || closing.aborted) abort.abort();
  req.signal.addEventListener("abort", onAbort, { once: true });
  closing.addEventListener("abort", onAbort, { once: true });
  const timer = setTimeout(
    () => deadline.abort(),
    Math.max(0, arrived + timeoutMs - performance.now()),
  );
  return {
    abort,
    deadline: deadline.signal,
    signal: AbortSignal.any([abort.signal, deadline.signal]),
    detach: () => {
      clearTimeout(timer);
      req.signal.removeEventListener("abort", onAbort);
      closing.removeEventListener("abort", onAbort);
    },
  };
}

/** The shape of one reply kind: how deltas become chunks and the final body. */
interface ReplyShape {
  /** `id` prefix: "chatcmpl" or "cmpl". */
  idPrefix: string;
  /** The streamed chunks' `object`. */
  chunkObject: string;
  /** The whole reply's `object`. */
  object: string;
  /** The first chunk's choice (before any text), if the kind has one. */
  opening?: Record<string, unknown>;
  /** A chunk choice carrying one delta. */
  choice(d: ChatDelta): Record<string, unknown>;
  /** The closing chunk choice. */
  closing(finish: string): Record<string, unknown>;
  /** The whole reply's choice. */
  whole(
    thinking: string,
    answer: string,
    finish: string,
    calls: ToolCall[],
  ): Record<string, unknown>;
}

const CHAT: ReplyShape = {
  idPrefix: "chatcmpl",
  chunkObject: "chat.completion.chunk",
  object: "chat.completion",
  opening: {
    index: 0,
    delta: { role: "assistant", content: "" },
    logprobs: null,
    finish_reason: null,
  },
  choice: (d) => ({
    index: 0,
    delta: d.kind === "tool_call"
      ? { tool_calls: [toolCallDelta(d)] }
      : d.kind === "thinking"
      ? { reasoning_content: d.text }
      : { content: d.text },
    logprobs: null,
    finish_reason: null,
  }),
  closing: (finish) => ({ index: 0, delta: {}, logprobs: null, finish_reason: finish }),
  whole: (thinking, answer, finish, calls) => {
    const message: Record<string, unknown> = {
      role: "assistant",
      content: answer === "" && calls.length > 0 ? null : answer,
    };
    if (thinking !== "") message.reasoning_content = thinking;
    if (calls.length > 0) {
      message.tool_calls = calls.map((c) => ({
        id: c.id,
        type: "function",
        function: { name: c.name, arguments: c.arguments },
      }));
    }
    return { index: 0, message, logprobs: null, finish_reason: finish };
  },
};

/** A streamed tool call fragment: the head names the function, the rest carry arguments. */
function toolCallDelta(d: ToolCallDelta) {
  return d.id !== undefined
    ? { index: d.index, id: d.id, type: "function", function: { name: d.name, arguments: "" } }
    : { index: d.index, function: { arguments: d.arguments } };
}

/** Raw text: reasoning keeps its `<think>` tags, as the model wrote it. */
const TEXT: ReplyShape = {
  idPrefix: "cmpl",
  chunkObject: "text_completion",
  object: "text_completion",
  choice: (d) => ({ index: 0, text: (d as Delta).text, logprobs: null, finish_reason: null }),
  closing: (finish) => ({ index: 0, text: "", logprobs: null, finish_reason: finish }),
  whole: (thinking, answer, finish) => ({
    index: 0,
    text: thinking !== "" ? `<think>${thinking}</think>${answer}` : answer,
    logprobs: null,
    finish_reason: finish,
  }),
};

/** Text completions stream the `<think>` tags around reasoning, as raw text would hold them. */
async function* withThinkTags(deltas: AsyncGenerator<Delta, Outcome>) {
  let thinking = false;
  while (true) {
    const r = await deltas.next();
    if (r.done) {
      if (thinking) yield { kind: "answer", text: "</think>" } as Delta;
      return r.value;
    }
    if ((r.value.kind === "thinking") !== thinking) {
      thinking = !thinking;
      yield { kind: "answer", text: thinking ? "<think>" : "</think>" } as Delta;
    }
    yield { kind: "answer", text: r.value.text } as Delta;
  }
}

/**
 * Runs a request in a slot and answers it as one JSON body or as server-sent events; its
 * deadline is `ctx.timeoutMs` after `arrived` (when the handler started, `performance.now()`).
 */
async function reply(
  ctx: ServerContext,
  req: Request,
  arrived: number,
  shape: ReplyShape,
  tokens: readonly number[],
  sampling: SamplingRequest,
  tools?: { prefill: string },
  constraint?: TokenConstraint,
): Promise<Response> {
  checkFits(tokens.length, ctx.contextLength, shape === CHAT ? "messages" : "prompt");
  const { abort, deadline, signal, detach } = clientAbort(
    req,
    ctx.closing,
    ctx.timeoutMs,
    arrived,
  );
  // Waiting for a slot before answering, so a full queue is a 503, not a broken stream.
  let slot: Slot;
  try {
    slot = await ctx.pool.acquire(signal, (free) => ctx.cache.pick(free, tokens));
    if (signal.aborted) {
      // Granted by a slot freed in the same shutdown (or as this client left).
      slot[Symbol.dispose]();
      signal.throwIfAborted();
    }
  } catch (e) {
    detach();
    if (ctx.closing.aborted) {
      throw new ApiError(503, "shutting_down", "the server is shutting down");
    }
    if (deadline.aborted && !abort.signal.aborted) {
      throw new ApiError(
        503,
        "timeout",
        `no slot came free within the server's timeout of ${ctx.timeoutMs / 1000} s`,
        { headers: { "retry-after": "1" } },
      );
    }
    throw e;
  }
  const release = () => slot[Symbol.dispose]();
  const id = `${shape.idPrefix}-${crypto.randomUUID().replaceAll("-", "")}`;
  const created = Math.floor(Date.now() / 1000);
  const head = { id, object: shape.chunkObject, created, model: ctx.modelName };
  const logprobs = sampling.logprobs === undefined
    ? undefined
    : new LogprobCollector(ctx.model.tokenizer, shape === CHAT);
  // A choice with the log-probabilities of the tokens since the last one.
  const withLogprobs = (choice: Record<string, unknown>) =>
    logprobs ? { ...choice, logprobs: logprobs.take() } : choice;
  const deltas = () => {
    const chat = shape === CHAT;
    const d = generateDeltas(ctx.model, tokens, sampling, signal, {
      trim: chat,
      deadline,
      generate: (t, o) => ctx.cache.generate(slot.id, t, { ...o, speculate: ctx.speculate }),
      constraint,
      onLogprobs: logprobs && ((kind, entries) => logprobs.push(kind, entries)),
    });
    if (!chat) return withThinkTags(d);
    return tools ? withToolCalls(d, new ToolCallParser(tools.prefill)) : d;
  };

  if (!sampling.stream) {
    try {
      let thinking = "";
      let answer = "";
      const calls: ToolCall[] = [];
      const run = deltas();
      let r;
      while (!(r = await run.next()).done) {
        if (r.value.kind === "tool_call") {
          const { id, name, index, arguments: args } = r.value;
          if (id !== undefined) calls.push({ id, name: name!, arguments: "" });
          else calls[index].arguments += args;
        } else if (r.value.kind === "thinking") thinking += r.value.text;
        else answer += r.value.text;
      }
      ctx.metrics.generation(r.value);
      if (r.value.timedOut) logTimeout(ctx, id, r.value);
      return json({
        id,
        object: shape.object,
        created,
        model: ctx.modelName,
        choices: [withLogprobs(shape.whole(thinking, answer, r.value.finishReason, calls))],
        usage: usage(r.value),
      });
    } finally {
      detach();
      release();
    }
  }

  // A stream dropped before its first pull never runs the finally below: free the slot
  // here then. Once running, the slot is held until the generation has really ended.
  let started = false;
  abort.signal.addEventListener("abort", () => {
    if (started) return;
    detach();
    release();
  }, { once: true });
  async function* chunks() {
    started = true;
    const run = deltas();
    try {
      if (shape.opening) yield { ...head, choices: [shape.opening] };
      let r;
      while (!(r = await run.next()).done) {
        yield { ...head, choices: [withLogprobs(shape.choice(r.value))] };
      }
      ctx.metrics.generation(r.value);
      if (r.value.timedOut) logTimeout(ctx, id, r.value);
      yield { ...head, choices: [withLogprobs(shape.closing(r.value.finishReason))] };
      if (sampling.includeUsage) yield { ...head, choices: [], usage: usage(r.value) };
    } finally {
      // A cancelled stream leaves the generation suspended: end it, freeing its context.
      await run.return(undefined as never);
      detach();
      release();
    }
  }
  return sseResponse(chunks(), abort);
}

/** The log line of a reply stopped by the deadline. */
function logTimeout(ctx: ServerContext, id: string, o: Outcome): void {
  ctx.log(
    `${id}: stopped at the --timeout deadline (${ctx.timeoutMs / 1000} s) after ` +
      `${o.completionTokens} generated tokens; finish_reason "length"`,
  );
}

/** `POST /v1/chat/completions`. */
export async function chatCompletions(ctx: ServerContext, req: Request): Promise<Response> {
  const arrived = performance.now();
  const body = parseChatRequest(checkMessageCount(ctx, await readJson(req, ctx.maxBody)));
  const prompt = renderChatRequest(ctx.template, body);
  const tokens = ctx.model.tokenizer.encodeParts(prompt.parts);
  // response_format: the answer (after any reasoning) is held to the JSON schema.
  const constraint = body.json &&
    new JsonTokenConstraint(ctx.model.tokenizer, body.json, { thinkFirst: body.thinking });
  return await reply(
    ctx,
    req,
    arrived,
    CHAT,
    tokens,
    body,
    prompt.parseTools ? prompt : undefined,
    constraint,
  );
}

/**
 * Refuses a chat request body with more than `--max-messages` messages, before any of them
 * is read.
 *
 * @param ctx The server.
 * @param body The parsed JSON body.
 * @returns The body.
 * @throws {ApiError} 400 naming `messages`.
 */
export function checkMessageCount(ctx: ServerContext, body: unknown): unknown {
  const messages = (body as { messages?: unknown } | null)?.messages;
  if (Array.isArray(messages) && messages.length > ctx.maxMessages) {
    throw badField(
      "messages",
      `at most ${ctx.maxMessages} messages per request (the server's --max-messages), ` +
        `got ${messages.length}`,
    );
  }
  return body;
}

/** `POST /v1/completions`: the prompt is plain text (no control tokens). */
export async function completions(ctx: ServerContext, req: Request): Promise<Response> {
  const arrived = performance.now();
  const body = parseCompletionRequest(await readJson(req, ctx.maxBody));
  return await reply(ctx, req, arrived, TEXT, ctx.model.tokenizer.encode(body.prompt), body);
}

/** `GET /v1/models`: the one loaded model. */
export function models(ctx: ServerContext): Response {
  return json({
    object: "list",
    data: [{ id: ctx.modelName, object: "model", created: ctx.started, owned_by: "qwen3" }],
  });
}

/** `POST /tokenize`: `{content}` to `{tokens}` (plain text: no control tokens). */
export async function tokenize(ctx: ServerContext, req: Request): Promise<Response> {
  const body = asObject(await readJson(req, ctx.maxBody));
  if (typeof body.content !== "string") throw badField("content", "must be a string");
  return json({ tokens: ctx.model.tokenizer.encode(body.content) });
}

/** `POST /detokenize`: `{tokens}` to `{content}`. */
export async function detokenize(ctx: ServerContext, req: Request): Promise<Response> {
  const body = asObject(await readJson(req, ctx.maxBody));
  const tokens = body.tokens;
  const size = ctx.model.tokenizer.size;
  if (!Array.isArray(tokens)) throw badField("tokens", "must be an array of token ids");
  tokens.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= size) {
      throw badField(
        `tokens[${i}]`,
        `must be a token id in 0..${size - 1}, got ${JSON.stringify(t)}`,
      );
    }
  });
  return json({ content: ctx.model.tokenizer.decode(tokens) });
}

/** The 404 for a path no endpoint serves. */
export function notFound(req: Request): never {
  const { pathname } = new URL(req.url);
  throw new ApiError(404, "not_found", `no endpoint ${req.method} ${pathname}`);
}
