import assert from "node:assert/strict";
import { Qwen3Error } from "../src/errors.ts";
import type { SamplerOptions } from "../src/types.ts";
import { argmax, Sampler, samplerExp, XorShift64Star } from "../src/text/sampler.ts";

/**
 * xorshift64* on two u32 halves (hi, lo), an independent route to the same numbers as the
 * BigInt generator: shifts across the halves and a 64-bit product from 16-bit limbs.
 */
function referenceXorshift(seedHi: number, seedLo: number, count: number): number[] {
  let hi = seedHi >>> 0;
  let lo = seedLo >>> 0;
  const shr = (h: number, l: number, k: number): [number, number] =>
    k >= 32 ? [0, h >>> (k - 32)] : [h >>> k, ((l >>> k) | (h << (32 - k))) >>> 0];
  const shl = (h: number, l: number, k: number): [number, number] =>
    k >= 32 ? [(l << (k - 32)) >>> 0, 0] : [((h << k) | (l >>> (32 - k))) >>> 0, (l << k) >>> 0];
  // The high 32 bits of the low 64 bits of (hi:lo) * 0x2545F4914F6CDD1D.
  const mulHigh32 = (h: number, l: number): number => {
    const a = [l & 0xffff, l >>> 16, h & 0xffff, h >>> 16];
    const b = [0xdd1d, 0x4f6c, 0xf491, 0x2545];
    const limbs = [0, 0, 0, 0];
    for (let i = 0; i < 4; i++) {
      for (let j = 0; i + j < 4; j++) limbs[i + j] += a[i] * b[j];
    }
    let carry = 0;
    for (let i = 0; i < 4; i++) {
      const v = limbs[i] + carry;
      limbs[i] = v % 65536;
      carry = Math.floor(v / 65536);
    }
    return (limbs[2] + limbs[3] * 65536) >>> 0;
  };
  const out: number[] = [];
  for (let n = 0; n < count; n++) {
    let t = shr(hi, lo, 12);
    hi = (hi ^ t[0]) >>> 0;
    lo = (lo ^ t[1]) >>> 0;
    t = shl(hi, lo, 25);
    hi = (hi ^ t[0]) >>> 0;
    lo = (lo ^ t[1]) >>> 0;
    t = shr(hi, lo, 27);
    hi = (hi ^ t[0]) >>> 0;
    lo = (lo ^ t[1]) >>> 0;
    out.push(mulHigh32(hi, lo));
  }
  return out;
}

Deno.test("xorshift64* from seed 42 follows the formula", () => {
  const expected = referenceXorshift(0, 42, 1000);
  // First values also computed with Python's big integers, as a third opinion.
  assert.deepEqual(expected.slice(0, 5), [
    1456360119,
    3359763283,
    3393612768,
    4054632243,
    3283045847,
  ]);
  const rng = new XorShift64Star(42n);
  assert.deepEqual(Array.from({ length: 1000 }, () => rng.nextU32()), expected);
  const f = new XorShift64Star(42n);
  assert.equal(f.nextF32(), (1456360119 >>> 8) / 16777216);
  assert.equal(f.nextF32(), 0.7822558283805847);
  // A seed using all 64 bits.
  const big = new XorShift64Star(0x8765432112345678n);
  assert.deepEqual(
    Array.from({ length: 100 }, () => big.nextU32()),
    referenceXorshift(0x87654321, 0x12345678, 100),
  );
});

Deno.test("greedy: argmax with the lowest index on ties, penalty ignored", () => {
  assert.equal(argmax(new Float32Array([1, 5, 5, 2])), 1);
  assert.equal(argmax(new Float32Array([-3, -1, -2, -1])), 1);
  assert.equal(argmax(new Float32Array([NaN, 0, 2])), 2);
  const s = new Sampler({ temperature: 0, presencePenalty: 10, seed: 1 }, 4);
  const logits = new Float32Array([0, 7, 7, 1]);
  for (let i = 0; i < 5; i++) assert.equal(s.sample(logits), 1);
});

function draws(s: Sampler, logits: Float32Array, n: number): number[] {
  const counts = new Array(logits.length).fill(0);
  for (let i = 0; i < n; i++) counts[s.sample(logits)]++;
  return counts;
}

function randomLogits(n: number, seed: number): Float32Array {
  const rng = new XorShift64Star(BigInt(seed));
  return Float32Array.from({ length: n }, () => 4 * (rng.nextF32() - 0.5));
}

/**
 * The inputs both samplers' exp checks run on (csrc/tests/test_sampler.c generates the same):
 * every float in stretches of (-105, 0] (across the table entries, the ends and the subnormal
 * and zero results below -87.3), then a million spread over (-110, 0] from a 32-bit LCG.
 */
function* expInputs(): Generator<number> {
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (const start of [-1e-7, -0.0108, -0.5, -1, -10.83, -20, -87.33, -100, -103.97, -104.5]) {
    f32[0] = start;
    for (let i = 0; i < 100_000; i++, u32[0]++) yield f32[0];
  }
  let state = 12345;
  for (let i = 0; i < 1_000_000; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const u = (state >>> 8) / 16777216;
    yield Math.fround(-110 * u * u);
  }
  for (const x of [0, -0, -Infinity, -104, -103.97207708, -1e-45, -Math.LN2 / 64]) {
    yield Math.fround(x);
  }
}

/** FNV-1a over the 32-bit patterns of samplerExp of expInputs(): the C test's constant. */
const SAMPLER_EXP_CHECKSUM = 0xfc48f08a;

Deno.test("samplerExp: the C sampler's bits, and Math.fround(Math.exp(x)) to an ulp", () => {
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  const bits = (v: number) => (f32[0] = v, u32[0]);
  let hash = 2166136261, n = 0, off = 0;
  for (const x of expInputs()) {
    const got = samplerExp(x);
    const want = Math.fround(Math.exp(x));
    hash = Math.imul(hash ^ bits(got), 16777619) >>> 0;
    n++;
    if (Object.is(got, want)) continue;
    off++;
    if (Math.abs(bits(got) - bits(want)) !== 1) assert.fail(`exp(${x}): ${got}, Math.exp ${want}`);
  }
  for (const x of [NaN, -NaN]) assert.ok(Number.isNaN(samplerExp(x)));
  console.log(`samplerExp: ${off} of ${n} differ from Math.fround(Math.exp(x)) (by an ulp)`);
  assert.ok(off <= n * 1e-5, `${off} of ${n} differ from Math.fround(Math.exp(x))`);
  assert.equal(hash.toString(16), SAMPLER_EXP_CHECKSUM.toString(16));
});

/**
 * The sampler's steps (docs/sampling.md#algorithm) done the plain way: every candidate
 * sorted, nothing fused. Same generator, so the same coins.
 */
class ReferenceSampler {
  #rng: XorShift64Star;
  #counts: number[];
  constructor(
    readonly o: Required<Omit<SamplerOptions, "seed">>,
    seed: bigint,
    readonly n: number,
  ) {
    this.#rng = new XorShift64Star(seed);
    this.#counts = new Array(n).fill(0);
  }

  sample(logits: Float32Array): number {
    const f = Math.fround, o = this.o, n = this.n;
    const z = Array.from(logits, (l, i) => {
      let v = l;
      if (this.#counts[i] > 0) {
        if (o.presencePenalty !== 0) v = f(v - f(o.presencePenalty));
        if (o.frequencyPenalty !== 0) v = f(v - f(f(this.#counts[i]) * f(o.frequencyPenalty)));
      }
      return f(v / f(o.temperature));
    });
    const m = z[argmax(z)];
    const e = z.map((v) => f(Math.exp(f(v - m))));
    const sum = e.reduce((a, b) => f(a + b), 0);
    const p = e.map((v) => f(v / sum));
    const pmax = p.reduce((a, b) => (b > a ? b : a), 0);
    const coin = this.#rng.nextF32();
    const kOn = o.topK > 0 && o.topK < n, pOn = o.topP > 0 && o.topP < 1, minOn = o.minP > 0;
    let token = -1;
    if (!kOn && !pOn && !minOn) {
      let cdf = 0;
      for (let i = 0; i < n && token < 0; i++) if (coin < (cdf = f(cdf + p[i]))) token = i;
      if (token < 0) token = n - 1;
    } else {
      const floor = minOn ? f(f(o.minP) * pmax) : 0;
      let ids = p.map((_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
      if (kOn) {
        ids = ids.slice(0, o.topK).filter((i) => p[i] >= floor);
      } else {
        let cut = Math.max(floor, pOn && n > 1 ? f(f(1 - f(o.topP)) / f(n - 1)) : 0);
        if (cut > pmax) cut = pmax;
        ids = ids.filter((i) => p[i] >= cut);
      }
      if (ids.length === 0) {
        token = argmax(logits);
      } else {
        let total = 0, kept = 0;
        while (kept < ids.length) {
          total = f(total + p[ids[kept++]]);
          if (pOn && total > f(o.topP)) break;
        }
        const r = f(coin * total);
        let cdf = 0;
        for (let j = 0; j < kept && token < 0; j++) {
          if (r < (cdf = f(cdf + p[ids[j]]))) token = ids[j];
        }
        if (token < 0) token = ids[kept - 1];
      }
    }
    this.#counts[token]++;
    return token;
  }
}

Deno.test("the same tokens as every candidate sorted, for every filter and ties", () => {
  const rng = new XorShift64Star(5n);
  const pick = <T>(xs: T[]) => xs[rng.nextU32() % xs.length];
  let compared = 0;
  for (let trial = 0; trial < 120; trial++) {
    const n = trial % 30 === 7 ? 151936 : pick([2, 37, 1000, 3000]);
    const o = {
      temperature: pick([0.1, 0.5, 0.6, 1, 1.3]),
      topP: pick([0, 0.5, 0.9, 0.95, 1]),
      // 1024 and 1025: either side of the switch from one pass to a heap of all candidates
      topK: pick([0, 1, 5, 20, 1024, 1025, 5000]),
      minP: pick([0, 0.05, 0.5]),
      presencePenalty: pick([0, 1.5]),
      frequencyPenalty: pick([0, 0.7, -0.3]),
    };
    const seed = BigInt(rng.nextU32()) | 1n;
    const sampler = new Sampler({ ...o, seed }, n);
    const reference = new ReferenceSampler(o, seed, n);
    const spread = 1 + (rng.nextU32() % 8);
    for (let step = 0; step < (n > 10000 ? 2 : 8); step++) {
      // coarse values make ties common, which the order must settle; every fifth trial,
      // values a few ulps apart, which only the low bits order
      const logits = Float32Array.from(
        { length: n },
        () =>
          trial % 5 === 4
            ? 1 + (rng.nextU32() % 4096) * 1e-6
            : Math.round(spread * rng.nextF32() * 4) / 4,
      );
      assert.equal(sampler.sample(logits), reference.sample(logits), `${JSON.stringify(o)} n ${n}`);
      compared++;
    }
  }
  assert.ok(compared > 800);
});

Deno.test("a seed reproduces a run; another seed gives another", () => {
  const logits = randomLogits(500, 3);
  const run = (seed: number) => {
    const s = new Sampler({ temperature: 1, topP: 0.95, seed }, 500);
    return Array.from({ length: 50 }, () => s.sample(logits));
  };
  assert.deepEqual(run(7), run(7));
  assert.notDeepEqual(run(7), run(8));
  // reset() restarts the same sequence.
  const s = new Sampler({ temperature: 0.8, seed: 99 }, 500);
  const first = Array.from({ length: 20 }, () => s.sample(logits));
  s.reset();
  assert.deepEqual(Array.from({ length: 20 }, () => s.sample(logits)), first);
  s.reset(100);
  assert.notDeepEqual(Array.from({ length: 20 }, () => s.sample(logits)), first);
});

Deno.test("plain sampling follows the softmax of logits / temperature", () => {
  const logits = new Float32Array([0, 1, 2, Math.log(0.5)]);
  const t = 2;
  const w = Array.from(logits, (l) => Math.exp(l / t));
  const z = w.reduce((a, b) => a + b);
  const counts = draws(new Sampler({ temperature: t, topP: 1, seed: 5 }, 4), logits, 20000);
  counts.forEach((c, i) => assert.ok(Math.abs(c / 20000 - w[i] / z) < 0.015, `token ${i}: ${c}`));
});

Deno.test("top-k keeps exactly the k most likely", () => {
  const logits = randomLogits(1000, 11);
  const top = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, 5);
  const counts = draws(
    new Sampler({ temperature: 1, topK: 5, topP: 1, seed: 3 }, 1000),
    logits,
    3000,
  );
  const support = counts.flatMap((c, i) => (c > 0 ? [i] : []));
  assert.deepEqual(support.sort(), [...top].sort());
});

Deno.test("top-p keeps the shortest prefix whose mass exceeds p", () => {
  const probs = [0.05, 0.5, 0.15, 0.3];
  const logits = Float32Array.from(probs, Math.log);
  // Sorted: 0.5, 0.3 (sum 0.8 > 0.7): tokens 1 and 3, in ratio 5:3.
  const counts = draws(new Sampler({ temperature: 1, topP: 0.7, seed: 17 }, 4), logits, 8000);
  assert.equal(counts[0], 0);
  assert.equal(counts[2], 0);
  assert.ok(Math.abs(counts[1] / 8000 - 0.625) < 0.02, `${counts}`);
  // p = 0.85: 0.5 + 0.3 = 0.8 does not exceed it, so 0.15 joins.
  const wider = draws(new Sampler({ temperature: 1, topP: 0.85, seed: 17 }, 4), logits, 8000);
  assert.equal(wider[0], 0);
  assert.ok(wider[2] > 0);
});

Deno.test("min-p drops tokens under min_p times the top probability", () => {
  const probs = [0.05, 0.5, 0.15, 0.3];
  const logits = Float32Array.from(probs, Math.log);
  const counts = draws(
    new Sampler({ temperature: 1, topP: 1, minP: 0.2, seed: 23 }, 4),
    logits,
    8000,
  );
  assert.equal(counts[0], 0); // 0.05 < 0.2 * 0.5
  assert.ok(counts[2] > 0 && counts[3] > 0 && counts[1] > 0);
  assert.ok(Math.abs(counts[2] / 8000 - 0.15 / 0.95) < 0.02, `${counts}`);
});

Deno.test("top-k, top-p and min-p together on the full Qwen3 vocabulary", () => {
  const n = 151936;
  const logits = randomLogits(n, 29);
  for (let i = 0; i < 30; i++) logits[i * 1000] = 8 + i * 0.01;
  const s = new Sampler({ temperature: 0.7, topK: 20, topP: 0.8, minP: 0.05, seed: 31 }, n);
  for (let i = 0; i < 50; i++) {
    const t = s.sample(logits);
    assert.ok(t % 1000 === 0 && t / 1000 >= 10, `token ${t} outside the top 20`);
  }
});

Deno.test("presence penalty lowers tokens already returned, reset forgets them", () => {
  const logits = new Float32Array([3, 2.5, 1]);
  const s = new Sampler({ temperature: 0.05, topP: 1, presencePenalty: 1, seed: 2 }, 3);
  assert.deepEqual([s.sample(logits), s.sample(logits), s.sample(logits)], [0, 1, 0]);
  s.reset();
  assert.equal(s.sample(logits), 0);
  const none = new Sampler({ temperature: 0.05, topP: 1, seed: 2 }, 3);
  assert.deepEqual([none.sample(logits), none.sample(logits), none.sample(logits)], [0, 0, 0]);
});

Deno.test("frequency penalty: logit minus count * penalty (the C test's sequences)", () => {
  // csrc/tests/test_sampler.c test_frequency_penalty: the same logits, settings and picks.
  const logits = new Float32Array([3, 2.4, 0.7]);
  const f = new Sampler({ temperature: 0.01, topP: 1, frequencyPenalty: 1, seed: 2 }, 3);
  assert.deepEqual(Array.from({ length: 8 }, () => f.sample(logits)), [0, 1, 0, 1, 0, 2, 1, 0]);
  const p = new Sampler({ temperature: 0.01, topP: 1, presencePenalty: 1, seed: 2 }, 3);
  assert.deepEqual(Array.from({ length: 8 }, () => p.sample(logits)), [0, 1, 0, 0, 0, 0, 0, 0]);
  f.reset();
  assert.deepEqual(Array.from({ length: 3 }, () => f.sample(logits)), [0, 1, 0]);
  // pick() does not count: the same token again and again.
  const q = new Sampler({ temperature: 0.01, topP: 1, frequencyPenalty: 1, seed: 2 }, 3);
  assert.deepEqual([q.pick(logits), q.pick(logits), q.pick(logits)], [0, 0, 0]);
  q.record(0);
  assert.equal(q.pick(logits), 1);
});

Deno.test("bad options are Qwen3Error invalid_argument naming the option", () => {
  const bad: [Record<string, number>, string][] = [
    [{ temperature: -1 }, "temperature"],
    [{ topP: NaN }, "topP"],
    [{ topK: 1.5 }, "topK"],
    [{ minP: 2 }, "minP"],
    [{ frequencyPenalty: Infinity }, "frequencyPenalty"],
    [{ seed: -3 }, "seed"],
  ];
  for (const [opts, name] of bad) {
    assert.throws(() => new Sampler(opts, 10), (e) => {
      assert.ok(e instanceof Qwen3Error);
      assert.equal(e.code, "invalid_argument");
      assert.match(e.message, new RegExp(name));
      return true;
    });
  }
  assert.throws(() => new Sampler({}, 4).sample(new Float32Array(3)), Qwen3Error);
});

Deno.test("the same tokens as the C sampler for the same logits and seed", async () => {
  // Logits from a tiny random model run by the C engine; both samplers draw from them.
  const { CEngine } = await import("../ffi/c_engine.ts");
  const { writeRandomModel } = await import("./helpers/random_model.ts");
  const dir = await Deno.makeTempDir();
  try {
    // The C loader wants a tokenizer beside the model (hence the real vocabulary size).
    const path = await writeRandomModel(dir, { seed: 8 });
    using engine = await CEngine.load(path, { threads: 1 });
    using session = engine.createSession();
    const logits = (await session.forward([1, 2, 3])).slice();
    // Temperatures in units of the logits' spread keep nuclei small enough for a quick test
    // (whatever the random model's scale), yet every setting varies.
    const mean = logits.reduce((a, b) => a + b) / logits.length;
    const spread = Math.sqrt(logits.reduce((a, b) => a + (b - mean) ** 2, 0) / logits.length);
    const settings = [
      { temperature: 0.25 * spread },
      { temperature: 0.25 * spread, topP: 0.9, seed: 42 },
      { temperature: 0.4 * spread, topP: 0.5 },
      { temperature: 0.5 * spread, topK: 20, topP: 1 },
      { temperature: 0.5 * spread, topK: 50, topP: 0.8, minP: 0.05 },
      { temperature: 0.75 * spread, minP: 0.3, topP: 0 },
      { temperature: 0.25 * spread, topP: 0.95, presencePenalty: 0.1 * spread },
      { temperature: 0, presencePenalty: 2 },
      { temperature: 0.25 * spread, topP: 0.95, frequencyPenalty: 0.05 * spread },
      {
        temperature: 0.3 * spread,
        topK: 40,
        presencePenalty: 0.1 * spread,
        frequencyPenalty: -0.02 * spread,
      },
    ];
    for (const [i, opts] of settings.entries()) {
      const o = { seed: 1000 + i, ...opts };
      session.setSampler(o);
      const ts = new Sampler(o, engine.config.vocabSize);
      const c = Array.from({ length: 100 }, () => session.sample());
      const t = Array.from({ length: 100 }, () => ts.sample(logits));
      assert.deepEqual(t, c, `settings ${JSON.stringify(o)}`);
      if (o.temperature > 0) {
        assert.ok(new Set(t).size > 1, `settings ${JSON.stringify(o)} never varied`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
