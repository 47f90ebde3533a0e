/**
 * Speculative decoding (docs/sampling.md#speculative-decoding), measured in two parts,
 * because a random-weight model never repeats its prompt and so cannot show what prompt
 * lookup gains:
 *
 * 1. **Verify cost** on the Qwen3-0.6B-shaped Q8 model (bench/make_model.ts; the 4-layer
 *    "medium" bench model when it is absent): the time of one verify pass over K + 1
 *    tokens (the sampled token and K drafts) as a multiple of one decode step, K = 1..8,
 *    at position 256. This bounds the speedup at any acceptance rate: a pass that emits
 *    `a + 1` tokens for `c(K)` decode steps of time gains `(a + 1) / c(K)`.
 * 2. **Workloads** on the demo model (models/demo, a small trained Qwen3, C engine,
 *    greedy and T 0.7): echo-heavy texts (a passage to repeat, a list, a code edit) and
 *    free text, speculation on and off in alternation with the same seeds (so the same
 *    tokens). It reports drafted / accepted tokens and the measured decode speed on the
 *    demo model (so small that a pass costs mostly fixed overhead), and projects the
 *    speedup on the 0.6B shape from the passes each arm made: a decode step costs 1, a
 *    verify pass of K drafts c(K) from part 1.
 * 3. **Free text on the 0.6B shape**: decode tok/s with and without speculation (what
 *    looking drafts up costs where they rarely come).
 *
 *   deno task build && deno run -A bench/speculate_bench.ts [--threads N] [--rounds R]
 *
 * Medians of R rounds (default 5); both arms of each comparison run alternately in one
 * process. On a shared or busy machine the times are noisy: say so when quoting them.
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CEngine } from "../ffi/c_engine.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import type { EngineSession } from "../src/types.ts";
import { benchModel } from "./bench_models.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const Q06 = join(ROOT, "bench/models/qwen3-0.6b-random/model.bin");
const DEMO = join(ROOT, "models/demo/model.bin");

/** Draft lengths whose verify pass is timed. */
const KS = [1, 2, 3, 4, 5, 6, 8];
/** Position of the timed steps (a prompt of this many tokens first). */
const AT = 256;

const PASSAGE = "And the king said unto the people, Go ye into the land which I gave unto your " +
  "fathers, and take the cattle and the sheep, for the land is good and the water is sweet. " +
  "And the people answered and said, All that the LORD hath spoken we will do.";
const CODE = `function total(items) {
  let sum = 0;
  for (const item of items) {
    sum += item.price * item.count;
  }
  return sum;
}
`;

/** The workloads, with their text: what each asks the model to do is in its name. */
export const WORKLOADS: readonly { name: string; echo: boolean; prompt: string }[] = [
  {
    name: "repeat a passage",
    echo: true,
    prompt: `${PASSAGE}\n\n${PASSAGE}\n\n${PASSAGE.slice(0, 40)}`,
  },
  {
    name: "continue a list",
    echo: true,
    prompt: "one, two, three, four, five, six, seven, eight, nine, ten. " +
      "one, two, three, four, five, six, seven, eight, nine, ten. one, two,",
  },
  {
    name: "code edit (rename sum to acc)",
    echo: true,
    prompt: `${CODE}\nThe same function with sum renamed to acc:\n${CODE.slice(0, 40)}`,
  },
  { name: "free text: story", echo: false, prompt: "Once upon a time there was" },
  { name: "free text: the sea", echo: false, prompt: "The sea" },
  { name: "free text: a question", echo: false, prompt: "What does water mean? Water is" },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Part 1: c(K) = verify(K + 1 tokens) / decode(1 token), medians of alternating rounds. */
async function verifyCost(path: string, threads: number | undefined, rounds: number) {
  using engine = await CEngine.load(path, { contextLength: AT + 16, threads });
  using s = engine.createSession(AT + 16);
  const prompt = Array.from({ length: AT }, (_, i) => (i * 7919) % 150000);
  await s.forward(prompt);
  const times = new Map<number, number[]>([
    [0, []],
    ...KS.map((k) => [k, []] as [number, number[]]),
  ]);
  for (let r = 0; r < rounds + 1; r++) {
    for (const k of [0, ...KS]) {
      const tokens = Array.from({ length: k + 1 }, (_, i) => 1000 + 17 * i);
      const t0 = performance.now();
      if (k === 0) await s.forward(tokens);
      else await s.verify(tokens);
      const ms = performance.now() - t0;
      if (r > 0) times.get(k)!.push(ms); // round 0 warms up
      s.rewind(AT);
    }
  }
  const decode = median(times.get(0)!);
  const cost = new Map<number, number>([[0, 1]]);
  for (const k of KS) cost.set(k, median(times.get(k)!) / decode);
  return { decode, cost, threads: engine.threads };
}

/** Wraps a session to record each pass: 0 for a plain step, K for a verify of K drafts. */
function recordPasses(session: EngineSession, passes: number[]): EngineSession {
  const forward = session.forward.bind(session);
  const verify = session.verify!.bind(session);
  session.forward = (tokens) => {
    if (tokens.length === 1) passes.push(0);
    return forward(tokens);
  };
  session.verify = (tokens) => {
    passes.push(tokens.length - 1);
    return verify(tokens);
  };
  return session;
}

function costOf(cost: Map<number, number>, k: number): number {
  // a K between measured ones takes the next measured cost up (a bound, not a fit)
  const known = [...cost.keys()].sort((a, b) => a - b);
  return cost.get(known.find((x) => x >= k) ?? known[known.length - 1])!;
}

/** Temperatures each workload runs at: greedy, and Qwen's non-thinking setting. */
const TEMPERATURES = [0, 0.7];

async function workloads(cost: Map<number, number>, rounds: number, maxTokens: number) {
  using model = await Qwen3.load(DEMO, { contextLength: 1024 });
  const rows = [];
  for (const w of WORKLOADS) {
    for (const temperature of TEMPERATURES) {
      const tps: Record<"on" | "off", number[]> = { on: [], off: [] };
      const units = { on: 0, off: 0 };
      let drafted = 0, accepted = 0, tokens = 0, passes = 0;
      for (let r = 0; r < rounds; r++) {
        for (const arm of ["off", "on"] as const) {
          const record: number[] = [];
          using session = recordPasses(model.engine.createSession(1024), record);
          // the same seed in both arms: the same tokens (sampled rounds differ by seed)
          const run = model.generate(w.prompt, {
            temperature,
            topP: 0.8,
            topK: 20,
            seed: r + 1,
            maxTokens,
            speculate: arm === "on",
            session,
          });
          await run.complete();
          const st = run.stats!;
          tps[arm].push(st.decodeTokensPerSecond);
          units[arm] += record.reduce((sum, k) => sum + costOf(cost, k), 0);
          if (arm === "on") {
            drafted += st.draftedTokens;
            accepted += st.acceptedTokens;
            tokens += st.generatedTokens;
            passes += record.length;
          }
        }
      }
      rows.push({
        name: w.name,
        temperature,
        tokens,
        drafted,
        accepted,
        passes,
        demoOn: median(tps.on),
        demoOff: median(tps.off),
        projected: units.off / units.on,
      });
    }
  }
  return rows;
}

/**
 * Part 3: decode speed on the 0.6B shape itself, speculation on and off alternately, on a
 * free-text prompt: its random weights rarely give a 3-token repeat, so this is the cost of
 * looking drafts up (and of the drafts that do come) where they cannot help.
 */
async function randomModelFreeText(path: string, threads: number | undefined, rounds: number) {
  using model = await Qwen3.load(path, { contextLength: 512, threads });
  const tps: Record<"on" | "off", number[]> = { on: [], off: [] };
  let drafted = 0, accepted = 0;
  for (let r = 0; r < rounds; r++) {
    for (const arm of ["off", "on"] as const) {
      const run = model.generate(WORKLOADS[3].prompt, {
        temperature: 0.7,
        topP: 0.8,
        topK: 20,
        seed: r + 1,
        maxTokens: 32,
        speculate: arm === "on",
      });
      await run.complete();
      tps[arm].push(run.stats!.decodeTokensPerSecond);
      if (arm === "on") {
        drafted += run.stats!.draftedTokens;
        accepted += run.stats!.acceptedTokens;
      }
    }
  }
  return { on: median(tps.on), off: median(tps.off), drafted, accepted };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: "string" },
      rounds: { type: "string", default: "5" },
      "max-tokens": { type: "string", default: "128" },
    },
  });
  const threads = values.threads === undefined ? undefined : Number(values.threads);
  const rounds = Number(values.rounds);
  const maxTokens = Number(values["max-tokens"]);
  let model = Q06;
  try {
    await Deno.stat(Q06);
  } catch {
    console.error(
      `${Q06} is absent (deno run -A bench/make_model.ts bench/models/qwen3-0.6b-random ` +
        "writes it): timing the 4-layer medium bench model instead",
    );
    model = await benchModel("medium");
  }
  const v = await verifyCost(model, threads, rounds);
  console.log(`## Verify pass cost (${model.replace(ROOT + "/", "")}, ${v.threads} threads)\n`);
  console.log(`decode step at position ${AT}: ${v.decode.toFixed(1)} ms (median of ${rounds})\n`);
  console.log("| drafts K | verify pass / decode step | tokens per pass to break even |");
  console.log("| -------: | ------------------------: | ----------------------------: |");
  for (const k of KS) {
    const c = v.cost.get(k)!;
    console.log(`| ${k} | ${c.toFixed(2)}x | ${c.toFixed(2)} of ${k + 1} |`);
  }
  const free = await randomModelFreeText(model, threads, rounds);
  console.log(
    `\nFree text ("${WORKLOADS[3].prompt}", T 0.7, 32 tokens) on that model: ` +
      `${free.on.toFixed(2)} tok/s with speculation, ${free.off.toFixed(2)} without ` +
      `(${(free.on / free.off).toFixed(3)}x; ${free.accepted} of ${free.drafted} drafts taken)`,
  );
  const rows = await workloads(v.cost, rounds, maxTokens);
  console.log(
    `\n## Workloads (demo model, C engine, ${maxTokens} tokens, ${rounds} runs each; ` +
      "T 0.7 with top-p 0.8, top-k 20, seeds 1..runs)\n",
  );
  console.log(
    "| workload | T | drafted | accepted | passes / tokens | demo model tok/s on / off | " +
      "projected 0.6B speedup |",
  );
  console.log("| --- | --: | --: | --: | --: | --: | --: |");
  for (const r of rows) {
    const rate = r.drafted ? ((100 * r.accepted) / r.drafted).toFixed(0) : "0";
    console.log(
      `| ${r.name} | ${r.temperature} | ${r.drafted} | ${r.accepted} (${rate}%) | ` +
        `${r.passes} / ${r.tokens} | ${r.demoOn.toFixed(0)} / ${r.demoOff.toFixed(0)} = ` +
        `${(r.demoOn / r.demoOff).toFixed(2)}x | ${r.projected.toFixed(2)}x |`,
    );
  }
}

if (import.meta.main) await main();
