/**
 * `qwen3 serve`: an OpenAI-compatible HTTP server over one loaded {@linkcode Qwen3} model,
 * on `Deno.serve`. Routes, the API key and errors are decided here; the endpoints are in
 * handlers.ts.
 * @module
 */

import type { Qwen3 } from "../api/qwen3.ts";
import { CEngine } from "../../ffi/c_engine.ts";
import { ApiError, errorResponse } from "./errors.ts";
import * as api from "./handlers.ts";
import { applyTemplate } from "./apply_template.ts";
import { embeddings } from "./embeddings.ts";
import { checkApiKey, json } from "./http.ts";
import { Metrics } from "./metrics.ts";
import { buildChatPage } from "./page.ts";
import { loadChatTemplate } from "./prompt.ts";
import { PromptCache } from "./prompt_cache.ts";
import { SlotPool } from "./slots.ts";

/** Options of {@linkcode startServer}; the defaults are `qwen3 serve`'s. */
export interface ServerOptions {
  /**
   * Address to listen on.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * Port; 0 picks a free one.
   *
   * @default {8080}
   */
  port?: number;
  /**
   * Requests generating at once, each in its own context over the one model.
   *
   * @default {1}
   */
  parallel?: number;
  /**
   * Requests waiting for a slot before more are refused with 503.
   *
   * @default {16}
   */
  queue?: number;
  /**
   * Most bytes of a request body (larger: 413).
   *
   * @default {1048576}
   */
  maxBody?: number;
  /** When set, every route but /health needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /**
   * The model's id in replies (default: the model file's name).
   */
  modelName?: string;
  /**
   * Keep each slot's KV cache between requests and prefill only what a prompt does not
   * share with it (replies are the same either way).
   *
   * @default {true}
   */
  promptCache?: boolean;
  /**
   * Speculative decoding by prompt lookup for every request (replies are the same either
   * way, docs/sampling.md#speculative-decoding); false turns it off.
   *
   * @default {true on the C engine, false on the TypeScript engine}
   */
  speculate?: boolean;
  /**
   * Serve `GET /metrics` (Prometheus text format); otherwise it is a 404.
   *
   * @default {false}
   */
  metrics?: boolean;
  /**
   * Answer browsers from this origin (`Access-Control-Allow-Origin`, and preflight
   * `OPTIONS` requests); no CORS headers when absent.
   */
  cors?: string;
  /**
   * Most messages in one chat request (more: 400 naming `messages`).
   *
   * @default {1024}
   */
  maxMessages?: number;
  /**
   * Seconds a request may take from its arrival: one still waiting for a slot then is
   * refused with 503 (`Retry-After`); one still generating stops there and ends as if it had
   * reached `max_tokens` (`finish_reason` "length", streamed or not), with a line in the log.
   *
   * @default {600}
   */
  timeout?: number;
  /**
   * A Jinja chat template file to render conversations with, instead of the model's own
   * (a GGUF's `tokenizer.chat_template`, a Hugging Face folder's beside the model file,
   * else the stock Qwen3 one).
   */
  chatTemplateFile?: string;
  /** Where the server's log lines go (a request stopped by `timeout`, a template replaced).
   * Default: stderr. */
  log?: (line: string) => void;
  /** Called once listening, with the address. */
  onListen?: (addr: Deno.NetAddr) => void;
}

/** A running server. */
export interface Qwen3Server extends AsyncDisposable {
  /** The base URL, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  /** The address listened on. */
  readonly addr: Deno.NetAddr;
  /** The generation slots (how many are busy, how many wait). */
  readonly pool: SlotPool;
  /** Where the chat template conversations are rendered with came from (a file, a GGUF's
   * `tokenizer.chat_template`, or the stock Qwen3 one); undefined until `ready`. */
  readonly chatTemplate: string | undefined;
  /** Resolves once the model is loaded and the server answers every route; rejects with
   * the load's error (the server then stops). */
  readonly ready: Promise<void>;
  /** Resolves when the server has stopped; rejects with the error of a failed load. */
  readonly finished: Promise<void>;
  /**
   * Stops listening: generations in progress end (streams get their last chunks),
   * requests waiting for a slot are refused, and it resolves once all replies are sent.
   */
  shutdown(): Promise<void>;
}

type Route = (ctx: api.ServerContext, req: Request) => Response | Promise<Response>;

/** The chat page (web/, bundled by esbuild on the first request, then kept in memory). */
async function chatPage(): Promise<Response> {
  let html: string;
  try {
    html = await buildChatPage();
  } catch (e) {
    throw new ApiError(
      500,
      "server_error",
      `the chat page could not be built: ${(e as Error).message}`,
    );
  }
  return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } });
}

/** The methods and request headers a CORS preflight is told are allowed. */
const CORS_METHODS = "GET, POST, OPTIONS";
const CORS_HEADERS = "Authorization, Content-Type";

/** Routes anyone may use without the API key: static content and the health check. */
const PUBLIC = new Set(["/", "/health"]);

/** Seconds a client is told to wait (`Retry-After`) while the model loads. */
const LOADING_RETRY_SECONDS = 5;

const ROUTES: Record<string, Record<string, Route>> = {
  "/health": { GET: () => json({ status: "ok" }) },
  "/v1/models": { GET: api.models },
  "/models": { GET: api.models },
  "/v1/chat/completions": { POST: api.chatCompletions },
  "/chat/completions": { POST: api.chatCompletions },
  "/v1/completions": { POST: api.completions },
  "/completions": { POST: api.completions },
  "/v1/embeddings": { POST: embeddings },
  "/tokenize": { POST: api.tokenize },
  "/detokenize": { POST: api.detokenize },
  "/apply-template": { POST: applyTemplate },
};

function metricsText(ctx: api.ServerContext): Response {
  const engine = ctx.model.engine;
  const batch = engine instanceof CEngine ? engine.decodeBatchStats : undefined;
  return new Response(ctx.metrics.render(ctx.pool, batch), {
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
  });
}

function positiveInteger(name: string, v: number, min: number): number {
  if (!Number.isInteger(v) || v < min) {
    throw new RangeError(`Cannot start the server: ${name} must be an integer >= ${min}, got ${v}`);
  }
  return v;
}

/**
 * Serves `model` over HTTP with OpenAI's API: `POST /v1/chat/completions`,
 * `POST /v1/completions`, `POST /v1/embeddings`, `GET /v1/models`, llama-server's `GET /health`,
 * `POST /tokenize`, `POST /detokenize`, `POST /apply-template`, the chat page at `GET /`,
 * and `GET /metrics` with `metrics`. Conversations are rendered with the model's own chat
 * template (prompt.ts). Each slot keeps its KV cache between requests (`promptCache`).
 *
 * `model` may be a promise (a load in progress): the server listens at once and, until the
 * model is there, answers `GET /health` with 503 `{"status": "loading"}` and every other
 * route but the page with 503 and `Retry-After`; a failed load stops the server and
 * `finished` rejects with its error. The model stays the caller's: dispose it after the
 * server has stopped.
 *
 * @param model The loaded model, or its load.
 * @param opts Address, slots, queue, body and message limits, deadline, API key, chat
 * template, prompt cache, metrics and CORS.
 * @returns The running server.
 * @throws {RangeError} for a bad option; `Deno.errors.AddrInUse` when the port is taken.
 *
 * @example Serve the demo model on a free port and ask it something
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 * import { startServer } from "@q3/qwen3/cli";
 *
 * using model = await Qwen3.load(await demoModelPath());
 * await using server = startServer(model, { port: 0, onListen: () => {} });
 * const res = await fetch(`${server.url}/v1/chat/completions`, {
 *   method: "POST",
 *   body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], max_tokens: 4 }),
 * });
 * console.log((await res.json()).choices[0].message.content);
 * ```
 */
export function startServer(model: Qwen3 | Promise<Qwen3>, opts: ServerOptions = {}): Qwen3Server {
  const parallel = positiveInteger("parallel", opts.parallel ?? 1, 1);
  const queue = positiveInteger("queue", opts.queue ?? 16, 0);
  const maxBody = positiveInteger("maxBody", opts.maxBody ?? 1 << 20, 1);
  const maxMessages = positiveInteger("maxMessages", opts.maxMessages ?? 1024, 1);
  const timeout = opts.timeout ?? 600;
  if (!(Number.isFinite(timeout) && timeout > 0)) {
    throw new RangeError(
      `Cannot start the server: timeout must be a number of seconds > 0, got ${timeout}`,
    );
  }
  const log = opts.log ?? ((line: string) => console.error(line));
  const closing = new AbortController();
  const pool = new SlotPool(parallel, queue);
  const metrics = new Metrics();
  // Filled in once the model (and its chat template) is there.
  let ctx: api.ServerContext | undefined;
  const loading = model instanceof Promise;
  const ready = (async () => {
    const m = await model;
    const template = await loadChatTemplate(m, { file: opts.chatTemplateFile, note: log });
    let contextLength: number;
    {
      using probe = m.engine.createSession();
      contextLength = probe.contextLength;
    }
    ctx = {
      model: m,
      template,
      modelName: opts.modelName ?? m.path.split(/[\\/]/).pop()!,
      contextLength,
      pool,
      maxBody,
      maxMessages,
      timeoutMs: timeout * 1000,
      log,
      started: Math.floor(Date.now() / 1000),
      closing: closing.signal,
      cache: new PromptCache(m, parallel, opts.promptCache ?? true),
      metrics,
      speculate: opts.speculate,
    };
  })();
  const apiKey = opts.apiKey;
  const routes = opts.metrics ? { ...ROUTES, "/metrics": { GET: metricsText } } : ROUTES;
  const cors = opts.cors;

  /** The context; for a server started on a model's load, a 503 while it loads. */
  const context = async (): Promise<api.ServerContext> => {
    if (ctx) return ctx;
    if (!loading) {
      await ready;
      return ctx!;
    }
    throw new ApiError(503, "loading", "the model is loading: retry in a few seconds", {
      headers: { "retry-after": String(LOADING_RETRY_SECONDS) },
    });
  };

  const answer = async (req: Request, pathname: string): Promise<Response> => {
    try {
      const route = routes[pathname];
      if (cors !== undefined && req.method === "OPTIONS") {
        // A preflight carries no credentials: it is answered before the API key check.
        return new Response(null, {
          status: 204,
          headers: {
            "access-control-allow-methods": CORS_METHODS,
            "access-control-allow-headers": CORS_HEADERS,
            "access-control-max-age": "600",
          },
        });
      }
      if (apiKey !== undefined && !PUBLIC.has(pathname)) await checkApiKey(req, apiKey);
      // The page needs no model: it is served while the model loads.
      if (pathname === "/") {
        if (req.method !== "GET") {
          throw new ApiError(405, "method_not_allowed", "/ takes GET", {
            headers: { allow: "GET" },
          });
        }
        return await chatPage();
      }
      if (!route) return api.notFound(req);
      const run = route[req.method];
      if (!run) {
        throw new ApiError(405, "method_not_allowed", `${pathname} takes ${Object.keys(route)}`, {
          headers: { allow: Object.keys(route).join(", ") },
        });
      }
      if (!ctx && loading && pathname === "/health") {
        // llama-server's answer while its model loads.
        return new Response(JSON.stringify({ status: "loading" }), {
          status: 503,
          headers: {
            "content-type": "application/json",
            "retry-after": String(LOADING_RETRY_SECONDS),
          },
        });
      }
      return await run(await context(), req);
    } catch (e) {
      return errorResponse(e);
    }
  };
  const handle = async (req: Request): Promise<Response> => {
    const { pathname } = new URL(req.url);
    const res = await answer(req, pathname);
    metrics.request(
      Object.hasOwn(routes, pathname) || pathname === "/" ? pathname : "other",
      res.status,
    );
    if (cors !== undefined) {
      res.headers.set("access-control-allow-origin", cors);
      res.headers.append("vary", "Origin");
    }
    return res;
  };

  const server = Deno.serve({
    hostname: opts.hostname ?? "127.0.0.1",
    port: opts.port ?? 8080,
    onListen: opts.onListen ?? (() => {}),
  }, handle);
  // Open streams would keep server.shutdown() waiting: their generations end first.
  const shutdown = async () => {
    closing.abort();
    await server.shutdown();
    await finished.catch(() => {});
  };
  // A failed load ends the server, and `finished` with the load's error.
  let failure: { error: unknown } | undefined;
  ready.catch((error) => {
    failure = { error };
    closing.abort();
    void server.shutdown();
  });
  // The slots' sessions are freed once the last generation has ended.
  const finished = server.finished.then(() => {
    ctx?.cache[Symbol.dispose]();
    if (failure) throw failure.error;
  });
  // Handled here too, so a caller that only awaits `ready` or calls shutdown() is not
  // reported an unhandled rejection.
  finished.catch(() => {});
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    url: `http://${host}:${addr.port}`,
    addr,
    pool,
    get chatTemplate() {
      return ctx?.template.file;
    },
    ready,
    finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
