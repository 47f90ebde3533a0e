/**
 * `qwen3 serve`: an OpenAI-compatible HTTP server over one loaded {@linkcode Qwen3} model,
 * on `Deno.serve`. Routes, the API key and errors are decided here; the endpoints are in
 * handlers.ts.
 * @module
 */

import type { Qwen3 } from "../api/qwen3.ts";
import { ApiError, errorResponse } from "./errors.ts";
import * as api from "./handlers.ts";
import { applyTemplate } from "./apply_template.ts";
import { checkApiKey, json } from "./http.ts";
import { Metrics } from "./metrics.ts";
import { buildChatPage } from "./page.ts";
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
  /** Resolves when the server has stopped. */
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

const ROUTES: Record<string, Record<string, Route>> = {
  "/": { GET: chatPage },
  "/health": { GET: () => json({ status: "ok" }) },
  "/v1/models": { GET: api.models },
  "/models": { GET: api.models },
  "/v1/chat/completions": { POST: api.chatCompletions },
  "/chat/completions": { POST: api.chatCompletions },
  "/v1/completions": { POST: api.completions },
  "/completions": { POST: api.completions },
  "/tokenize": { POST: api.tokenize },
  "/detokenize": { POST: api.detokenize },
  "/apply-template": { POST: applyTemplate },
};

function metricsText(ctx: api.ServerContext): Response {
  return new Response(ctx.metrics.render(ctx.pool), {
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
 * `POST /v1/completions`, `GET /v1/models`, llama-server's `GET /health`,
 * `POST /tokenize`, `POST /detokenize`, the chat page at `GET /`, and `GET /metrics` with
 * `metrics`. Each slot keeps its KV cache between requests (`promptCache`). The model stays
 * the caller's: dispose it after the server has stopped.
 *
 * @param model The loaded model.
 * @param opts Address, slots, queue, body limit, API key, prompt cache, metrics and CORS.
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
export function startServer(model: Qwen3, opts: ServerOptions = {}): Qwen3Server {
  const parallel = positiveInteger("parallel", opts.parallel ?? 1, 1);
  const queue = positiveInteger("queue", opts.queue ?? 16, 0);
  const maxBody = positiveInteger("maxBody", opts.maxBody ?? 1 << 20, 1);
  let contextLength: number;
  {
    using probe = model.engine.createSession();
    contextLength = probe.contextLength;
  }
  const closing = new AbortController();
  const pool = new SlotPool(parallel, queue);
  const ctx: api.ServerContext = {
    model,
    modelName: opts.modelName ?? model.path.split(/[\\/]/).pop()!,
    contextLength,
    pool,
    maxBody,
    started: Math.floor(Date.now() / 1000),
    closing: closing.signal,
    cache: new PromptCache(model, parallel, opts.promptCache ?? true),
    metrics: new Metrics(),
    speculate: opts.speculate,
  };
  const apiKey = opts.apiKey;
  const routes = opts.metrics ? { ...ROUTES, "/metrics": { GET: () => metricsText(ctx) } } : ROUTES;
  const cors = opts.cors;

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
      if (!route) return api.notFound(req);
      const run = route[req.method];
      if (!run) {
        throw new ApiError(405, "method_not_allowed", `${pathname} takes ${Object.keys(route)}`, {
          headers: { allow: Object.keys(route).join(", ") },
        });
      }
      return await run(ctx, req);
    } catch (e) {
      return errorResponse(e);
    }
  };
  const handle = async (req: Request): Promise<Response> => {
    const { pathname } = new URL(req.url);
    const res = await answer(req, pathname);
    ctx.metrics.request(Object.hasOwn(routes, pathname) ? pathname : "other", res.status);
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
    await finished;
  };
  // The slots' sessions are freed once the last generation has ended.
  const finished = server.finished.finally(() => ctx.cache[Symbol.dispose]());
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    url: `http://${host}:${addr.port}`,
    addr,
    pool: ctx.pool,
    finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
