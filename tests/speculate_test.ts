/**
 * Speculative decoding by prompt lookup (docs/sampling.md#speculative-decoding): the drafts,
 * and that generation with it gives exactly the tokens generation without it gives, on both
 * engines: greedy on many echo-heavy and free-text prompts, seeded sampling with every
 * filter on, at maxTokens and context edges, after an early break and across chat turns;
 * plus a chi-square test that sampling's output distribution is unchanged.
 * Uses the shipped demo model (a trained model, so its text repeats as real text does).
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Qwen3, type Qwen3GenerateOptions as GenerateOptions } from "../src/api/qwen3.ts";
import { PromptLookup } from "../src/api/speculate.ts";
import { emptyResult, runGeneration } from "../src/api/generate.ts";
import { Sampler } from "../src/text/sampler.ts";
import { ANY_JSON, JsonTokenConstraint } from "../src/text/json_constraint.ts";
import type { EngineKind } from "../src/types.ts";

const DEMO = fileURLToPath(new URL("../models/demo/model.bin", import.meta.url));

const PASSAGE = "And the king said unto the people, Go ye into the land which I gave unto your " +
  "fathers, and take the cattle and the sheep, for the land is good and the water is sweet. ";
/** Echo-heavy prompts (a passage repeated, a list, a code edit) and free text. */
const PROMPTS = [
  `${PASSAGE}${PASSAGE}${PASSAGE.slice(0, 50)}`,
  `Repeat after me: ${PASSAGE}\nAgain:`,
  "one two three four five one two three four five one two three",
  "function add(a, b) { return a + b; }\nfunction sub(a, b) { return a - b; }\nfunction",
  "Once upon a time there was",
  "What does water mean?",
  "The sea",
  "In the beginning",
];

Deno.test("prompt lookup: the latest earlier match of the longest suffix, capped", () => {
  // "7 8" occurs at 1 and 5: the later one wins; 3-gram "6 7 8" only at 0..2
  const l = new PromptLookup([6, 7, 8, 1, 2, 7, 8, 3, 4, 6, 7, 8]);
  assert.deepEqual(l.draft(8), [1, 2, 7, 8, 3, 4, 6, 7]); // the 3-gram at 0 beats the 2-gram
  assert.deepEqual(l.draft(2), [1, 2]);
  assert.deepEqual(l.draft(0), []);
  const two = new PromptLookup([9, 1, 2, 5, 3, 1, 2], { minNgram: 2 });
  // only "1 2" recurs; past the end of the text the draft repeats what followed the match
  assert.deepEqual(two.draft(8), [5, 3, 1, 2, 5, 3, 1, 2]);
  // two tokens in common are not enough by default (minNgram 3)
  assert.deepEqual(new PromptLookup([9, 1, 2, 5, 3, 1, 2]).draft(8), []);
  assert.deepEqual(new PromptLookup([4, 5, 6, 4], { minNgram: 2 }).draft(8), []);
  assert.deepEqual(new PromptLookup([4, 5, 6, 4], { minNgram: 1 }).draft(8), [
    5,
    6,
    4,
    5,
    6,
    4,
    5,
    6,
  ]);
  // a loop of period 1 drafts the full length
  assert.deepEqual(new PromptLookup([3, 7, 7, 7, 7]).draft(5), [7, 7, 7, 7, 7]);
  const grow = new PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2], { maxDraft: 8 });
  grow.push(3);
  assert.deepEqual(grow.draft(99), [4, 5, 6, 7, 8, 9, 10, 1]);
  // a rejection after 1 accepted shortens the next draft to 2; a full accept doubles it
  grow.feedback(8, 1);
  assert.deepEqual(grow.draft(99), [4, 5]);
  grow.feedback(2, 2);
  assert.deepEqual(grow.draft(99), [4, 5, 6, 7]);
});

Deno.test("prompt lookup: its index finds what a scan of the text finds", () => {
  /** The latest earlier match of the longest suffix, by scanning (the definition). */
  const scan = (t: number[], max: number, min: number, want: number) => {
    for (let n = Math.min(max, t.length - 1); n >= min; n--) {
      for (let s = t.length - n - 1; s >= 0; s--) {
        let k = 0;
        while (k < n && t[s + k] === t[t.length - n + k]) k++;
        if (k === n) {
          // past the end, the text repeats with the match's period
          const period = t.length - (s + n);
          return Array.from({ length: want }, (_, i) => t[s + n + (i % period)]);
        }
      }
    }
    return [];
  };
  let seed = 7;
  const next = (m: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % m;
  for (const [maxNgram, minNgram] of [[3, 3], [3, 1], [4, 2]]) {
    for (let trial = 0; trial < 20; trial++) {
      const alphabet = 2 + next(5);
      const text = Array.from({ length: next(12) }, () => next(alphabet));
      // never paused, a fixed length: only the lookup differs
      const l = new PromptLookup(text, { maxNgram, minNgram, maxDraft: 5, minAcceptance: 0 });
      for (let i = 0; i < 60; i++) {
        assert.deepEqual(l.draft(5), scan(text, maxNgram, minNgram, 5), `${text}`);
        const t = next(alphabet);
        text.push(t);
        l.push(t);
      }
    }
  }
});

Deno.test("prompt lookup: drafting pauses while drafts miss, and resumes on shadow hits", () => {
  const l = new PromptLookup([1, 2, 3, 4, 5, 1, 2, 3]);
  assert.ok(l.active);
  assert.deepEqual(l.draft(1), [4]);
  l.feedback(1, 0); // 0.75 -> 0.5625: still on
  assert.ok(l.active);
  l.feedback(1, 0); // -> 0.42: paused
  assert.ok(!l.active);
  assert.deepEqual(l.draft(1), [], "a paused lookup proposes nothing");
  l.push(4); // ... but the proposal (4) is compared with the next token: a hit
  assert.ok(l.active, "one shadow hit brings it back");
  l.push(5);
  assert.deepEqual(l.draft(3), [1], "the length fell to one after a miss");
  l.feedback(1, 0); // 0.57 -> 0.42
  assert.ok(!l.active);
  assert.deepEqual(l.draft(3), []);
  l.push(9); // a shadow miss keeps it paused
  assert.ok(!l.active);
});

async function run(model: Qwen3, prompt: string, opts: GenerateOptions) {
  const g = model.generate(prompt, opts);
  const text = await g.complete();
  return { tokens: [...g.tokens], text, stats: g.stats! };
}

for (const engine of ["c", "ts"] as EngineKind[]) {
  // The TypeScript engine is ~40x slower: fewer and shorter runs keep the test short.
  const prompts = engine === "c" ? PROMPTS : [PROMPTS[0], PROMPTS[2], PROMPTS[6]];
  const maxTokens = engine === "c" ? 64 : 16;

  Deno.test(`[${engine}] greedy: the same tokens with and without speculation`, async () => {
    using model = await Qwen3.load(DEMO, { engine, contextLength: 512 });
    let drafted = 0;
    let accepted = 0;
    for (const prompt of prompts) {
      const off = await run(model, prompt, { temperature: 0, maxTokens, speculate: false });
      const on = await run(model, prompt, { temperature: 0, maxTokens, speculate: true });
      assert.deepEqual(on.tokens, off.tokens, `prompt ${JSON.stringify(prompt)}`);
      assert.equal(on.text, off.text);
      assert.equal(on.stats.stopReason, off.stats.stopReason);
      assert.equal(off.stats.draftedTokens, 0);
      assert.ok(on.stats.acceptedTokens <= on.stats.draftedTokens);
      drafted += on.stats.draftedTokens;
      accepted += on.stats.acceptedTokens;
    }
    // the path under test really ran, and drafts were both taken and refused
    assert.ok(accepted >= 5 && drafted > accepted, `drafted ${drafted}, accepted ${accepted}`);
  });

  Deno.test(`[${engine}] maxTokens, a full context, an early break, a second chat turn`, async () => {
    using model = await Qwen3.load(DEMO, { engine, contextLength: 512 });
    const prompt = PROMPTS[2];
    for (const cap of engine === "c" ? [1, 2, 3, 7] : [2, 7]) {
      const off = await run(model, prompt, { temperature: 0, maxTokens: cap, speculate: false });
      const on = await run(model, prompt, { temperature: 0, maxTokens: cap, speculate: true });
      assert.deepEqual(on.tokens, off.tokens, `maxTokens ${cap}`);
      assert.equal(on.stats.stopReason, "max_tokens");
    }
    // a context that fills up while drafts are pending: sessions just longer than the prompt
    const promptLength = model.tokenizer.encode(prompt).length;
    for (const room of engine === "c" ? [1, 2, 5, 11] : [2, 5]) {
      const length = promptLength + room;
      using a = model.engine.createSession(length);
      using b = model.engine.createSession(length);
      const off = await run(model, prompt, { temperature: 0, speculate: false, session: a });
      const on = await run(model, prompt, { temperature: 0, speculate: true, session: b });
      assert.deepEqual(on.tokens, off.tokens, `room ${room}`);
      assert.equal(on.stats.stopReason, off.stats.stopReason);
      assert.equal(b.position, a.position, "the cache holds the same tokens");
    }
    // chats: leave turn 1 early (pieces pending in a verified batch), then turn 2 sees the
    // same cache either way
    const turns = async (speculate: boolean) => {
      using chat = model.chat({ thinking: false });
      const one = chat.send(prompt, { temperature: 0, maxTokens: 30, speculate });
      let pieces = 0;
      for await (const _ of one) if (++pieces === 9) break;
      const two = chat.send("And again", { temperature: 0, maxTokens: 8, speculate });
      await two.complete();
      return { one: [...one.tokens], two: [...two.tokens], start: two.stats!.startPosition };
    };
    assert.deepEqual(await turns(true), await turns(false));
  });
}

Deno.test("[c] drafts come from earlier chat turns too (the session's history)", async () => {
  using model = await Qwen3.load(DEMO, { contextLength: 512 });
  const special = model.specialTokens;
  const said = model.tokenizer.encode(PASSAGE);
  const draftsFrom = async (history: number[] | undefined) => {
    using session = model.engine.createSession(512);
    if (history) await session.forward(history);
    // a sampler that repeats the passage from its 4th token on, whatever the logits
    let i = 3;
    const result = emptyResult();
    for await (
      const _ of runGeneration({
        session,
        tokenizer: model.tokenizer,
        sampler: { sample: () => said[i++] },
        prompt: said.slice(0, 3),
        stopTokens: new Set([special.imEnd, special.endOfText]),
        maxTokens: 20,
        speculate: true,
        history,
      }, result)
    ) { /* drain */ }
    assert.deepEqual(result.tokens, said.slice(3, 23));
    return result.stats!;
  };
  assert.equal((await draftsFrom(undefined)).draftedTokens, 0);
  const withHistory = await draftsFrom(said);
  assert.ok(withHistory.acceptedTokens >= 10, `accepted ${withHistory.acceptedTokens}`);
});

Deno.test("[c] with logprobs and a JSON constraint: the same pieces with and without", async () => {
  using model = await Qwen3.load(DEMO, { contextLength: 512 });
  const prompt = 'Repeat: {"a": [1, 2, 3], "b": [1, 2, 3], "c": [1, 2, 3], "d": [1, 2,';
  let accepted = 0;
  for (const temperature of [0, 0.8]) {
    const pieces = async (speculate: boolean) => {
      const g = model.generate(prompt, {
        temperature,
        seed: 5,
        maxTokens: 40,
        logprobs: 2,
        constraint: new JsonTokenConstraint(model.tokenizer, ANY_JSON),
        speculate,
      });
      const out = [];
      for await (const p of g) out.push(p);
      accepted += g.stats!.acceptedTokens;
      return { out, tokens: [...g.tokens], stop: g.stats!.stopReason };
    };
    assert.deepEqual(await pieces(true), await pieces(false), `T ${temperature}`);
  }
  assert.ok(accepted > 0, "no draft was taken: the test proves little");
});

Deno.test("[c] seeded sampling with every filter: the same tokens with and without speculation", async () => {
  using model = await Qwen3.load(DEMO, { contextLength: 512 });
  const settings: GenerateOptions[] = [
    { temperature: 1, topP: 1 },
    { temperature: 0.7, topP: 0.8, topK: 20 },
    { temperature: 0.6, topP: 0.95, minP: 0.05, presencePenalty: 0.5 },
    { temperature: 1.3, topP: 0.9, presencePenalty: -0.5 },
  ];
  let accepted = 0;
  for (const s of settings) {
    for (const prompt of [PROMPTS[0], PROMPTS[2], PROMPTS[6]]) {
      for (const seed of [1, 2]) {
        const opts = { ...s, seed, maxTokens: 40 };
        const off = await run(model, prompt, { ...opts, speculate: false });
        const on = await run(model, prompt, { ...opts, speculate: true });
        assert.deepEqual(on.tokens, off.tokens, `${JSON.stringify(s)} seed ${seed}`);
        accepted += on.stats.acceptedTokens;
      }
    }
  }
  assert.ok(accepted > 20, `only ${accepted} drafted tokens accepted: the test proves little`);
});

/**
 * Pearson's chi-square of two samples over the categories seen (rare ones pooled), against
 * the 0.1% critical value for its degrees of freedom (Wilson-Hilferty).
 */
function chiSquare(a: Map<string, number>, b: Map<string, number>, n: number) {
  const keys = [...new Set([...a.keys(), ...b.keys()])];
  const cells: [number, number][] = [];
  let rare: [number, number] = [0, 0];
  for (const k of keys) {
    const x = a.get(k) ?? 0, y = b.get(k) ?? 0;
    if (x + y < 10) rare = [rare[0] + x, rare[1] + y];
    else cells.push([x, y]);
  }
  if (rare[0] + rare[1] > 0) cells.push(rare);
  let chi = 0;
  for (const [x, y] of cells) {
    const e = (x + y) / 2; // equal sample sizes n: expected count in each
    chi += (x - e) ** 2 / e + (y - e) ** 2 / e;
  }
  const df = Math.max(1, cells.length - 1);
  const z = 3.09; // one-sided 0.1%
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { chi, df, critical, n };
}

Deno.test("[c] sampling: the text's distribution does not change with speculation (chi-square)", async () => {
  // The acceptance rule under test, with drafting as eager as it gets (1-token matches,
  // never paused): at T = 0.35 the demo model's text repeats itself, so most late tokens
  // are sampled from verified rows with drafts pending. The 10th token's frequencies are
  // compared, from different seeds in each arm (independent samples).
  using model = await Qwen3.load(DEMO, { contextLength: 64 });
  const vocab = model.config.vocabSize;
  const special = model.specialTokens;
  const prompt = model.tokenizer.encode("The sea");
  const N = 150;
  const TOKENS = 10;
  const eager = { minNgram: 1, minAcceptance: 0 };
  const sample = async (speculate: boolean, seed0: number, alwaysTakeDrafts = false) => {
    using session = model.engine.createSession(64);
    if (alwaysTakeDrafts) {
      // A wrong rule to prove the bound has power: every draft made certain, as if each
      // were accepted unconditionally.
      const verify = session.verify!.bind(session);
      session.verify = async (tokens: ArrayLike<number>) => {
        const rows = await verify(tokens);
        for (let i = 1; i < tokens.length; i++) rows[(i - 1) * vocab + tokens[i]] = 1e30;
        return rows;
      };
    }
    const counts = new Map<string, number>();
    let accepted = 0;
    for (let i = 0; i < N; i++) {
      session.rewind(0);
      const result = emptyResult();
      const opts = { temperature: 0.35, topP: 1, seed: seed0 + i };
      for await (
        const _ of runGeneration({
          session,
          tokenizer: model.tokenizer,
          sampler: new Sampler(opts, vocab),
          prompt,
          stopTokens: new Set([special.imEnd, special.endOfText]),
          maxTokens: TOKENS,
          speculate: speculate ? eager : false,
        }, result)
      ) { /* drain */ }
      const key = String(result.tokens[TOKENS - 1]);
      counts.set(key, (counts.get(key) ?? 0) + 1);
      accepted += result.stats!.acceptedTokens;
    }
    return { counts, accepted };
  };
  const on = await sample(true, 1);
  const off = await sample(false, 100_001);
  assert.ok(on.accepted > N, `only ${on.accepted} accepted drafts in ${N} runs`);
  const t = chiSquare(on.counts, off.counts, N);
  assert.ok(
    t.chi < t.critical,
    `chi-square ${t.chi.toFixed(1)} >= ${t.critical.toFixed(1)} (df ${t.df})`,
  );
  const wrong = chiSquare((await sample(true, 1, true)).counts, off.counts, N);
  assert.ok(wrong.chi > wrong.critical, `a take-every-draft rule passes: ${wrong.chi.toFixed(1)}`);
});
