/**
 * The chat page's reader of OpenAI-style server-sent events: `data: {json}` lines split by blank
 * lines, closed by `data: [DONE]`. No DOM here, so Deno tests import it directly.
 * @module
 */

/** One `delta` of a `chat.completion.chunk`: what the next token added. */
export interface ChatDelta {
  /** Set on the first chunk only: always `"assistant"`. */
  role?: string;
  /** Answer text. */
  content?: string | null;
  /** Qwen3's thinking text (the `<think>` block), kept apart from the answer. */
  reasoning_content?: string | null;
}

/** Token counts the server sends in the last chunk when `stream_options.include_usage` is set. */
export interface ChatUsage {
  /** Tokens in the rendered prompt. */
  prompt_tokens: number;
  /** Tokens generated, thinking included. */
  completion_tokens: number;
  /** The sum of the two. */
  total_tokens: number;
}

/** One `chat.completion.chunk` as the server streams it. */
export interface ChatChunk {
  /** Same for every chunk of one answer. */
  id?: string;
  /** Always `"chat.completion.chunk"`. */
  object?: string;
  /** Unix seconds. */
  created?: number;
  /** The model that answers. */
  model?: string;
  /** One entry while tokens stream; empty in the usage chunk. */
  choices: { index: number; delta: ChatDelta; finish_reason: string | null }[];
  /** Present in the usage chunk only. */
  usage?: ChatUsage;
}

/**
 * Yields the data of each server-sent event in `body` as it arrives, until `data: [DONE]` or the
 * end of the stream. Events may be cut anywhere across network reads; lines may end in `\n` or
 * `\r\n`; several `data:` lines of one event are joined by `\n`; comments (`:`) are skipped.
 *
 * @param body the response body of a streaming request
 * @returns an async iterator of each event's data
 * @example Reading events from a response
 * ```ts
 * import { readEvents } from "./sse.ts";
 * const body = new Response("data: {\"a\":1}\n\ndata: [DONE]\n\n").body!;
 * for await (const data of readEvents(body)) console.log(JSON.parse(data).a); // 1
 * ```
 */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data: string[] = [];
  try {
    while (true) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data.length) {
            const event = data.join("\n");
            data = [];
            if (event === "[DONE]") return;
            yield event;
          }
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
        // Other fields (event:, id:, retry:) and comments (":") carry nothing for a chat.
      }
      if (done) {
        // A stream cut without its closing blank line still delivers what it had.
        if (buffer.startsWith("data:")) {
          data.push(buffer.slice(buffer.startsWith("data: ") ? 6 : 5));
        }
        const event = data.join("\n");
        if (data.length && event !== "[DONE]") yield event;
        return;
      }
    }
  } finally {
    // After [DONE], or when the caller stops early, let go of the connection too.
    await reader.cancel().catch(() => {});
  }
}

/**
 * Parses one event's data as a chat chunk.
 *
 * @param data the text after `data:`
 * @returns the chunk
 * @throws {Error} when the data is not JSON, or the server sent `{"error": {...}}` mid-stream
 */
export function parseChunk(data: string): ChatChunk {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    throw new Error(`Cannot read the server's stream: an event is not JSON: ${data.slice(0, 80)}`);
  }
  const error = errorMessage(value);
  if (error !== undefined) throw new Error(error);
  const chunk = value as ChatChunk;
  if (!Array.isArray(chunk.choices)) chunk.choices = [];
  return chunk;
}

/**
 * The message of an OpenAI-style error body `{"error": {"message": ...}}`, or `undefined` when
 * `value` is not one.
 *
 * @param value a parsed JSON body
 * @returns the message, or `undefined`
 */
export function errorMessage(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || !("error" in value)) return undefined;
  const error = (value as { error: unknown }).error;
  if (typeof error === "string") return error;
  if (typeof error === "object" && error !== null && "message" in error) {
    return String((error as { message: unknown }).message);
  }
  return JSON.stringify(error);
}
