/**
 * Draft tokens for speculative decoding by prompt lookup: no second model, the text so far
 * is the draft model. When the last few tokens occurred before (in the prompt or in the
 * answer), the tokens that followed them then are proposed as the next ones; the
 * generation loop verifies them in one batched pass ({@linkcode EngineSession.verify}) and
 * keeps those the sampler would have picked anyway (docs/sampling.md#speculative-decoding).
 * @module
 */

import type { EngineSession } from "../types.ts";

/** How drafts are made. */
export interface DraftOptions {
  /**
   * Longest suffix of the text looked up (tokens); longer ones are tried first.
   *
   * @default {3}
   */
  maxNgram?: number;
  /**
   * Shortest suffix looked up: a match of fewer tokens proposes nothing.
   *
   * @default {3}
   */
  minNgram?: number;
  /**
   * Most tokens proposed at once.
   *
   * @default {8}
   */
  maxDraft?: number;
  /**
   * Drafts are verified only while the moving average of accepted drafts is at least
   * this (0: always).
   *
   * @default {0.5}
   */
  minAcceptance?: number;
}

/**
 * Defaults of {@linkcode DraftOptions}, the one place they are written. Measured with
 * bench/speculate_bench.ts: 3-token matches drafted as much on echo-heavy text as 2-token
 * ones, with fewer misses on free text; and a verify pass of two tokens cost about 1.5
 * decode steps on the 0.6B shape (a busy 2-core machine), so below one accepted draft
 * in two (the moving average of `minAcceptance`) a pass loses time.
 */
export const DRAFT_DEFAULTS: Readonly<Required<DraftOptions>> = {
  maxNgram: 3,
  minNgram: 3,
  maxDraft: 8,
  minAcceptance: 0.5,
};

/** Weight of the latest test in that moving average (about the last 4 to 8 tests count). */
const ACCEPTANCE_WEIGHT = 0.25;

/**
 * Proposes continuations of a token sequence by finding the latest earlier occurrence of
 * its last `n` tokens (n from `maxNgram` down to `minNgram`) and returning the tokens
 * that followed it. The draft length adapts: it doubles (up to `maxDraft`) after a draft
 * accepted whole and drops to what was accepted plus one after a rejection, so a run of
 * misses costs short verify passes. Drafting pauses while the moving average of accepted
 * drafts is under `minAcceptance` (free text, sampling at a high
 * temperature): then each proposal's first token is only compared with the token sampled
 * next, at no cost, and drafting resumes once those comparisons bring the average back.
 *
 * @example
 * ```ts
 * import { PromptLookup } from "./speculate.ts";
 *
 * const lookup = new PromptLookup([5, 6, 7, 8, 9, 5, 6, 7]);
 * console.log(lookup.draft(4)); // [8, 9, 5, 6]: what followed the earlier "5 6 7"
 * ```
 */
export class PromptLookup {
  #tokens: number[];
  #maxNgram: number;
  #minNgram: number;
  #maxDraft: number;
  #minAcceptance: number;
  #length: number;
  #acceptance = 0.75; // moving average of accepted tested drafts; starts hopeful
  #shadow = -1; // a paused proposal's first token, checked against the next token
  // per length n (index n - minNgram): n tokens as a key -> the latest start of them that
  // a token follows, so a lookup costs O(n), not a scan of the text
  #starts: Map<string, number>[] = [];

  /**
   * @param tokens The text so far (the prompt); later tokens are added with `push`.
   * @param opts Lookup lengths and the draft cap.
   */
  constructor(tokens: readonly number[], opts: DraftOptions = {}) {
    this.#tokens = [...tokens];
    this.#maxNgram = opts.maxNgram ?? DRAFT_DEFAULTS.maxNgram;
    this.#minNgram = opts.minNgram ?? DRAFT_DEFAULTS.minNgram;
    this.#maxDraft = opts.maxDraft ?? DRAFT_DEFAULTS.maxDraft;
    this.#minAcceptance = opts.minAcceptance ?? DRAFT_DEFAULTS.minAcceptance;
    this.#length = this.#maxDraft;
    for (let n = this.#minNgram; n <= this.#maxNgram; n++) this.#starts.push(new Map());
    for (let end = 1; end <= this.#tokens.length; end++) this.#index(end);
  }

  /** Records the n-grams that the token at `end - 1` follows. */
  #index(end: number): void {
    const t = this.#tokens;
    for (let n = this.#minNgram; n <= this.#maxNgram; n++) {
      const s = end - 1 - n;
      if (s >= 0) this.#starts[n - this.#minNgram].set(t.slice(s, s + n).join(","), s);
    }
  }

  /** Appends a token of the answer. */
  push(token: number): void {
    if (this.#shadow >= 0) this.#test(token === this.#shadow);
    this.#shadow = -1;
    this.#tokens.push(token);
    this.#index(this.#tokens.length);
  }

  /** True while drafts are verified (the moving average of acceptance is high enough). */
  get active(): boolean {
    return this.#acceptance >= this.#minAcceptance;
  }

  #test(accepted: boolean): void {
    this.#acceptance += ACCEPTANCE_WEIGHT * ((accepted ? 1 : 0) - this.#acceptance);
  }

  /**
   * Tokens that followed the latest earlier occurrence of the text's last n tokens
   * (longest n first), at most `limit` and the current adaptive length; where those run
   * into the end of the text, the text between the match and its end is repeated (a loop
   * proposes whole turns of itself). Empty when nothing matches or while drafting is
   * paused (see {@linkcode PromptLookup.active}).
   *
   * @param limit Most tokens wanted (room left in the context or under `maxTokens`).
   */
  draft(limit: number): number[] {
    const t = this.#tokens;
    const len = t.length;
    const want = Math.min(limit, this.#length);
    if (want <= 0) return [];
    for (let n = Math.min(this.#maxNgram, len - 1); n >= this.#minNgram; n--) {
      // the latest start s < len - n with t[s .. s+n) equal to the last n tokens
      const s = this.#starts[n - this.#minNgram].get(t.slice(len - n).join(","));
      if (s === undefined) continue;
      if (this.active) return continuation(t, s + n, want);
      this.#shadow = t[s + n];
      return [];
    }
    return [];
  }

  /**
   * Adapts the draft length to how the last draft fared.
   *
   * @param drafted Tokens proposed.
   * @param accepted Tokens of it the sampler agreed with.
   */
  feedback(drafted: number, accepted: number): void {
    for (let i = 0; i < accepted; i++) this.#test(true);
    if (accepted < drafted) this.#test(false);
    if (accepted === drafted) {
      this.#length = Math.min(this.#maxDraft, Math.max(1, this.#length) * 2);
    } else this.#length = Math.max(1, accepted + 1);
  }
}

/**
 * `want` tokens of `t` from `from` on. Where they run past the end of `t`, the text is taken to
 * repeat with the period of the match (`t.length - from`): a loop the text has fallen into
 * (greedy decoding does) drafts whole passes instead of stopping where the text stops.
 */
function continuation(t: readonly number[], from: number, want: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < want; i++) {
    const j = from + i;
    out.push(j < t.length ? t[j] : out[j - t.length]); // j - t.length < i: already drafted
  }
  return out;
}

/** Counters of one generation's speculation. */
export interface SpeculationCounts {
  /** Tokens proposed by prompt lookup and run in verify passes. */
  drafted: number;
  /** Drafted tokens the sampler picked (each saved one forward pass). */
  accepted: number;
}

/**
 * The verify pass in flight: the sampled token plus its drafts were run in one batch;
 * `rows` holds their logits and `next` counts the drafts accepted so far.
 */
export interface PendingDrafts {
  /** The drafted tokens, in order. */
  drafts: number[];
  /** (1 + drafts.length, vocab) logits: row i follows the sampled token and drafts[0..i). */
  rows: Float32Array;
  /** Position just after the sampled token that led the batch. */
  base: number;
  /** Drafts accepted so far. */
  next: number;
}

/**
 * Runs `token` and up to `limit` drafted tokens after it in one verify pass, or `token`
 * alone (a plain forward) when there is no draft.
 *
 * @returns The logits after `token`, and the pending drafts when there were any.
 */
export async function feedWithDrafts(
  session: EngineSession,
  token: number,
  drafts: number[],
  vocab: number,
): Promise<{ logits: Float32Array; pending?: PendingDrafts }> {
  if (drafts.length === 0) return { logits: await session.forward([token]) };
  const rows = await session.verify!([token, ...drafts]);
  const base = session.position - drafts.length;
  return { logits: rows.subarray(0, vocab), pending: { drafts, rows, base, next: 0 } };
}
