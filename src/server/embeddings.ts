/**
 * `POST /v1/embeddings` in OpenAI's shape: `input` (a string, an array of strings, an array
 * of token ids, or an array of such arrays), `encoding_format` ("float" or "base64":
 * little-endian float32 bytes), `dimensions` (Matryoshka truncation), `model`, and `usage`.
 * Each input runs through {@linkcode Qwen3.embed}'s path (docs/embeddings.md).
 * @module
 */

import { embeddingDimensions, embedTokenInputs } from "../api/embed.ts";
import { Qwen3Error } from "../errors.ts";
import { ApiError, badField } from "./errors.ts";
import { json, readJson } from "./http.ts";
import type { ServerContext } from "./handlers.ts";
import type { Slot } from "./slots.ts";
import { asObject } from "./validate.ts";

/** Most inputs in one request (OpenAI's limit). */
export const MAX_EMBEDDING_INPUTS = 2048;

/** A checked `POST /v1/embeddings` body. */
export interface EmbeddingRequest {
  /** Each input's token ids, ending with `<|endoftext|>`. */
  inputs: number[][];
  /** Values kept per embedding. */
  dimensions: number;
  /** How the vectors are written. */
  encoding: "float" | "base64";
}

function isTokenArray(v: unknown): v is unknown[] {
  return Array.isArray(v) && v.every((t) => typeof t === "number");
}

/** Token ids as given, checked, with `<|endoftext|>` appended unless already last. */
function tokenInput(ctx: ServerContext, ids: unknown[], param: string): number[] {
  if (ids.length === 0) throw badField(param, "must not be empty");
  const vocab = ctx.model.config.vocabSize;
  ids.forEach((t, i) => {
    if (!Number.isInteger(t) || (t as number) < 0 || (t as number) >= vocab) {
      throw badField(`${param}[${i}]`, `must be a token id in 0..${vocab - 1}, got ${t}`);
    }
  });
  const out = ids as number[];
  const end = ctx.model.specialTokens.endOfText;
  return out[out.length - 1] === end ? [...out] : [...out, end];
}

/**
 * Checks a request body and turns every input into token ids: strings through
 * {@linkcode Qwen3.embeddingTokens} (with the body's `instruction`, an extension of this
 * server), token arrays as given with `<|endoftext|>` appended unless already last.
 *
 * @param ctx The server (model, context length).
 * @param value The parsed JSON body.
 * @returns The inputs' ids, the dimensions and the encoding.
 * @throws {ApiError} 400 naming the field: `input` missing, empty, of the wrong type or
 * too long for the context; `encoding_format`, `dimensions`, `model`, `instruction` bad.
 */
export function parseEmbeddingRequest(ctx: ServerContext, value: unknown): EmbeddingRequest {
  const body = asObject(value);
  const model = body.model;
  if (model !== undefined && model !== null && typeof model !== "string") {
    throw badField("model", `must be a string, got ${JSON.stringify(model)}`);
  }
  const format = body.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") {
    throw badField("encoding_format", `must be "float" or "base64", got ${JSON.stringify(format)}`);
  }
  let dimensions: number;
  try {
    dimensions = embeddingDimensions(
      (body.dimensions ?? undefined) as number | undefined,
      ctx.model.config.dim,
    );
  } catch (e) {
    if (!(e instanceof Qwen3Error)) throw e;
    throw badField(
      "dimensions",
      `must be an integer in 1..${ctx.model.config.dim} (the model's width), got ${
        JSON.stringify(body.dimensions)
      }`,
    );
  }
  const instruction = body.instruction ?? undefined;
  if (instruction !== undefined && typeof instruction !== "string") {
    throw badField("instruction", `must be a string, got ${JSON.stringify(instruction)}`);
  }
  const input = body.input;
  const bad = () =>
    badField(
      "input",
      "must be a string, an array of strings, an array of token ids or an array of arrays " +
        "of token ids",
    );
  if (input === undefined || input === null) throw badField("input", "is required");
  let list: unknown[];
  if (typeof input === "string") list = [input];
  else if (!Array.isArray(input)) throw bad();
  else if (input.length === 0) throw badField("input", "must not be empty");
  else if (isTokenArray(input)) list = [input];
  else list = input;
  if (list.length > MAX_EMBEDDING_INPUTS) {
    throw badField("input", `has ${list.length} entries, more than ${MAX_EMBEDDING_INPUTS}`);
  }
  const single = typeof input === "string" || isTokenArray(input);
  const inputs = list.map((v, i) => {
    const param = single ? "input" : `input[${i}]`;
    let ids: number[];
    if (typeof v === "string") {
      if (v === "") throw badField(param, "must not be an empty string");
      ids = ctx.model.embeddingTokens(v, instruction || undefined);
    } else if (isTokenArray(v)) {
      ids = tokenInput(ctx, v, param);
    } else {
      throw bad();
    }
    if (ids.length > ctx.contextLength) {
      throw badField(
        param,
        `has ${ids.length} tokens (with <|endoftext|>), more than the context length ` +
          `${ctx.contextLength}; it is not truncated`,
      );
    }
    return ids;
  });
  return { inputs, dimensions, encoding: format };
}

/** A vector as OpenAI's base64 encoding: its float32 values, little-endian. */
export function base64Embedding(v: Float32Array): string {
  const bytes = new Uint8Array(v.length * 4);
  const view = new DataView(bytes.buffer);
  v.forEach((x, i) => view.setFloat32(i * 4, x, true));
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/**
 * `POST /v1/embeddings`: checks the body, waits for a generation slot (embeddings share the
 * `parallel` limit, queue and `timeout` with completions), embeds the inputs one after
 * another in a session of their own (the slot's cached prompt is left alone), and answers
 * `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
 * "usage": {"prompt_tokens", "total_tokens"}}`.
 *
 * @param ctx The server.
 * @param req The request.
 * @returns The JSON reply.
 * @throws {ApiError} 400 naming the field; 503 when the line is full, the server shuts
 * down, or the server's `timeout` passes (checked between inputs).
 */
export async function embeddings(ctx: ServerContext, req: Request): Promise<Response> {
  const deadline = AbortSignal.timeout(ctx.timeoutMs);
  const r = parseEmbeddingRequest(ctx, await readJson(req, ctx.maxBody));
  const signal = AbortSignal.any([req.signal, ctx.closing, deadline]);
  const failure = (e: unknown, what: string) => {
    if (ctx.closing.aborted) {
      return new ApiError(503, "shutting_down", "the server is shutting down");
    }
    if (deadline.aborted && !req.signal.aborted) {
      return new ApiError(
        503,
        "timeout",
        `${what} within the server's timeout of ${ctx.timeoutMs / 1000} s`,
        { headers: { "retry-after": "1" } },
      );
    }
    return e;
  };
  let slot: Slot;
  try {
    slot = await ctx.pool.acquire(signal);
  } catch (e) {
    throw failure(e, "no slot came free");
  }
  let vectors: Float32Array[];
  try {
    vectors = await embedTokenInputs(ctx.model.engine, r.inputs, r.dimensions, signal);
  } catch (e) {
    throw failure(e, `the ${r.inputs.length} inputs were not embedded`);
  } finally {
    slot[Symbol.dispose]();
  }
  const tokens = r.inputs.reduce((n, ids) => n + ids.length, 0);
  return json({
    object: "list",
    data: vectors.map((v, index) => ({
      object: "embedding",
      index,
      embedding: r.encoding === "base64" ? base64Embedding(v) : Array.from(v),
    })),
    model: ctx.modelName,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  });
}
