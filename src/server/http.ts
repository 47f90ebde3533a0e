/**
 * HTTP plumbing: a JSON body read within a byte limit, the API key checked in constant
 * time, JSON replies and server-sent events.
 * @module
 */

import { ApiError } from "./errors.ts";

/**
 * Reads and parses a JSON body of at most `limit` bytes; a larger one is refused as soon as
 * it passes the limit (or at once, by its Content-Length), without reading the rest.
 *
 * @param req The request.
 * @param limit Most bytes of body.
 * @returns The parsed value.
 * @throws {ApiError} 413 over the limit; 400 when the body is not JSON.
 */
export async function readJson(req: Request, limit: number): Promise<unknown> {
  const tooLarge = () =>
    new ApiError(413, "request_too_large", `the request body is over the limit of ${limit} bytes`);
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > limit) throw tooLarge();
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    const reader = req.body.getReader();
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > limit) {
        await reader.cancel();
        throw tooLarge();
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new ApiError(400, "invalid_json", `the request body is not valid JSON: ${why}`);
  }
}

/** SHA-256 of text: equal-length digests, so the comparison's time says nothing of the key. */
async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/**
 * Checks `Authorization: Bearer KEY` against the server's key in constant time.
 *
 * @param req The request.
 * @param key The server's key.
 * @throws {ApiError} 401 when the header is missing or the key differs.
 */
export async function checkApiKey(req: Request, key: string): Promise<void> {
  const header = req.headers.get("authorization") ?? "";
  const given = header.startsWith("Bearer ") ? header.slice(7).trim() : "";
  const [a, b] = await Promise.all([digest(given), digest(key)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  if (diff !== 0 || given === "") {
    throw new ApiError(
      401,
      "invalid_api_key",
      "missing or wrong API key: send `Authorization: Bearer KEY`",
    );
  }
}

/** A JSON reply. */
export function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json" },
  });
}

const encoder = new TextEncoder();

/** One server-sent event carrying `data` (a JSON value, or the text `[DONE]`). */
export function sseEvent(data: unknown): Uint8Array {
  return encoder.encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
}

/**
 * A server-sent-event response fed by `events`; when the client goes away the stream is
 * cancelled and `abort` fires, so the generation behind it stops and frees its slot.
 *
 * @param events The JSON payloads, in order; `[DONE]` is sent after the last.
 * @param abort Aborted when the client disconnects.
 * @returns The streaming response.
 */
export function sseResponse(events: AsyncIterable<unknown>, abort: AbortController): Response {
  const iterator = events[Symbol.asyncIterator]();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await iterator.next();
        if (done) {
          controller.enqueue(sseEvent("[DONE]"));
          controller.close();
        } else {
          controller.enqueue(sseEvent(value));
        }
      } catch (e) {
        // Headers are sent: the error travels as a last event, OpenAI-style.
        const message = e instanceof Error ? e.message : String(e);
        controller.enqueue(sseEvent({ error: { message, type: "server_error", code: null } }));
        controller.close();
      }
    },
    async cancel() {
      abort.abort();
      await iterator.return?.();
    },
  });
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      "connection": "keep-alive",
    },
  });
}
