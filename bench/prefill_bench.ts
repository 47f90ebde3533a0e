/**
 * Prefill speed of the C engine: 128 tokens in one call (processed in blocks as
 * matrix-matrix products) on the Qwen3-0.6B-shaped model (or 0.6B's layers x4 when
 * bench/make_model.ts has not written it), at 1 thread and at every core; and on the small
 * model, a 32-token prompt in one call against the same prompt fed one call per token
 * (the baseline: how a token-at-a-time engine such as qwen3.c reads a prompt, each step
 * a matrix-vector pass that also computes logits), so `deno bench` prints what batching
 * gains.
 *
 *   deno bench -A bench/prefill_bench.ts
 * @module
 */

import { CEngine } from "../ffi/c_engine.ts";
import type { EngineSession } from "../src/types.ts";
import { benchModel, benchTokens, largeBenchModel } from "./bench_models.ts";

const large = await largeBenchModel();
const small = await benchModel("small");
const PP = benchTokens(128);
const SHORT = benchTokens(32, 7);

const large1 = await CEngine.load(large.path, { contextLength: 160, threads: 1 });
const largeAll = await CEngine.load(large.path, { contextLength: 160 });
const small1 = await CEngine.load(small, { contextLength: 64, threads: 1 });
const sessions = {
  large1: large1.createSession(160),
  largeAll: largeAll.createSession(160),
  small1: small1.createSession(64),
};

async function prefill(session: EngineSession, tokens: number[]): Promise<void> {
  session.rewind(0);
  await session.forward(tokens);
}

async function oneByOne(session: EngineSession, tokens: number[]): Promise<void> {
  session.rewind(0);
  for (const t of tokens) await session.forward([t]);
}

Deno.bench({
  name: "128 tokens, 1 thread",
  group: `prefill 128 tokens (${large.name})`,
  baseline: true,
  n: 4,
  warmup: 1,
  fn: async () => {
    await prefill(sessions.large1, PP);
  },
});

Deno.bench({
  name: `128 tokens, ${largeAll.threads} threads`,
  group: `prefill 128 tokens (${large.name})`,
  n: 4,
  warmup: 1,
  fn: async () => {
    await prefill(sessions.largeAll, PP);
  },
});

Deno.bench({
  name: "one call per token",
  group: "prefill 32 tokens (small model, 1 thread)",
  baseline: true,
  n: 20,
  warmup: 2,
  fn: async () => {
    await oneByOne(sessions.small1, SHORT);
  },
});

Deno.bench({
  name: "one call, batched",
  group: "prefill 32 tokens (small model, 1 thread)",
  n: 20,
  warmup: 2,
  fn: async () => {
    await prefill(sessions.small1, SHORT);
  },
});
