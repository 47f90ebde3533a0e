/**
 * Tool calling on `/v1/chat/completions`: the `tools` and `tool_choice` fields checked
 * (the model's own chat template renders them: prompt.ts), a forced call's opening, and the
 * model's `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` output turned into
 * OpenAI's `tool_calls`, never into `content`.
 * @module
 */

import type { Delta, Outcome } from "./completion.ts";
import { badField } from "./errors.ts";

/** One function tool as the client sent it (rendered into the prompt as sent, key order kept). */
export type ToolSpec = Record<string, unknown>;

/** `tool_choice`: "auto" (the default), "none", "required", or one named function. */
export type ToolChoice =
  | { kind: "auto" }
  | { kind: "none" }
  | { kind: "required" }
  | { kind: "function"; name: string };

/** A tool call: from an assistant message of the request, or parsed from the model's output. */
export interface ToolCall {
  /** The call's id (`call_...` when the server made it). */
  id: string;
  /** The function's name. */
  name: string;
  /** The arguments as JSON text (OpenAI's `function.arguments`). */
  arguments: string;
}

/** The checked tool fields of a chat request. */
export interface ToolRequest {
  /** The function tools (empty when none were given). */
  tools: ToolSpec[];
  /** What the client allows or forces. */
  choice: ToolChoice;
}

type Body = Record<string, unknown>;

/** OpenAI's rule for function names. */
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

function isObject(v: unknown): v is Body {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * Checks `tools` and `tool_choice`.
 *
 * @param body The request body.
 * @returns The tools and the choice.
 * @throws {ApiError} 400 naming the field at fault (`tools[1].function.name`, ...).
 */
export function parseTools(body: Body): ToolRequest {
  const raw = body.tools ?? [];
  if (!Array.isArray(raw)) throw badField("tools", "must be an array of function tools");
  const names = new Set<string>();
  const tools = raw.map((t, i) => {
    const at = `tools[${i}]`;
    if (!isObject(t)) throw badField(at, "must be an object");
    if (t.type !== "function") {
      throw badField(`${at}.type`, `must be "function", got ${JSON.stringify(t.type)}`);
    }
    const f = t.function;
    if (!isObject(f)) throw badField(`${at}.function`, "must be an object with a name");
    if (typeof f.name !== "string" || !NAME.test(f.name)) {
      throw badField(
        `${at}.function.name`,
        `must be 1 to 64 letters, digits, _ or -, got ${JSON.stringify(f.name)}`,
      );
    }
    if (names.has(f.name)) {
      throw badField(`${at}.function.name`, `"${f.name}" is already the name of another tool`);
    }
    names.add(f.name);
    if (f.description != null && typeof f.description !== "string") {
      throw badField(`${at}.function.description`, "must be a string");
    }
    if (f.parameters != null && !isObject(f.parameters)) {
      throw badField(`${at}.function.parameters`, "must be a JSON schema object");
    }
    return t;
  });

  const c = body.tool_choice ?? "auto";
  let choice: ToolChoice;
  if (c === "auto" || c === "none" || c === "required") choice = { kind: c };
  else if (isObject(c) && c.type === "function" && isObject(c.function)) {
    const name = c.function.name;
    if (typeof name !== "string" || !names.has(name)) {
      throw badField(
        "tool_choice.function.name",
        `must name one of the tools, got ${JSON.stringify(name)}`,
      );
    }
    choice = { kind: "function", name };
  } else {
    throw badField(
      "tool_choice",
      `must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}`,
    );
  }
  if (tools.length === 0 && (choice.kind === "required" || choice.kind === "function")) {
    throw badField("tool_choice", `"${choice.kind}" needs tools`);
  }
  return { tools, choice };
}

/**
 * An assistant message's `tool_calls`.
 *
 * @param v The field's value.
 * @param param Its name, for errors (`messages[2].tool_calls`).
 * @returns The calls, arguments as JSON text.
 * @throws {ApiError} 400 naming the field at fault.
 */
export function parseMessageToolCalls(v: unknown, param: string): ToolCall[] {
  if (!Array.isArray(v)) throw badField(param, "must be an array of tool calls");
  return v.map((c, i) => {
    const at = `${param}[${i}]`;
    if (!isObject(c)) throw badField(at, "must be an object");
    if (c.type !== undefined && c.type !== "function") {
      throw badField(`${at}.type`, `must be "function", got ${JSON.stringify(c.type)}`);
    }
    const f = c.function;
    if (!isObject(f) || typeof f.name !== "string" || f.name === "") {
      throw badField(`${at}.function.name`, "must be a non-empty string");
    }
    const args = f.arguments ?? "{}";
    if (typeof args !== "string" && !isObject(args)) {
      throw badField(`${at}.function.arguments`, "must be a JSON string (or an object)");
    }
    return {
      id: typeof c.id === "string" ? c.id : "",
      name: f.name,
      arguments: typeof args === "string" ? args : pythonJson(args),
    };
  });
}

/**
 * JSON as Python's `json.dumps(x, ensure_ascii=False)` writes it, which is what the `tojson`
 * of Hugging Face's chat templates gives: `", "` and `": "` between items, keys in order.
 * Numbers are written as JavaScript writes them: a request's `1.0` was parsed to 1 and is
 * written `1`, where Python, given the float, would write `1.0`.
 *
 * @param v A JSON value.
 * @returns Its text.
 */
export function pythonJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(pythonJson).join(", ")}]`;
  if (isObject(v)) {
    return `{${
      Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pythonJson(x)}`).join(", ")
    }}`;
  }
  return JSON.stringify(v) ?? "null";
}

// ---------------------------------------------------------------------------------------------
// The conversation as the chat template reads it (prompt.ts renders it).

/** One message as the chat template reads it (validate.ts checks and builds these). */
export interface TemplateMessage {
  /** Who wrote it. */
  role: "system" | "user" | "assistant" | "tool";
  /** Its text ("" for an assistant message with only tool calls). */
  content: string;
  /** An assistant message's tool calls. */
  toolCalls?: readonly ToolCall[];
  /** An assistant message's reasoning (`reasoning_content`), when the client sent it. */
  reasoning?: string;
  /** A tool message's `tool_call_id`. */
  toolCallId?: string;
  /** The message's `name`, when the client sent one. */
  name?: string;
}

const TOOL_CALL_OPEN = "<tool_call>";
const TOOL_CALL_CLOSE = "</tool_call>";

/**
 * What the server writes after the generation prompt for a `tool_choice` that forces a call:
 * an empty reasoning block (unless thinking is off, which already wrote one), then the
 * opening of the call, so the model can only go on with one. Empty for "auto" and "none".
 *
 * @param choice The request's tool choice.
 * @param thinking Whether thinking is on.
 * @returns The prefill (the part from `<tool_call>` on is what the parser starts with).
 */
export function forcedPrefill(choice: ToolChoice, thinking: boolean): string {
  const think = thinking ? "<think>\n\n</think>\n\n" : "";
  if (choice.kind === "required") return `${think}${TOOL_CALL_OPEN}\n`;
  if (choice.kind === "function") {
    return `${think}${TOOL_CALL_OPEN}\n{"name": "${choice.name}", "arguments": `;
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Parsing the reply.

/**
 * A tool call in a reply, in pieces: first its head (index, id, name, `arguments` ""), then
 * fragments of its arguments, in order, as the model writes them.
 */
export interface ToolCallDelta {
  /** Marks a tool call. */
  kind: "tool_call";
  /** The call's position among the reply's calls. */
  index: number;
  /** The head's call id (`call_...`); absent on argument fragments. */
  id?: string;
  /** The head's function name; absent on argument fragments. */
  name?: string;
  /** A fragment of the arguments' JSON text ("" on the head). */
  arguments: string;
}

/** What a chat reply streams: reasoning, answer text and tool calls. */
export type ChatDelta = Delta | ToolCallDelta;

const newCallId = () => `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;

/** The start of a call whose arguments are an object: sent as soon as it is seen. */
const CALL_HEAD = /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)+")\s*,\s*"arguments"\s*:\s*(?=\{)/;

/** A whole call's JSON (`{"name": ..., "arguments": ...}`), or undefined if malformed. */
function parseCall(text: string): { name: string; arguments: string } | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(v) || typeof v.name !== "string" || v.name === "") return undefined;
  const args = v.arguments ?? {};
  if (!isObject(args) && typeof args !== "string") return undefined;
  return { name: v.name, arguments: typeof args === "string" ? args : JSON.stringify(args) };
}

/** A JSON string literal's value, or undefined when it is not one. */
function jsonString(text: string): string | undefined {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The end of the longest tail of `text` that begins `tag` (0: none). */
function partialTag(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(tag.slice(0, n))) return n;
  }
  return 0;
}

/**
 * Splits the answer text of a reply into content and tool calls. Text that may begin
 * `<tool_call>` is held back until the next piece decides. A call written as Qwen3 writes
 * it (`{"name": "f", "arguments": {`...) is sent as soon as its name is known, then its
 * arguments as they come, up to the object's closing brace (strings and nesting followed);
 * any other block is read whole at its `</tool_call>`, and one that is not a call stays
 * content, as written. Whitespace around calls is dropped.
 */
export class ToolCallParser {
  #held = "";
  #inside = false;
  #calls = 0;
  /** A call just ended: whitespace before the next text or call is dropped. */
  #afterCall = false;
  /** The whitespace before the open call: dropped if it is a call, kept if it is not. */
  #gap = "";
  /** The open call's arguments are being streamed: their JSON nesting so far. */
  #args: { depth: number; inString: boolean; escaped: boolean; done: boolean } | undefined;

  /**
   * @param prefill The call's opening the server wrote into the prompt
   * ({@linkcode forcedPrefill}), read as if the model had written it.
   */
  constructor(prefill = "") {
    const at = prefill.indexOf(TOOL_CALL_OPEN);
    if (at >= 0) {
      this.#inside = true;
      this.#held = prefill.slice(at + TOOL_CALL_OPEN.length);
    }
  }

  /** How many calls were sent so far (begun, for a call whose arguments are streaming). */
  get calls(): number {
    return this.#calls;
  }

  /**
   * Adds answer text.
   *
   * @param text The next piece.
   * @returns Content and call pieces now ready (possibly none).
   */
  push(text: string): ChatDelta[] {
    const out: ChatDelta[] = [];
    let all = this.#held + text;
    this.#held = "";
    while (true) {
      if (this.#inside && this.#args) {
        all = this.#streamArguments(all, out);
        if (this.#inside) return out;
        continue;
      }
      if (this.#inside) {
        const end = all.indexOf(TOOL_CALL_CLOSE);
        const head = CALL_HEAD.exec(end < 0 ? all : all.slice(0, end));
        const name = head && jsonString(head[1]);
        if (head && name) {
          this.#callStarts(name, out);
          this.#args = { depth: 0, inString: false, escaped: false, done: false };
          all = all.slice(head[0].length);
          continue;
        }
        if (end < 0) {
          this.#held = all;
          return out;
        }
        const body = all.slice(0, end);
        all = all.slice(end + TOOL_CALL_CLOSE.length);
        this.#inside = false;
        const call = parseCall(body);
        if (call) {
          this.#callStarts(call.name, out);
          out.push({ kind: "tool_call", index: this.#calls - 1, arguments: call.arguments });
        } else {
          out.push({ kind: "answer", text: this.#gap + TOOL_CALL_OPEN + body + TOOL_CALL_CLOSE });
          this.#afterCall = false;
        }
        this.#gap = "";
        continue;
      }
      const start = all.indexOf(TOOL_CALL_OPEN);
      if (start >= 0) {
        const ahead = all.slice(0, start);
        const before = this.#afterCall ? ahead.trim() : ahead.trimEnd();
        if (before !== "") out.push({ kind: "answer", text: before });
        this.#gap = this.#afterCall && before === "" ? "" : ahead.slice(ahead.trimEnd().length);
        this.#afterCall = false;
        all = all.slice(start + TOOL_CALL_OPEN.length);
        this.#inside = true;
        continue;
      }
      // Hold back trailing whitespace and a tail that may begin `<tool_call>`.
      const keep = partialTag(all, TOOL_CALL_OPEN);
      const body = all.slice(0, all.length - keep);
      const send = body.trimEnd();
      this.#held = all.slice(send.length);
      const lead = this.#afterCall ? send.trimStart() : send;
      if (lead !== "") {
        out.push({ kind: "answer", text: lead });
        this.#afterCall = false;
      }
      return out;
    }
  }

  /** Sends a call's head: the model has named the function. */
  #callStarts(name: string, out: ChatDelta[]): void {
    out.push({ kind: "tool_call", index: this.#calls++, id: newCallId(), name, arguments: "" });
    this.#afterCall = true;
    this.#gap = "";
  }

  /**
   * Sends the streaming call's arguments from `all` up to the object's end, then skips to
   * its `</tool_call>` (the call ends there, arguments complete or not).
   *
   * @returns What follows the call, or what is held back ("" : all was used).
   */
  #streamArguments(all: string, out: ChatDelta[]): string {
    const s = this.#args!;
    const end = all.indexOf(TOOL_CALL_CLOSE);
    // A `</tool_call>` not yet complete is held back, so it never becomes arguments.
    const upto = end >= 0 ? end : all.length - partialTag(all, TOOL_CALL_CLOSE);
    let i = 0;
    for (; i < upto && !s.done; i++) {
      const c = all[i];
      if (s.inString) {
        if (s.escaped) s.escaped = false;
        else if (c === "\\") s.escaped = true;
        else if (c === '"') s.inString = false;
      } else if (c === '"') s.inString = true;
      else if (c === "{" || c === "[") s.depth++;
      else if (c === "}" || c === "]") s.done = --s.depth === 0;
    }
    if (i > 0) out.push({ kind: "tool_call", index: this.#calls - 1, arguments: all.slice(0, i) });
    if (end < 0) {
      // After the arguments only `}` and the closing tag are expected: hold them.
      this.#held = all.slice(i);
      return "";
    }
    this.#inside = false;
    this.#args = undefined;
    return all.slice(end + TOOL_CALL_CLOSE.length);
  }

  /**
   * Ends the reply.
   *
   * @returns What was held back: an unfinished call stays content, as written (one whose
   * arguments were streaming just ends).
   */
  flush(): ChatDelta[] {
    const inside = this.#inside;
    const streaming = this.#args !== undefined;
    const rest = inside ? this.#gap + TOOL_CALL_OPEN + this.#held : this.#held;
    this.#held = "";
    this.#gap = "";
    this.#inside = false;
    this.#args = undefined;
    if (streaming) return [];
    // Whitespace after text is dropped only when calls follow or precede it.
    const text = inside || this.#calls === 0
      ? rest
      : this.#afterCall
      ? rest.trim()
      : rest.trimEnd();
    return text !== "" ? [{ kind: "answer", text }] : [];
  }
}

/**
 * A chat reply's deltas with tool calls parsed out of the answer; the outcome's finish
 * reason becomes "tool_calls" when the model called a tool and stopped.
 *
 * @param deltas The reply's reasoning and answer deltas.
 * @param parser The parser (made with the request's prefill).
 * @returns The outcome of `deltas`, finish reason adjusted.
 */
export async function* withToolCalls(
  deltas: AsyncGenerator<Delta, Outcome>,
  parser: ToolCallParser,
): AsyncGenerator<ChatDelta, Outcome> {
  try {
    while (true) {
      const r = await deltas.next();
      if (r.done) {
        yield* parser.flush();
        const called = parser.calls > 0 && r.value.finishReason === "stop";
        return called ? { ...r.value, finishReason: "tool_calls" } : r.value;
      }
      if (r.value.kind === "answer") yield* parser.push(r.value.text);
      else yield r.value;
    }
  } finally {
    await deltas.return(undefined as never);
  }
}
