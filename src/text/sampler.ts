/**
 * The token sampler shared by both engines' generation loops (docs/sampling.md#algorithm). It returns
 * the same token as the C sampler for the same logits, settings and seed by following the
 * steps written at the top of csrc/src/sampler.c, every float operation rounded to fp32.
 * With top-k on when 0 < top_k < V, top-p on when 0 < top_p < 1, min-p on when min_p > 0:
 *
 *   1. temperature 0: argmax of the raw logits (lowest id on ties, NaN never wins); no
 *      penalty, no filter, no RNG draw.
 *   2. z = logit, minus presence_penalty for a token returned before, then minus
 *      fround(count * frequency_penalty) (count: times it was returned); then z / T.
 *   3. softmax: m = max z; e = exp(z - m); sum in id order; p = e / sum; pmax = max p.
 *   4. coin = (xorshift64* u32 >> 8) / 2^24, one draw, always.
 *   5. no filter on: the first id (index order) whose running sum of p exceeds the coin.
 *   6. floor = min_p * pmax (min-p on, else 0). With top-k: candidates = ids with p >= floor.
 *      Without: cut = min(max(floor, (1 - top_p) / (V - 1) when top-p on), pmax) and
 *      candidates = ids with p >= cut.
 *   7. candidates best first (p descending, lower id on ties) - never a full sort of the
 *      151936 probabilities: the k best kept in one pass for a top-k up to 1024, else a heap
 *      popped only as far as needed, or past 2048 candidates all of them radix-sorted - at
 *      most top_k of them,
 *   8. and with top-p stopping once their running sum exceeds top_p (that one kept).
 *   9. r = coin * (sum of kept p); return the first kept id whose running sum exceeds r
 *      (the last kept one if rounding leaves none).
 *   Every returned token, greedy ones included, is counted for the penalties.
 *   Only NaN logits leave no candidate: then argmax(logits).
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import type { SamplerOptions } from "../types.ts";

const fround = Math.fround;
const U64 = (1n << 64n) - 1n;
const XORSHIFT_MULTIPLIER = 0x2545f4914f6cdd1dn;

/** Defaults of {@linkcode SamplerOptions} (but the seed), the one place they are written. */
export const SAMPLER_DEFAULTS: Readonly<Required<Omit<SamplerOptions, "seed">>> = {
  temperature: 1,
  topP: 0.9,
  topK: 0,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

/**
 * qwen3.c's xorshift64* generator on a u64 state held as a BigInt (two calls per token, so
 * BigInt's cost does not matter).
 *
 * @example
 * ```ts
 * import { XorShift64Star } from "./sampler.ts";
 *
 * const rng = new XorShift64Star(42n);
 * console.log(rng.nextU32(), rng.nextF32());
 * ```
 */
export class XorShift64Star {
  #state: bigint;

  /** Starts from `seed` (must be non-zero: a zero state stays zero forever). */
  constructor(seed: bigint) {
    this.#state = BigInt.asUintN(64, seed);
  }

  /** The current u64 state. */
  get state(): bigint {
    return this.#state;
  }

  /** `s ^= s >> 12; s ^= s << 25; s ^= s >> 27; return (s * 0x2545F4914F6CDD1D) >> 32`. */
  nextU32(): number {
    let s = this.#state;
    s ^= s >> 12n;
    s ^= (s << 25n) & U64;
    s ^= s >> 27n;
    this.#state = s;
    return Number(((s * XORSHIFT_MULTIPLIER) & U64) >> 32n);
  }

  /** A uniform float in [0, 1): `(u32 >> 8) / 16777216`. */
  nextF32(): number {
    return (this.nextU32() >>> 8) / 16777216;
  }
}

/** A seed from the clock, never 0. */
function clockSeed(): bigint {
  const ms = BigInt(Date.now());
  const ns = BigInt(Math.floor(performance.now() * 1e6));
  const s = BigInt.asUintN(64, (ms << 20n) ^ ns);
  return s === 0n ? 1n : s;
}

function toSeed(seed: number | bigint | undefined): bigint {
  if (seed === undefined || seed === 0 || seed === 0n) return clockSeed();
  if (typeof seed === "number" && (!Number.isInteger(seed) || seed < 0)) {
    throw new Qwen3Error("invalid_argument", `seed ${seed}: expected a non-negative integer`);
  }
  const s = BigInt(seed);
  if (s < 0n || s > U64) {
    throw new Qwen3Error("invalid_argument", `seed ${seed}: expected an integer in 0..2^64-1`);
  }
  return s;
}

/** {@linkcode SamplerOptions} checked, defaulted and held as both samplers hold them. */
export interface ResolvedSampler {
  /** Temperature, rounded to float as the C sampler keeps it (as are the next four). */
  temperature: number;
  /** Top-p. */
  topP: number;
  /** Top-k. */
  topK: number;
  /** Min-p. */
  minP: number;
  /** Presence penalty. */
  presencePenalty: number;
  /** Frequency penalty. */
  frequencyPenalty: number;
  /** The seed, never 0: absent or 0 takes one from the clock. */
  seed: bigint;
}

/**
 * Checks sampler options and fills in the defaults: what {@linkcode Sampler} starts from,
 * and what a generation sampling with the C engine's sampler hands it, so both give the
 * same tokens and the same errors.
 *
 * @param opts The sampling settings and seed.
 * @returns The settings as the samplers hold them, the seed resolved.
 * @throws {Qwen3Error} `invalid_argument` naming the option out of range.
 */
export function resolveSampler(opts: SamplerOptions): ResolvedSampler {
  const d = SAMPLER_DEFAULTS;
  const o = {
    temperature: opts.temperature ?? d.temperature,
    topP: opts.topP ?? d.topP,
    topK: opts.topK ?? d.topK,
    minP: opts.minP ?? d.minP,
    presencePenalty: opts.presencePenalty ?? d.presencePenalty,
    frequencyPenalty: opts.frequencyPenalty ?? d.frequencyPenalty,
  };
  check(
    Number.isFinite(o.temperature) && o.temperature >= 0,
    "temperature",
    o.temperature,
    ">= 0",
  );
  check(Number.isFinite(o.topP) && o.topP >= 0, "topP", o.topP, ">= 0 (0 or >= 1 = off)");
  check(Number.isInteger(o.topK) && o.topK >= 0, "topK", o.topK, "an integer >= 0 (0 = off)");
  check(Number.isFinite(o.minP) && o.minP >= 0 && o.minP <= 1, "minP", o.minP, "0..1 (0 = off)");
  check(
    Number.isFinite(o.presencePenalty),
    "presencePenalty",
    o.presencePenalty,
    "a finite number",
  );
  check(
    Number.isFinite(o.frequencyPenalty),
    "frequencyPenalty",
    o.frequencyPenalty,
    "a finite number",
  );
  // The C sampler holds these as floats: round them the same way.
  return {
    temperature: fround(o.temperature),
    topP: fround(o.topP),
    topK: o.topK,
    minP: fround(o.minP),
    presencePenalty: fround(o.presencePenalty),
    frequencyPenalty: fround(o.frequencyPenalty),
    seed: toSeed(opts.seed),
  };
}

function check(ok: boolean, name: string, value: number, expected: string): void {
  if (!ok) {
    throw new Qwen3Error("invalid_argument", `sampler ${name} = ${value}: expected ${expected}`);
  }
}

/** Index of the largest value, the lowest index on ties (NaN never wins). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  let bestValue = values[0];
  for (let i = 1; i < values.length; i++) {
    const v = values[i];
    if (v > bestValue || (bestValue !== bestValue && v === v)) {
      best = i;
      bestValue = v;
    }
  }
  return best;
}

// samplerExp: 2^(j/32) for j = 0 .. 31 (the C sampler's EXP2_J32, the same doubles), and
// 2^k for k = -160 .. 0 (exact).
const EXP_TABLE = new Float64Array([
  1,
  1.0218971486541166,
  1.0442737824274138,
  1.0671404006768237,
  1.0905077326652577,
  1.1143867425958924,
  1.1387886347566916,
  1.1637248587775775,
  1.189207115002721,
  1.215247359980469,
  1.241857812073484,
  1.2690509571917332,
  1.2968395546510096,
  1.3252366431597413,
  1.3542555469368927,
  1.383909881963832,
  1.4142135623730951,
  1.4451808069770467,
  1.4768261459394993,
  1.5091644275934228,
  1.5422108254079407,
  1.5759808451078865,
  1.6104903319492543,
  1.6457554781539649,
  1.681792830507429,
  1.7186192981224779,
  1.7562521603732995,
  1.7947090750031072,
  1.8340080864093424,
  1.8741676341103,
  1.9152065613971474,
  1.9571441241754002,
]);
const POW2 = Float64Array.from({ length: 161 }, (_, i) => {
  let p = 1;
  for (let k = i; k < 160; k++) p /= 2;
  return p;
});
const EXP_SCALE = 32 / Math.LN2;
const LN2_32_HI = fround(Math.LN2 / 32); // 24 bits: m * LN2_32_HI is exact for |m| < 2^29
const LN2_32_LO = Math.LN2 / 32 - LN2_32_HI;
const ROUND_MAGIC = 6755399441055744; // 1.5 * 2^52: x + it - it rounds x to an integer

/**
 * Step 3's exp (docs/sampling.md#the-samplers-exp), the C sampler's `sampler_exp` operation
 * for operation: for x in (-104, 0], x = (32k + j) ln2/32 + r with |r| <= ln2/64, e^x is
 * 2^k * 2^(j/32) * a degree-5 polynomial of r, in doubles (relative error under 5e-15),
 * rounded to fp32 once; 0 from -104 down; NaN for NaN. Both samplers therefore give the
 * same bits on every platform (JavaScript has no fused multiply-add, and the C library is
 * built without contraction). It equals `Math.fround(Math.exp(x))` but for the few values
 * in a million whose e^x lies within 1e-13 of a rounding boundary (one ulp apart there).
 */
export function samplerExp(x: number): number {
  if (x <= -104) return 0; // e^-104 < 2^-150
  if (!(x <= 0)) return fround(Math.exp(x)); // NaN, and x > 0, which step 3 never gives
  const m = x * EXP_SCALE + ROUND_MAGIC - ROUND_MAGIC;
  const r = x - m * LN2_32_HI - m * LN2_32_LO;
  const poly = 1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120)))));
  const mi = m | 0;
  return fround(POW2[(mi >> 5) + 160] * EXP_TABLE[mi & 31] * poly);
}

/**
 * Picks the next token from a logits vector: greedy at temperature 0, otherwise temperature,
 * presence and frequency penalties, top-k, min-p and top-p with a seeded xorshift64* (the exact order is in
 * docs/sampling.md#algorithm). It picks the same tokens as the C engine's sampler
 * ({@linkcode CSession.setSampler}) for the same logits, settings and seed.
 * {@linkcode Qwen3.generate} and {@linkcode Chat.send} make one per run from their options on
 * the TypeScript engine (on the C engine they sample with {@linkcode CSession.sampler}).
 *
 * @example The same seed, the same tokens
 * ```ts
 * import { Sampler } from "@q3/qwen3";
 *
 * const logits = new Float32Array([1, 3, 2.5, 0]);
 * const sampler = new Sampler({ temperature: 1, topP: 0.95, seed: 42 }, logits.length);
 * const first = [1, 2, 3, 4].map(() => sampler.sample(logits));
 * sampler.reset(); // seed 42 again
 * const again = [1, 2, 3, 4].map(() => sampler.sample(logits));
 * console.log(first, again); // [1, 2, 2, 0] [1, 2, 2, 0]
 * ```
 *
 * @example Greedy
 * ```ts
 * import { Sampler } from "@q3/qwen3";
 *
 * const greedy = new Sampler({ temperature: 0 }, 4);
 * console.log(greedy.sample(new Float32Array([1, 3, 2.5, 0]))); // 1
 * ```
 */
export class Sampler {
  /** Temperature (0 = greedy). */
  readonly temperature: number;
  /** Nucleus mass; only 0 < topP < 1 filters. */
  readonly topP: number;
  /** Keep the k most likely; 0 = off. */
  readonly topK: number;
  /** Relative probability floor; 0 = off. */
  readonly minP: number;
  /** Subtracted from the logit of every token returned so far. */
  readonly presencePenalty: number;
  /** Times a token was returned so far, subtracted from its logit. */
  readonly frequencyPenalty: number;
  /** Vocabulary size: the logits' length. */
  readonly vocabSize: number;
  #seedOption: number | bigint | undefined;
  #rng: XorShift64Star;
  #counts: Uint32Array; // (vocab) times returned
  #seenList: number[] = [];
  #probs: Float32Array; // (vocab) scratch
  #candidates: Int32Array; // (vocab) ids that pass the probability floor
  #ordered: Int32Array; // (vocab) kept ids, best first
  #scratch: Int32Array; // (vocab) the radix sort's second buffer of ids
  #probBits: Uint32Array; // #probs' bits

  /**
   * Makes a sampler; options left out take their defaults ({@linkcode SamplerOptions}).
   *
   * @param opts The sampling settings and seed.
   * @param vocabSize The logits' length (the model's `vocabSize`).
   * @throws {Qwen3Error} `invalid_argument` naming the option out of range (or a
   * `vocabSize` that is not a positive integer).
   */
  constructor(opts: SamplerOptions, vocabSize: number) {
    check(
      Number.isInteger(vocabSize) && vocabSize > 0,
      "vocabSize",
      vocabSize,
      "a positive integer",
    );
    const o = resolveSampler(opts);
    this.temperature = o.temperature;
    this.topP = o.topP;
    this.topK = o.topK;
    this.minP = o.minP;
    this.presencePenalty = o.presencePenalty;
    this.frequencyPenalty = o.frequencyPenalty;
    this.vocabSize = vocabSize;
    this.#seedOption = opts.seed;
    this.#rng = new XorShift64Star(o.seed);
    this.#counts = new Uint32Array(vocabSize);
    this.#probs = new Float32Array(vocabSize);
    this.#candidates = new Int32Array(vocabSize);
    this.#ordered = new Int32Array(vocabSize);
    this.#scratch = new Int32Array(vocabSize);
    this.#probBits = new Uint32Array(this.#probs.buffer);
  }

  /**
   * Reseeds the random generator and forgets the tokens returned so far (the penalties
   * start afresh).
   *
   * @param seed The new seed; absent reuses the constructor's, and 0 takes one from the
   * clock.
   * @throws {Qwen3Error} `invalid_argument` for a seed outside 0..2^64-1.
   */
  reset(seed?: number | bigint): void {
    this.#rng = new XorShift64Star(toSeed(seed ?? this.#seedOption));
    for (const t of this.#seenList) this.#counts[t] = 0;
    this.#seenList = [];
  }

  /**
   * Samples a token and counts it for the penalties.
   *
   * @param logits The model's scores for every token (`vocabSize` values).
   * @returns The token id.
   * @throws {Qwen3Error} `invalid_argument` when `logits` is not `vocabSize` long.
   */
  sample(logits: Float32Array): number {
    const token = this.pick(logits);
    this.record(token);
    return token;
  }

  /**
   * Picks a token as {@linkcode Sampler.sample} does (drawing from the random generator)
   * without counting it for the penalties: a caller that may refuse the token (constrained
   * decoding) masks it and picks again, then {@linkcode Sampler.record}s the one it keeps.
   *
   * @param logits The model's scores for every token (`vocabSize` values).
   * @returns The token id.
   * @throws {Qwen3Error} `invalid_argument` when `logits` is not `vocabSize` long.
   */
  pick(logits: Float32Array): number {
    if (logits.length !== this.vocabSize) {
      throw new Qwen3Error(
        "invalid_argument",
        `sample: ${logits.length} logits, expected the vocabulary size ${this.vocabSize}`,
      );
    }
    return this.temperature === 0 ? argmax(logits) : this.#sampleSoft(logits);
  }

  /**
   * Counts a token as returned, for the presence and frequency penalties.
   *
   * @param token A token id below `vocabSize`.
   */
  record(token: number): void {
    const c = this.#counts[token];
    if (c === 0) this.#seenList.push(token);
    if (c < 0xffffffff) this.#counts[token] = c + 1; // saturates, as the C sampler does
  }

  #sampleSoft(logits: Float32Array): number {
    const n = this.vocabSize;
    const p = this.#probs;
    // Step 2: penalty, then temperature; with the max of step 3 (NaN-blind, as argmax).
    const presence = this.presencePenalty;
    const frequency = this.frequencyPenalty;
    const temperature = this.temperature;
    const counts = this.#counts;
    let max = NaN;
    for (let i = 0; i < n; i++) {
      let z = logits[i];
      const c = counts[i];
      if (c > 0) {
        if (presence !== 0) z = fround(z - presence);
        if (frequency !== 0) z = fround(z - fround(fround(c) * frequency));
      }
      // z / 1 is z (a float already): the default temperature skips the divisions.
      const v = temperature === 1 ? fround(z) : fround(z / temperature);
      p[i] = v;
      if (v > max || (max !== max && v === v)) max = v;
    }
    // Step 3: softmax.
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const e = samplerExp(fround(p[i] - max));
      p[i] = e;
      sum = fround(sum + e);
    }
    // The largest e is exp(0) = 1, so the largest p = e / sum is 1 / sum (none is a
    // number when a NaN made the sum NaN).
    const pmax = sum === sum ? fround(1 / sum) : 0;
    // p = e / sum is taken below, in the pass each path makes anyway.

    // Step 4: one draw, whatever the filters do.
    const coin = this.#rng.nextF32();
    const topKOn = this.topK > 0 && this.topK < n;
    const topPOn = this.topP > 0 && this.topP < 1;
    const minPOn = this.minP > 0;

    // Step 5: no filter, walk the ids in index order.
    if (!topKOn && !topPOn && !minPOn) {
      let cdf = 0;
      for (let i = 0; i < n; i++) {
        cdf = fround(cdf + fround(p[i] / sum));
        if (coin < cdf) return i;
      }
      return n - 1;
    }

    // Step 6: a probability floor. Without top-k the nucleus bound joins it (no token under
    // (1 - p) / (V - 1) but the most likely can be in the nucleus).
    const floor = minPOn ? fround(this.minP * pmax) : 0;
    let cut = floor;
    if (!topKOn) {
      const nucleus = topPOn && n > 1 ? fround(fround(1 - this.topP) / fround(n - 1)) : 0;
      if (nucleus > cut) cut = nucleus;
      if (cut > pmax) cut = pmax;
    }
    const cand = this.#candidates;
    const kept = this.#ordered;
    let taken = 0;
    let total = 0;
    if (topKOn && this.topK <= BEST_K_MAX) {
      // Steps 7 and 8 with a small top-k: the k best candidates in the same pass (a
      // bounded heap), sorted best first: the ids and order of popping a heap of them all.
      const k = bestK(p, sum, cut, this.topK, cand);
      if (k === 0) return argmax(logits);
      while (taken < k) {
        const id = cand[taken];
        kept[taken++] = id;
        total = fround(total + p[id]);
        if (topPOn && total > this.topP) break;
      }
    } else {
      let count = 0;
      for (let i = 0; i < n; i++) {
        const v = fround(p[i] / sum);
        p[i] = v;
        if (v >= cut) cand[count++] = i;
      }
      if (count === 0) return argmax(logits);
      // Steps 7 and 8: best first, only as far as top-k and top-p need: from a heap, or all
      // of them ordered at once when there are many (a flat distribution's nucleus).
      const limit = topKOn && this.topK < count ? this.topK : count;
      const next = count >= RADIX_MIN
        ? sortedByP(cand, this.#scratch, count, this.#probBits)
        : new CandidateHeap(cand, count, p);
      while (taken < limit) {
        const top = next.pop();
        kept[taken++] = top;
        total = fround(total + p[top]);
        if (topPOn && total > this.topP) break;
      }
    }

    // Step 9: the coin scaled by the kept mass, walked in order.
    const r = fround(coin * total);
    let acc = 0;
    for (let j = 0; j < taken; j++) {
      acc = fround(acc + p[kept[j]]);
      if (r < acc) return kept[j];
    }
    return kept[taken - 1];
  }
}

/**
 * Candidates from which ordering them all by a radix sort beats popping a heap (a random
 * model's top-p 0.9 popped about 136000 of 151936 ids, 23 ms a token).
 */
const RADIX_MIN = 2048;

/**
 * Orders ids[0 .. n) (ascending) best first, as the heap pops them: higher probability
 * first, the lower id on equal probability. A stable LSD radix sort in three 11-bit digits
 * of ~bits(p) (non-negative floats order as their bit patterns); `tmp` holds n more ids.
 * Returns the ids to take in order.
 */
function sortedByP(
  ids: Int32Array,
  tmp: Int32Array,
  n: number,
  bits: Uint32Array,
): { pop(): number } {
  const start = new Int32Array(2048);
  let src = ids, dst = tmp;
  for (let shift = 0; shift < 32; shift += 11) {
    start.fill(0);
    for (let i = 0; i < n; i++) start[(~bits[src[i]] >>> shift) & 2047]++;
    let at = 0;
    for (let d = 0; d < 2048; d++) {
      const c = start[d];
      start[d] = at;
      at += c;
    }
    for (let i = 0; i < n; i++) {
      const id = src[i];
      dst[start[(~bits[id] >>> shift) & 2047]++] = id;
    }
    const t = src;
    src = dst;
    dst = t;
  }
  let i = 0;
  return { pop: () => src[i++] };
}

/** Above this top-k the heap of all candidates, popped only as far as top-p needs, is cheaper. */
const BEST_K_MAX = 1024;

/**
 * Normalises `p` (each value divided by `sum`, in place) and writes the ids of the `k` best
 * results at or above `cut` (higher probability first, the lower id on equal probability)
 * best first to `out`; returns how many (fewer than `k` when fewer pass the cut). The pass
 * keeps them in a min-heap of size `k` whose root is the worst kept: a later id beats it
 * only with a higher probability, since ids arrive in increasing order and a tie goes to
 * the lower id already kept.
 */
function bestK(p: Float32Array, sum: number, cut: number, k: number, out: Int32Array): number {
  const n = p.length;
  let size = 0;
  // worse(a, b): a ranks below b in the candidate order.
  const worse = (a: number, b: number) => p[a] < p[b] || (p[a] === p[b] && a > b);
  const siftDown = () => {
    for (let i = 0;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let w = i;
      if (l < size && worse(out[l], out[w])) w = l;
      if (r < size && worse(out[r], out[w])) w = r;
      if (w === i) return;
      const t = out[i];
      out[i] = out[w];
      out[w] = t;
      i = w;
    }
  };
  let rootP = 0;
  for (let i = 0; i < n; i++) {
    const v = fround(p[i] / sum);
    p[i] = v;
    if (!(v >= cut)) continue;
    if (size < k) {
      let j = size++;
      out[j] = i;
      while (j > 0) {
        const parent = (j - 1) >> 1;
        if (!worse(out[j], out[parent])) break;
        const t = out[j];
        out[j] = out[parent];
        out[parent] = t;
        j = parent;
      }
      rootP = p[out[0]];
    } else if (v > rootP) {
      out[0] = i;
      siftDown();
      rootP = p[out[0]];
    }
  }
  // Best first: a total order, so any correct sort gives the order of the heap pops.
  const best = Array.from(out.subarray(0, size)).sort((a, b) => p[b] - p[a] || a - b);
  out.set(best);
  return size;
}

/**
 * A binary heap over candidate ids, best on top: higher probability first, the lower id on
 * equal probability (a total order, so it agrees with any correct sort). Built in O(n),
 * popped only as far as needed.
 */
class CandidateHeap {
  #ids: Int32Array;
  #size: number;
  #p: Float32Array;

  constructor(ids: Int32Array, size: number, p: Float32Array) {
    this.#ids = ids;
    this.#size = size;
    this.#p = p;
    for (let i = (size >> 1) - 1; i >= 0; i--) this.#siftDown(i);
  }

  #before(a: number, b: number): boolean {
    const p = this.#p;
    return p[a] > p[b] || (p[a] === p[b] && a < b);
  }

  #siftDown(i: number): void {
    const ids = this.#ids;
    const n = this.#size;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < n && this.#before(ids[l], ids[best])) best = l;
      if (r < n && this.#before(ids[r], ids[best])) best = r;
      if (best === i) return;
      const t = ids[i];
      ids[i] = ids[best];
      ids[best] = t;
      i = best;
    }
  }

  /** Removes and returns the best id (the heap must not be empty). */
  pop(): number {
    const ids = this.#ids;
    const top = ids[0];
    ids[0] = ids[--this.#size];
    this.#siftDown(0);
    return top;
  }
}
