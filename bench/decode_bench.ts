/**
 * One decode step (one token at position 32, then rewound) of the C engine against the
 * TypeScript reference engine on the same small random model: `deno bench` prints the C
 * engine's speed as a multiple of the TypeScript one (the baseline).
 *
 *   deno task bench            (all bench files)
 *   deno bench -A bench/decode_bench.ts
 * @module
 */

import { CEngine } from "../ffi/c_engine.ts";
import { TsEngine } from "../src/reference/ts_engine.ts";
import type { Engine, EngineSession } from "../src/types.ts";
import { benchModel, benchTokens } from "./bench_models.ts";

const path = await benchModel("small");
const PROMPT = benchTokens(32);

/** A session holding the 32-token prompt; each step decodes one token and rewinds. */
async function decodeSession(engine: Engine): Promise<EngineSession> {
  const session = engine.createSession(64);
  await session.forward(PROMPT);
  return session;
}

const c1 = await CEngine.load(path, { contextLength: 64, threads: 1 });
const c1Session = await decodeSession(c1);
const cAll = await CEngine.load(path, { contextLength: 64 });
const cAllSession = await decodeSession(cAll);
const ts = await TsEngine.load(path, { contextLength: 64 });
const tsSession = await decodeSession(ts);

async function step(session: EngineSession): Promise<void> {
  await session.forward([9707]);
  session.rewind(PROMPT.length);
}

Deno.bench({
  name: "TypeScript engine",
  group: "decode step (small model)",
  baseline: true,
  n: 15,
  warmup: 2,
  fn: async () => {
    await step(tsSession);
  },
});

Deno.bench({
  name: "C engine, 1 thread",
  group: "decode step (small model)",
  n: 300,
  warmup: 20,
  fn: async () => {
    await step(c1Session);
  },
});

Deno.bench({
  name: `C engine, ${cAll.threads} threads`,
  group: "decode step (small model)",
  n: 300,
  warmup: 20,
  fn: async () => {
    await step(cAllSession);
  },
});
