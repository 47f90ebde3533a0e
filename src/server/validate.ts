/**
 * Request bodies checked field by field into typed requests: every refusal is a 400
 * naming the field (OpenAI's names), so a client learns what to fix.
 * @module
 */

import type { SamplerOptions } from "../types.ts";
import {
  ANY_OBJECT,
  compileSchema,
  SchemaError,
  type SchemaNode,
} from "../text/json_constraint.ts";
import { ApiError, badField } from "./errors.ts";
import {
  parseMessageToolCalls,
  parseTools,
  type TemplateMessage,
  type ToolRequest,
} from "./tools.ts";

/** Sampling, token cap and stop strings shared by chat and text completions. */
export interface SamplingRequest {
  /** Sampler settings (only those the client gave; the library's defaults fill the rest). */
  sampler: SamplerOptions;
  /** `max_completion_tokens` or `max_tokens`, when given. */
  maxTokens?: number;
  /** Stop strings (never emitted, never followed by more text). */
  stop: string[];
  /** Stream server-sent events. */
  stream: boolean;
  /** `stream_options.include_usage`: a last chunk with `usage`. */
  includeUsage: boolean;
  /** Log-probabilities wanted, with this many alternatives per token (chat: `logprobs:
   * true` and `top_logprobs`; text: `logprobs` as a number); undefined: none. */
  logprobs?: number;
}

/** One message of a chat request, its content as text (content parts joined). A "developer"
 * message is read as "system"; "tool" messages and assistant `tool_calls` come with tools. */
export type RequestMessage = TemplateMessage;

/** A checked `POST /v1/chat/completions` body. */
export interface ChatRequest extends SamplingRequest {
  /** The conversation, ending with a user message. */
  messages: RequestMessage[];
  /** Let the model reason in `<think>` (off by `enable_thinking: false` or effort "none"). */
  thinking: boolean;
  /** `tools` and `tool_choice`. */
  tools: ToolRequest;
  /** `chat_template_kwargs` but `enable_thinking`: more variables for the chat template. */
  templateKwargs: Record<string, unknown>;
  /** `response_format` json_object / json_schema: the schema the answer must match. */
  json?: SchemaNode;
}

/** A checked `POST /v1/completions` body. */
export interface CompletionRequest extends SamplingRequest {
  /** The text to continue. */
  prompt: string;
}

type Body = Record<string, unknown>;

/** The parsed JSON body as an object, else a 400. */
export function asObject(value: unknown): Body {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ApiError(400, "invalid_request", "the request body must be a JSON object");
  }
  return value as Body;
}

/** A field's value, with null read as absent (clients send both). */
function field(body: Body, name: string): unknown {
  const v = body[name];
  return v === null ? undefined : v;
}

function num(
  body: Body,
  name: string,
  range: { min?: number; max?: number; integer?: boolean },
): number | undefined {
  const v = field(body, name);
  if (v === undefined) return undefined;
  const ok = typeof v === "number" && Number.isFinite(v) &&
    (!range.integer || Number.isInteger(v)) &&
    (range.min === undefined || v >= range.min) && (range.max === undefined || v <= range.max);
  if (!ok) {
    const what = range.integer ? "an integer" : "a number";
    const bounds = range.min !== undefined && range.max !== undefined
      ? ` in ${range.min}..${range.max}`
      : range.min !== undefined
      ? ` >= ${range.min}`
      : "";
    throw badField(name, `must be ${what}${bounds}, got ${JSON.stringify(v)}`);
  }
  return v as number;
}

function bool(body: Body, name: string, param = name): boolean | undefined {
  const v = field(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") {
    throw badField(param, `must be true or false, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Fields of OpenAI's API this server does not implement: refused, never silently ignored. */
function refuseUnsupported(body: Body): void {
  const repetition = field(body, "repetition_penalty");
  // 1 (llama.cpp's "off") and 0 (OpenAI-style "none") ask for nothing.
  if (repetition !== undefined && repetition !== 1 && repetition !== 0) {
    throw badField(
      "repetition_penalty",
      "is not supported by this server (use presence_penalty or frequency_penalty)",
    );
  }
}

function sampling(body: Body, chat: boolean): SamplingRequest {
  refuseUnsupported(body);
  const model = field(body, "model");
  if (model !== undefined && typeof model !== "string") {
    throw badField("model", `must be a string, got ${JSON.stringify(model)}`);
  }
  const n = num(body, "n", { integer: true, min: 1 });
  if (n !== undefined && n !== 1) throw badField("n", `only 1 choice is supported, got ${n}`);
  const sampler: SamplerOptions = {};
  const temperature = num(body, "temperature", { min: 0 });
  if (temperature !== undefined) sampler.temperature = temperature;
  const topP = num(body, "top_p", { min: 0, max: 1 });
  if (topP !== undefined) sampler.topP = topP;
  const topK = num(body, "top_k", { min: 0, integer: true });
  if (topK !== undefined) sampler.topK = topK;
  const minP = num(body, "min_p", { min: 0, max: 1 });
  if (minP !== undefined) sampler.minP = minP;
  const presence = num(body, "presence_penalty", { min: -2, max: 2 });
  if (presence !== undefined) sampler.presencePenalty = presence;
  const frequency = num(body, "frequency_penalty", { min: -2, max: 2 });
  if (frequency !== undefined) sampler.frequencyPenalty = frequency;
  const seed = num(body, "seed", { min: 0, integer: true, max: Number.MAX_SAFE_INTEGER });
  if (seed !== undefined) sampler.seed = seed;
  const maxTokens = num(body, "max_completion_tokens", { min: 0, integer: true }) ??
    num(body, "max_tokens", { min: 0, integer: true });

  let stop: string[] = [];
  const s = field(body, "stop");
  if (typeof s === "string") stop = [s];
  else if (Array.isArray(s)) stop = s;
  else if (s !== undefined) throw badField("stop", "must be a string or an array of strings");
  if (stop.length > 4) throw badField("stop", `at most 4 stop strings, got ${stop.length}`);
  stop.forEach((x, i) => {
    if (typeof x !== "string" || x === "") {
      throw badField(`stop[${i}]`, "must be a non-empty string");
    }
  });

  const stream = bool(body, "stream") ?? false;
  let includeUsage = false;
  const so = field(body, "stream_options");
  if (so !== undefined) {
    if (typeof so !== "object" || Array.isArray(so)) {
      throw badField("stream_options", "must be an object");
    }
    includeUsage = bool(so as Body, "include_usage", "stream_options.include_usage") ?? false;
  }
  return { sampler, maxTokens, stop, stream, includeUsage, logprobs: logprobs(body, chat) };
}

/** Chat: `logprobs` (boolean) and `top_logprobs` (0..20); text: `logprobs` (0..20). */
function logprobs(body: Body, chat: boolean): number | undefined {
  if (!chat) return num(body, "logprobs", { integer: true, min: 0, max: 20 });
  const on = bool(body, "logprobs") ?? false;
  const top = num(body, "top_logprobs", { integer: true, min: 0, max: 20 });
  if (top !== undefined && !on) throw badField("top_logprobs", "needs logprobs: true");
  return on ? top ?? 0 : undefined;
}

/**
 * `response_format`: "text", "json_object", or "json_schema" with `json_schema.schema` in
 * the supported subset (src/text/json_constraint.ts); undefined for plain text.
 */
function responseFormat(body: Body): SchemaNode | undefined {
  const format = field(body, "response_format");
  if (format === undefined) return undefined;
  if (format === null || typeof format !== "object" || Array.isArray(format)) {
    throw badField("response_format", "must be an object");
  }
  const { type } = format as Body;
  if (type === "text") return undefined;
  if (type === "json_object") return ANY_OBJECT;
  if (type !== "json_schema") {
    throw badField(
      "response_format.type",
      `must be "text", "json_object" or "json_schema", got ${JSON.stringify(type)}`,
    );
  }
  const spec = field(format as Body, "json_schema");
  if (spec === undefined || spec === null || typeof spec !== "object" || Array.isArray(spec)) {
    throw badField("response_format.json_schema", "must be an object holding a schema");
  }
  const schema = (spec as Body).schema;
  if (schema === undefined) {
    throw badField("response_format.json_schema.schema", "is required");
  }
  try {
    return compileSchema(schema);
  } catch (e) {
    if (!(e instanceof SchemaError)) throw e;
    throw badField(`response_format.json_schema.schema${e.path.replaceAll("/", ".")}`, e.detail);
  }
}

/** A message's content: a string, or OpenAI's array of `{type: "text", text}` parts. */
function contentText(v: unknown, param: string): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v.map((part, i) => {
      const p = part as { type?: unknown; text?: unknown } | null;
      if (p?.type !== "text" || typeof p.text !== "string") {
        throw badField(`${param}[${i}]`, 'only {"type": "text", "text": ...} parts are supported');
      }
      return p.text;
    }).join("");
  }
  throw badField(param, "must be a string or an array of text parts");
}

/**
 * Checks a chat completion body: the messages (an optional system message first, then
 * user and assistant in turn, ending with a user message), sampling and thinking.
 *
 * @param value The parsed JSON body.
 * @returns The typed request.
 * @throws {ApiError} 400 naming the field at fault.
 */
export function parseChatRequest(value: unknown): ChatRequest {
  const body = asObject(value);
  const req = sampling(body, true);
  const raw = field(body, "messages");
  if (!Array.isArray(raw) || raw.length === 0) {
    throw badField("messages", "must be a non-empty array of messages");
  }
  const messages: RequestMessage[] = raw.map((m, i) => {
    if (m === null || typeof m !== "object") throw badField(`messages[${i}]`, "must be an object");
    const { role, content } = m as Body;
    const r = role === "developer" ? "system" : role;
    if (r !== "system" && r !== "user" && r !== "assistant" && r !== "tool") {
      throw badField(
        `messages[${i}].role`,
        `must be "system", "developer", "user", "assistant" or "tool", got ${JSON.stringify(role)}`,
      );
    }
    const calls = r === "assistant" ? field(m as Body, "tool_calls") : undefined;
    const toolCalls = calls === undefined
      ? undefined
      : parseMessageToolCalls(calls, `messages[${i}].tool_calls`);
    // An assistant message that only calls tools has no content (null or absent).
    const text = content == null && toolCalls !== undefined
      ? ""
      : contentText(content, `messages[${i}].content`);
    const message: RequestMessage = { role: r, content: text };
    if (toolCalls !== undefined && toolCalls.length > 0) message.toolCalls = toolCalls;
    const reasoning = r === "assistant" ? field(m as Body, "reasoning_content") : undefined;
    if (typeof reasoning === "string") message.reasoning = reasoning;
    if (r === "tool") {
      const id = (m as Body).tool_call_id;
      if (typeof id !== "string") {
        throw badField(`messages[${i}].tool_call_id`, "a tool message must name its tool call");
      }
      message.toolCallId = id;
    }
    const name = field(m as Body, "name");
    if (name !== undefined) {
      if (typeof name !== "string") throw badField(`messages[${i}].name`, "must be a string");
      message.name = name;
    }
    return message;
  });
  if (messages.some((m) => m.role === "tool" || m.toolCalls)) checkToolOrder(messages);
  else checkTurns(messages);

  let thinking = true;
  const kwargs = field(body, "chat_template_kwargs");
  const templateKwargs: Record<string, unknown> = {};
  if (kwargs !== undefined) {
    if (typeof kwargs !== "object" || Array.isArray(kwargs)) {
      throw badField("chat_template_kwargs", "must be an object");
    }
    thinking = bool(kwargs as Body, "enable_thinking", "chat_template_kwargs.enable_thinking") ??
      thinking;
    for (const [key, value] of Object.entries(kwargs as Body)) {
      if (key === "enable_thinking") continue;
      if (RESERVED_TEMPLATE_VARIABLES.has(key)) {
        throw badField(
          `chat_template_kwargs.${key}`,
          "is set by the server from the request's own fields",
        );
      }
      templateKwargs[key] = value;
    }
  }
  const effort = field(body, "reasoning_effort");
  if (effort !== undefined) {
    if (!["none", "minimal", "low", "medium", "high"].includes(effort as string)) {
      throw badField(
        "reasoning_effort",
        `must be "none", "minimal", "low", "medium" or "high", got ${JSON.stringify(effort)}`,
      );
    }
    if (effort === "none") thinking = false;
  }
  const tools = parseTools(body);
  const json = responseFormat(body);
  if (
    json && tools.tools.length > 0 &&
    (tools.choice.kind === "required" || tools.choice.kind === "function")
  ) {
    // A forced call's reply is the call (the server writes its opening); JSON output would
    // have to hold it too.
    throw badField(
      "response_format",
      `JSON output cannot be combined with tool_choice "${tools.choice.kind}", which forces a tool call`,
    );
  }
  return { ...req, messages, thinking, tools, json, templateKwargs };
}

/** Chat template variables the server sets itself, which `chat_template_kwargs` may not. */
const RESERVED_TEMPLATE_VARIABLES = new Set([
  "messages",
  "tools",
  "add_generation_prompt",
  "bos_token",
  "eos_token",
  "pad_token",
  "unk_token",
  "raise_exception",
  "range",
  "strftime_now",
]);

/**
 * A conversation with tool calls: an optional system message, then a user message; a tool
 * message answers an assistant message with `tool_calls` (or follows another tool message);
 * the last message is from the user or a tool.
 */
function checkToolOrder(messages: readonly RequestMessage[]): void {
  const first = messages[0].role === "system" ? 1 : 0;
  if (messages[first]?.role !== "user") {
    throw badField(
      `messages[${first}].role`,
      'expected "user": after an optional system message, the conversation starts with user',
    );
  }
  for (let i = first + 1; i < messages.length; i++) {
    const m = messages[i];
    const prev = messages[i - 1];
    if (m.role === "tool" && !(prev.role === "tool" || prev.toolCalls)) {
      throw badField(
        `messages[${i}].role`,
        'a "tool" message must follow an assistant message with tool_calls, or another tool message',
      );
    }
    if (m.role === "system") {
      throw badField(`messages[${i}].role`, "a system message may only come first");
    }
  }
  const last = messages.length - 1;
  if (messages[last].role !== "user" && messages[last].role !== "tool") {
    throw badField(`messages[${last}].role`, "the last message must be from the user or a tool");
  }
}

/** The templates render a system prompt, then user turns each answered by the assistant. */
function checkTurns(messages: readonly RequestMessage[]): void {
  const first = messages[0].role === "system" ? 1 : 0;
  for (let i = first; i < messages.length; i++) {
    const want = (i - first) % 2 === 0 ? "user" : "assistant";
    if (messages[i].role !== want) {
      throw badField(
        `messages[${i}].role`,
        `expected "${want}": after an optional system message, user and assistant messages ` +
          `alternate, starting with user`,
      );
    }
  }
  if (messages[messages.length - 1].role !== "user") {
    throw badField(
      `messages[${messages.length - 1}].role`,
      "the last message must be from the user",
    );
  }
}

/**
 * Checks a text completion body: `prompt` (a string, or an array of one string) and sampling.
 *
 * @param value The parsed JSON body.
 * @returns The typed request.
 * @throws {ApiError} 400 naming the field at fault.
 */
export function parseCompletionRequest(value: unknown): CompletionRequest {
  const body = asObject(value);
  const req = sampling(body, false);
  const format = field(body, "response_format") as Body | undefined;
  if (format !== undefined && format?.type !== "text") {
    throw badField("response_format", "JSON output is for /v1/chat/completions");
  }
  const tools = field(body, "tools");
  if (tools !== undefined && !(Array.isArray(tools) && tools.length === 0)) {
    throw badField("tools", "tools are for /v1/chat/completions, not text completions");
  }
  let prompt = field(body, "prompt");
  if (Array.isArray(prompt) && prompt.length === 1) prompt = prompt[0];
  if (typeof prompt !== "string" || prompt === "") {
    throw badField("prompt", "must be a non-empty string (or an array of one string)");
  }
  return { ...req, prompt };
}
