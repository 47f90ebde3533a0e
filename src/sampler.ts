/**
 * The token sampler shared by both engines' generation loops (SPEC section 5), returning the
 * same token as the C sampler (csrc/src/sampler.c) for the same logits, settings and seed.
 *
 * Order of operations, all in fp32:
 *   1. temperature 0: argmax of the raw logits, lowest index on ties. Nothing else applies.
 *   2. presence penalty: logit[t] -= penalty for every distinct token this sampler returned.
 *   3. logit / temperature, then softmax: max, exp(l - max) summed in index order, / sum.
 *   4. coin = (xorshift64* u32 >> 8) / 2^24, drawn once per token.
 *   5. no top-k, top-p or min-p: the first index whose running sum of probabilities exceeds
 *      the coin (index order, the llama2.c sample_mult).
 *   6. otherwise candidates, each rule applied to the softmax probabilities:
 *      top-k keeps the k most likely; min-p keeps prob >= min_p * max prob; then, sorted by
 *      probability descending (lower index first on ties), top-p keeps the shortest prefix
 *      whose sum exceeds p. The coin is scaled by the kept sum and walked down that list.
 *      Without top-k, candidates are first cut at max(min_p * max prob, (1 - p) / (V - 1))
 *      (no token under (1 - p) / (V - 1) but the most likely can be in the nucleus), so the
 *      sort stays small;
 *      with top-k a size-k heap picks them. All 151936 logits are never sorted.
 * @module
 */

import { Qwen3Error } from "./errors.ts";
import type { SamplerOptions } from "./types.ts";

const fround = Math.fround;
const U64 = (1n << 64n) - 1n;
const XORSHIFT_MULTIPLIER = 0x2545f4914f6cdd1dn;

/** Defaults of SamplerOptions, one place. */
export const SAMPLER_DEFAULTS: Readonly<Required<Omit<SamplerOptions, "seed">>> = {
  temperature: 1,
  topP: 0.9,
  topK: 0,
  minP: 0,
  presencePenalty: 0,
};

/**
 * qwen3.c's xorshift64* generator on a u64 state held as a BigInt (two calls per token, so
 * BigInt's cost does not matter).
 *
 * @example
 * ```ts
 * import { XorShift64Star } from "./sampler.ts";
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

/**
 * Picks the next token from a logits vector: greedy at temperature 0, otherwise temperature,
 * presence penalty, top-k, min-p and top-p with a seeded xorshift64* (see the module comment
 * for the exact order).
 *
 * @example
 * ```ts
 * import { Sampler } from "./sampler.ts";
 * const sampler = new Sampler({ temperature: 0.7, topP: 0.8, topK: 20, seed: 42 }, 4);
 * const token = sampler.sample(new Float32Array([1, 3, 2, 0]));
 * console.log(token); // 0..3, the same for seed 42 every run
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
  /** Vocabulary size: the logits' length. */
  readonly vocabSize: number;
  #seedOption: number | bigint | undefined;
  #rng: XorShift64Star;
  #seen: Uint8Array; // (vocab) 1 when returned before
  #seenList: number[] = [];
  #probs: Float32Array; // (vocab) scratch
  #candidates: Int32Array; // (vocab) scratch indices

  /** Validates the options (Qwen3Error "invalid_argument" naming the bad one). */
  constructor(opts: SamplerOptions, vocabSize: number) {
    const o = { ...SAMPLER_DEFAULTS, ...opts };
    check(
      Number.isInteger(vocabSize) && vocabSize > 0,
      "vocabSize",
      vocabSize,
      "a positive integer",
    );
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
    // The C sampler holds these as floats: round them the same way.
    this.temperature = fround(o.temperature);
    this.topP = fround(o.topP);
    this.topK = o.topK;
    this.minP = fround(o.minP);
    this.presencePenalty = fround(o.presencePenalty);
    this.vocabSize = vocabSize;
    this.#seedOption = opts.seed;
    this.#rng = new XorShift64Star(toSeed(opts.seed));
    this.#seen = new Uint8Array(vocabSize);
    this.#probs = new Float32Array(vocabSize);
    this.#candidates = new Int32Array(vocabSize);
  }

  /** Reseeds the RNG (`seed`, else the constructor's; 0 = clock) and forgets returned tokens. */
  reset(seed?: number | bigint): void {
    this.#rng = new XorShift64Star(toSeed(seed ?? this.#seedOption));
    for (const t of this.#seenList) this.#seen[t] = 0;
    this.#seenList = [];
  }

  /** Samples a token id from `logits` (vocabSize values) and records it. */
  sample(logits: Float32Array): number {
    if (logits.length !== this.vocabSize) {
      throw new Qwen3Error(
        "invalid_argument",
        `sample: ${logits.length} logits, expected the vocabulary size ${this.vocabSize}`,
      );
    }
    const token = this.temperature === 0 ? argmax(logits) : this.#sampleSoft(logits);
    if (!this.#seen[token]) {
      this.#seen[token] = 1;
      this.#seenList.push(token);
    }
    return token;
  }

  #sampleSoft(logits: Float32Array): number {
    const n = this.vocabSize;
    const p = this.#probs;
    p.set(logits);
    if (this.presencePenalty !== 0) {
      for (const t of this.#seenList) p[t] = fround(p[t] - this.presencePenalty);
    }
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = fround(p[i] / this.temperature);
      p[i] = v;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const e = fround(Math.exp(fround(p[i] - max)));
      p[i] = e;
      sum = fround(sum + e);
    }
    let maxProb = 0;
    for (let i = 0; i < n; i++) {
      const v = fround(p[i] / sum);
      p[i] = v;
      if (v > maxProb) maxProb = v;
    }
    const coin = this.#rng.nextF32();

    const useTopP = this.topP > 0 && this.topP < 1;
    const useTopK = this.topK > 0 && this.topK < n;
    const useMinP = this.minP > 0;
    if (!useTopP && !useTopK && !useMinP) {
      let cdf = 0;
      for (let i = 0; i < n; i++) {
        cdf = fround(cdf + p[i]);
        if (coin < cdf) return i;
      }
      return n - 1;
    }

    const floor = useMinP ? fround(this.minP * maxProb) : 0;
    const c = this.#candidates;
    let count = 0;
    if (useTopK) {
      count = topKIndices(p, this.topK, c);
      // Top-k first; min-p as a plain filter on what it kept.
      let kept = 0;
      for (let j = 0; j < count; j++) if (p[c[j]] >= floor) c[kept++] = c[j];
      count = kept;
    } else {
      const nucleusFloor = useTopP ? fround(fround(1 - this.topP) / (n - 1)) : 0;
      // The most likely token is always in the nucleus, even when it is under the floor.
      const cut = Math.min(Math.max(floor, nucleusFloor), maxProb);
      for (let i = 0; i < n; i++) if (p[i] >= cut) c[count++] = i;
    }
    const list = c.subarray(0, count);
    list.sort((a, b) => p[b] - p[a] || a - b);

    let kept = count;
    let total = 0;
    if (useTopP) {
      for (let j = 0; j < count; j++) {
        total = fround(total + p[list[j]]);
        if (total > this.topP) {
          kept = j + 1;
          break;
        }
      }
    } else {
      for (let j = 0; j < count; j++) total = fround(total + p[list[j]]);
    }
    const r = fround(coin * total);
    let cdf = 0;
    for (let j = 0; j < kept; j++) {
      cdf = fround(cdf + p[list[j]]);
      if (r < cdf) return list[j];
    }
    return list[kept - 1];
  }
}

/**
 * Writes the indices of the k largest probabilities to out[0..k) (any order) with a size-k
 * min-heap: O(n log k), no full sort. Ties prefer the lower index.
 */
function topKIndices(p: Float32Array, k: number, out: Int32Array): number {
  // Heap of indices ordered so the root is the "smallest": lower prob, or higher index.
  const less = (a: number, b: number) => p[a] < p[b] || (p[a] === p[b] && a > b);
  const siftDown = (size: number) => {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && less(out[l], out[m])) m = l;
      if (r < size && less(out[r], out[m])) m = r;
      if (m === i) return;
      const t = out[i];
      out[i] = out[m];
      out[m] = t;
      i = m;
    }
  };
  for (let i = 0; i < k; i++) {
    // sift up
    out[i] = i;
    let j = i;
    while (j > 0) {
      const parent = (j - 1) >> 1;
      if (!less(out[j], out[parent])) break;
      const t = out[j];
      out[j] = out[parent];
      out[parent] = t;
      j = parent;
    }
  }
  for (let i = k; i < p.length; i++) {
    if (less(out[0], i)) {
      out[0] = i;
      siftDown(k);
    }
  }
  return k;
}
