/**
 * The one generation loop: prefill a prompt, then sample, stream and feed tokens one at a
 * time, on any {@link EngineSession} (C or TypeScript) with the TypeScript tokenizer and
 * sampler. Both `Qwen3.generate` and `Chat.send` are built on it.
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import { argmax } from "../text/sampler.ts";
import { TextStreamDecoder } from "../text/tokenizer.ts";
import type { EngineSession, SamplerOptions } from "../types.ts";
import {
  type DraftOptions,
  feedWithDrafts,
  type PendingDrafts,
  PromptLookup,
} from "./speculate.ts";

/** Whether a piece of text is the model's reasoning (inside `<think>`) or its answer. */
export type PieceKind = "thinking" | "answer";

/** One generated token's log-probability and the most likely tokens at its step. */
export interface TokenLogprob {
  /** The token id. */
  token: number;
  /** Its natural log-probability: the log of the softmax of the model's raw logits
   * (before penalties, temperature, filters and any constraint), in double precision. */
  logprob: number;
  /** The most likely tokens at that step, most likely first (the lower id on ties). */
  top: { token: number; logprob: number }[];
}

/** A streamed piece of generated text. */
export interface Piece {
  /** The text (whole UTF-8 characters only; never empty). */
  text: string;
  /** "thinking" between `<think>` and `</think>`, otherwise "answer". */
  kind: PieceKind;
  /**
   * With the `logprobs` option: the tokens sampled since the previous piece, whose bytes make
   * this text (a token holding part of a character comes with the piece that completes it).
   * The `<think>` and `</think>` tokens are not listed.
   */
  logprobs?: TokenLogprob[];
}

/**
 * Why generation ended: a stop token (`<|im_end|>`, `<|endoftext|>`), the `maxTokens`
 * cap, the AbortSignal (or the caller leaving the loop early), no room left in the
 * context, or the `constraint`'s value closed ("constraint_closed").
 */
export type StopReason =
  | "stop_token"
  | "max_tokens"
  | "aborted"
  | "context_full"
  | "constraint_closed";

/** Counters and timings of one generation. */
export interface GenerationStats {
  /** Tokens prefilled before the first new token (for a chat: this turn's prompt). */
  promptTokens: number;
  /** New tokens sampled, stop token excluded. */
  generatedTokens: number;
  /** Time of the prompt's forward pass, ms. */
  prefillMs: number;
  /** Time of sampling and per-token forward passes, ms (time spent by the caller between
   * pieces is not counted). */
  decodeMs: number;
  /** promptTokens / prefill seconds (0 when nothing was prefilled). */
  prefillTokensPerSecond: number;
  /** generatedTokens / decode seconds (0 when nothing was generated). */
  decodeTokensPerSecond: number;
  /** Why generation ended. */
  stopReason: StopReason;
  /** Session position (tokens in the KV cache) when generation began. */
  startPosition: number;
  /** Tokens proposed by speculative decoding (prompt lookup) and verified; 0 when off. */
  draftedTokens: number;
  /** Drafted tokens that were accepted, each one forward pass saved. */
  acceptedTokens: number;
  /** acceptedTokens / draftedTokens (0 when nothing was drafted). */
  acceptanceRate: number;
}

/**
 * Per-call options of generation ({@linkcode Qwen3.generate}, {@linkcode Chat.send}):
 * sampling, a token cap and cancellation.
 */
export interface GenerateOptions extends SamplerOptions {
  /**
   * Most new tokens to generate (an integer >= 0, or Infinity): generation otherwise runs
   * until a stop token or a full context.
   *
   * @default {Infinity}
   */
  maxTokens?: number;
  /**
   * Stops generation between two tokens when aborted; the text so far is kept and
   * `stats.stopReason` is "aborted".
   */
  signal?: AbortSignal;
  /**
   * Speculative decoding by prompt lookup: tokens that followed an earlier occurrence of
   * the text's last few tokens are verified in one batched forward pass, and those the
   * sampler picks are kept. The output is the same as without it, token for token for a
   * given seed (docs/sampling.md#speculative-decoding); only the speed changes. On by
   * default on the C engine, where a batch of tokens costs little more than one; off on
   * the TypeScript engine, which runs a batch token by token.
   *
   * @default {true on the C engine, false on the TypeScript engine}
   */
  speculate?: boolean;
}

/** What the loop needs from a tokenizer. */
export interface TokenBytes {
  /** The raw bytes of a token id. */
  tokenBytes(id: number): Uint8Array;
}

/** What the loop needs from a sampler. */
export interface TokenSampler {
  /** Picks the next token id from the logits (and counts it for penalties). */
  sample(logits: Float32Array): number;
  /** Picks without counting ({@linkcode Sampler.pick}); needed with a constraint. */
  pick?(logits: Float32Array): number;
  /** Counts a kept token ({@linkcode Sampler.record}); needed with a constraint. */
  record?(token: number): void;
}

/**
 * Restricts which tokens the answer may hold (constrained decoding, e.g.
 * {@linkcode JsonTokenConstraint}): the loop tries the sampler's pick, masks it when refused
 * and picks again (after 16 refusals it masks every refused token at once), lets a stop token
 * end the answer only when `complete`, and ends generation as soon as `closed`. Inside a
 * `<think>` block nothing is restricted but the stop tokens, which wait for the answer. A
 * step where no token of the vocabulary is allowed (possible only with a vocabulary that
 * lacks single-byte tokens) throws a Qwen3Error `invalid_argument`.
 */
export interface TokenConstraint {
  /** Whether a token may come next in the answer. */
  allows(token: number): boolean;
  /** Takes a token `allows` accepted. */
  accept(token: number): void;
  /** True where the answer may end. */
  readonly complete: boolean;
  /** True when nothing more may follow: generation ends (stopReason "constraint_closed"). */
  readonly closed: boolean;
  /** Whether the first token may open a `<think>` block (thinking on). */
  readonly thinkFirst?: boolean;
}

/** Refused picks before the loop masks every refused token of the vocabulary at once. */
const CONSTRAINT_TRIES = 16;

/** Everything one run of the loop works with. */
export interface GenerationParams {
  /** The session to run in; its KV cache is extended, never rewound. */
  session: EngineSession;
  /** Turns token ids into bytes for the text stream. */
  tokenizer: TokenBytes;
  /** Picks each next token. */
  sampler: TokenSampler;
  /**
   * Tokens to prefill first (must not be empty), or a function that encodes them given the
   * free positions of the session: it throws a Qwen3Error "context_full" when they do not
   * fit (Tokenizer.encode's `limit`), so a huge prompt is refused without being encoded.
   */
  prompt: readonly number[] | ((free: number) => readonly number[]);
  /** Tokens that end generation (not emitted, not fed). */
  stopTokens: ReadonlySet<number>;
  /** The `<think>` / `</think>` ids, when the vocabulary has them. */
  think?: { open: number; close: number };
  /** Kind of the first pieces (default "answer"). */
  startKind?: PieceKind;
  /** Cap on new tokens. */
  maxTokens?: number;
  /** Cancels between tokens. */
  signal?: AbortSignal;
  /** Draft tokens by prompt lookup and verify them in batches (default off here), with
   * the default {@linkcode DraftOptions} or these. */
  speculate?: boolean | DraftOptions;
  /** Tokens the session held before the prompt (earlier chat turns): prompt lookup
   * searches them for drafts too. */
  history?: readonly number[];
  /** Report each sampled token's log-probability with this many alternatives (0..20). */
  logprobs?: number;
  /** Restricts the answer's tokens. */
  constraint?: TokenConstraint;
  /**
   * Called before and after every forward pass; throws (a Qwen3Error "disposed") when the
   * run must end because what it runs on was disposed. The error ends the run and reaches
   * the caller; the text so far stays in the result.
   */
  live?: () => void;
}

/**
 * The state of a run, filled as it goes, so a caller that stops iterating early still
 * knows what happened and what the KV cache holds.
 */
export interface GenerationResult {
  /** The answer text so far. */
  text: string;
  /** The reasoning text so far (between `<think>` and `</think>`). */
  thinking: string;
  /** Every token sampled, in order (the stop token excluded). */
  tokens: number[];
  /** True once the prompt is in the KV cache. */
  promptFed: boolean;
  /**
   * Sampled tokens not yet in the KV cache (at most one: the last token, when generation
   * ended before feeding it). A caller continuing the conversation feeds them first.
   */
  unfed: number[];
  /** The stop token that ended generation, if one did. */
  stopToken?: number;
  /** Set when the run has ended. */
  stats?: GenerationStats;
}

/** A fresh, empty result record. */
export function emptyResult(): GenerationResult {
  return { text: "", thinking: "", tokens: [], promptFed: false, unfed: [] };
}

function checkMaxTokens(n: number | undefined): number {
  if (n === undefined) return Infinity;
  if (!(n === Infinity || (Number.isInteger(n) && n >= 0))) {
    throw new Qwen3Error("invalid_argument", `maxTokens must be a non-negative integer, got ${n}`);
  }
  return n;
}

function checkLogprobs(n: number | undefined): number | undefined {
  if (n !== undefined && !(Number.isInteger(n) && n >= 0 && n <= 20)) {
    throw new Qwen3Error("invalid_argument", `logprobs must be an integer in 0..20, got ${n}`);
  }
  return n;
}

/**
 * A token's log-probability under the softmax of `logits`, and the `top` most likely tokens
 * (most likely first, the lower id on ties), in double precision. NaN logits count as
 * impossible.
 *
 * @param logits The raw logits of the step.
 * @param token The token sampled.
 * @param top How many alternatives (0..20).
 * @returns The record.
 */
export function tokenLogprob(logits: Float32Array, token: number, top: number): TokenLogprob {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = logits[i];
    if (v === v) sum += Math.exp(v - max);
  }
  const lse = max + Math.log(sum);
  const lp = (v: number) => (v === v ? v - lse : -Infinity);
  // The best `top` ids, kept sorted by insertion (top <= 20).
  const best: number[] = [];
  for (let i = 0; i < n && top > 0; i++) {
    const v = logits[i];
    if (!(v === v)) continue;
    if (best.length === top && !(v > logits[best[top - 1]])) continue;
    let at = best.length === top ? top - 1 : best.length;
    while (at > 0 && v > logits[best[at - 1]]) {
      if (at < top) best[at] = best[at - 1];
      at--;
    }
    best[at] = i;
  }
  return {
    token,
    logprob: lp(logits[token]),
    top: best.map((id) => ({ token: id, logprob: lp(logits[id]) })),
  };
}

/**
 * The sampler's pick among the tokens `allowed` lets through: refused picks are masked
 * (their logits set to -Infinity in a copy) and the sampler picks again; after
 * CONSTRAINT_TRIES refusals every refused token is masked at once. The kept token is
 * counted for the penalties; refused ones are not.
 */
function pickAllowed(
  logits: Float32Array,
  sampler: TokenSampler,
  allowed: (token: number) => boolean,
): number {
  if (!sampler.pick || !sampler.record) {
    throw new Qwen3Error("invalid_argument", "a constraint needs a sampler with pick and record");
  }
  let masked: Float32Array | undefined;
  for (let tries = 0; tries < CONSTRAINT_TRIES; tries++) {
    const t = sampler.pick(masked ?? logits);
    if (allowed(t)) {
      sampler.record(t);
      return t;
    }
    masked ??= logits.slice();
    masked[t] = -Infinity;
  }
  masked ??= logits.slice();
  let any = false;
  for (let t = 0; t < masked.length; t++) {
    if (masked[t] === -Infinity) continue;
    if (allowed(t)) any = true;
    else masked[t] = -Infinity;
  }
  if (!any) {
    throw new Qwen3Error("invalid_argument", "no token of the vocabulary can continue the output");
  }
  let t = sampler.pick(masked);
  if (!allowed(t)) t = argmax(masked); // a rounding fallback of the sampler landed on a masked id
  sampler.record(t);
  return t;
}

function perSecond(count: number, ms: number): number {
  return ms > 0 ? count / (ms / 1000) : 0;
}

/**
 * Runs one generation, yielding text pieces as soon as they form whole characters.
 * `result` is updated in place; its `stats` are set when the run ends, however it ends
 * (including the caller breaking out of its loop, counted as "aborted"). A context that
 * fills up ends the run with stopReason "context_full" instead of throwing.
 */
export async function* runGeneration(
  p: GenerationParams,
  result: GenerationResult = emptyResult(),
): AsyncGenerator<Piece, GenerationResult, undefined> {
  const maxTokens = checkMaxTokens(p.maxTokens);
  if (typeof p.prompt !== "function" && p.prompt.length === 0) {
    throw new Qwen3Error("invalid_argument", "the prompt is empty: give at least one token");
  }
  const session = p.session;
  let prompt: readonly number[] = [];
  const decoder = new TextStreamDecoder();
  let kind: PieceKind = p.startKind ?? "answer";
  let stopReason: StopReason = "aborted";
  let prefillMs = 0;
  let decodeMs = 0;
  const startPosition = session.position;
  let mark = 0;
  let lookup: PromptLookup | undefined;
  let verified: PendingDrafts | undefined; // a verify pass whose drafts are being checked
  let drafted = 0;
  let accepted = 0;

  const logprobs = checkLogprobs(p.logprobs);
  const pending: TokenLogprob[] = [];
  const piece = (text: string): Piece | undefined => {
    if (text === "") return undefined;
    if (kind === "thinking") result.thinking += text;
    else result.text += text;
    return logprobs === undefined ? { text, kind } : { text, kind, logprobs: pending.splice(0) };
  };
  const constraint = p.constraint;
  const isThinkTag = (t: number) =>
    p.think !== undefined && (t === p.think.open || t === p.think.close);
  // What a constraint lets through: in the answer, its tokens (a stop token once complete,
  // `<think>` first when thinking is on); in a think block, anything but a stop token.
  const allowed = (t: number): boolean => {
    if (p.stopTokens.has(t)) return kind === "answer" && constraint!.complete;
    if (kind === "thinking") return true;
    if (p.think !== undefined && t === p.think.open) {
      return constraint!.thinkFirst === true && result.tokens.length === 0;
    }
    return constraint!.allows(t);
  };

  try {
    if (p.signal?.aborted) return result;
    p.live?.();
    if (typeof p.prompt === "function") {
      try {
        prompt = p.prompt(Math.max(0, session.contextLength - startPosition));
      } catch (e) {
        if (!(e instanceof Qwen3Error && e.code === "context_full")) throw e;
        stopReason = "context_full";
        return result;
      }
      if (prompt.length === 0) {
        throw new Qwen3Error("invalid_argument", "the prompt is empty: give at least one token");
      }
    } else {
      prompt = p.prompt;
    }
    if (startPosition + prompt.length > session.contextLength) {
      stopReason = "context_full";
      return result;
    }
    mark = performance.now();
    let logits = await session.forward(prompt);
    prefillMs = performance.now() - mark;
    result.promptFed = true;
    p.live?.();
    const vocab = logits.length;
    if (p.speculate && session.verify) {
      const text = p.history ? [...p.history, ...prompt] : prompt;
      lookup = new PromptLookup(text, p.speculate === true ? {} : p.speculate);
    }

    mark = performance.now();
    if (maxTokens === 0) {
      stopReason = "max_tokens";
      return result;
    }
    while (true) {
      if (p.signal?.aborted) {
        stopReason = "aborted";
        break;
      }
      const token = constraint ? pickAllowed(logits, p.sampler, allowed) : p.sampler.sample(logits);
      if (p.stopTokens.has(token)) {
        result.stopToken = token;
        stopReason = "stop_token";
        break;
      }
      result.tokens.push(token);
      result.unfed = [token];
      lookup?.push(token);
      if (logprobs !== undefined && !isThinkTag(token)) {
        pending.push(tokenLogprob(logits, token, logprobs));
      }
      if (constraint && kind === "answer" && !isThinkTag(token)) constraint.accept(token);

      let out: Piece | undefined;
      if (p.think && (token === p.think.open || token === p.think.close)) {
        // The tags switch the kind of what follows; their own text is not part of either.
        out = piece(decoder.flush());
        kind = token === p.think.open ? "thinking" : "answer";
      } else {
        out = piece(decoder.push(p.tokenizer.tokenBytes(token)));
      }
      if (out) {
        decodeMs += performance.now() - mark;
        yield out;
        mark = performance.now();
      }

      if (constraint?.closed && kind === "answer") {
        stopReason = "constraint_closed";
        break;
      }
      if (result.tokens.length >= maxTokens) {
        stopReason = "max_tokens";
        break;
      }
      if (
        verified && verified.next < verified.drafts.length &&
        token === verified.drafts[verified.next]
      ) {
        // A drafted token the sampler picked: the verify pass already ran it.
        verified.next++;
        accepted++;
        logits = verified.rows.subarray(verified.next * vocab, (verified.next + 1) * vocab);
        result.unfed = [];
        continue;
      }
      if (verified) {
        // The drafts from here on were not picked: forget them.
        lookup?.feedback(verified.drafts.length, verified.next);
        session.rewind(verified.base + verified.next);
        verified = undefined;
      }
      if (session.position >= session.contextLength) {
        stopReason = "context_full";
        break;
      }
      if (p.signal?.aborted) {
        stopReason = "aborted";
        break;
      }
      // Drafts fit after the token in the context, and stop short of the last token
      // maxTokens allows (that one is sampled from the last row) and of any stop token.
      const room = Math.min(
        session.contextLength - session.position - 1,
        maxTokens - result.tokens.length - 1,
      );
      const drafts = lookup && room > 0 ? lookup.draft(room) : [];
      const stopAt = drafts.findIndex((t) => p.stopTokens.has(t));
      if (stopAt >= 0) drafts.length = stopAt;
      p.live?.();
      ({ logits, pending: verified } = await feedWithDrafts(session, token, drafts, vocab));
      drafted += drafts.length;
      result.unfed = [];
      p.live?.();
    }
    const tail = piece(decoder.flush());
    decodeMs += performance.now() - mark;
    if (tail) yield tail;
  } finally {
    // Reached on every exit: normal end, a thrown error, or the caller's early break.
    if (verified) {
      // Drafts run but not taken leave the cache holding exactly the fed tokens.
      const fed = startPosition + prompt.length + result.tokens.length - result.unfed.length;
      try {
        if (session.position > fed) session.rewind(fed);
      } catch { /* a disposed session holds nothing to fix */ }
    }
    result.stats = {
      promptTokens: result.promptFed ? prompt.length : 0,
      generatedTokens: result.tokens.length,
      prefillMs,
      decodeMs,
      prefillTokensPerSecond: perSecond(result.promptFed ? prompt.length : 0, prefillMs),
      decodeTokensPerSecond: perSecond(result.tokens.length, decodeMs),
      stopReason,
      startPosition,
      draftedTokens: drafted,
      acceptedTokens: accepted,
      acceptanceRate: drafted > 0 ? accepted / drafted : 0,
    };
  }
  return result;
}

/**
 * A generation in progress, from {@linkcode Qwen3.generate} or {@linkcode Chat.send}.
 * Nothing runs until it is iterated: iterate it once (`for await`) for its pieces, or call
 * {@linkcode Generation.complete}; afterwards `text`, `thinking`, `tokens` and `stats`
 * describe the whole run, however it ended (breaking out of the loop counts as "aborted").
 *
 * @example Stream the pieces, then read the stats
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * using model = await Qwen3.load(await demoModelPath());
 * const run = model.generate("The sea", { temperature: 0, maxTokens: 4 });
 * for await (const piece of run) console.log(piece.kind, JSON.stringify(piece.text));
 * console.log(run.tokens.length, run.stats?.stopReason); // 4 max_tokens
 * ```
 *
 * @example Stop early with an AbortSignal
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * using model = await Qwen3.load(await demoModelPath());
 * const stop = new AbortController();
 * const run = model.generate("Once upon a time", { temperature: 0, signal: stop.signal });
 * for await (const _piece of run) {
 *   if (run.tokens.length >= 3) stop.abort(); // e.g. a user pressed Ctrl-C
 * }
 * console.log(run.stats?.stopReason); // aborted
 * ```
 */
export class Generation implements AsyncIterable<Piece> {
  #start: (result: GenerationResult) => AsyncGenerator<Piece, unknown, undefined>;
  #result: GenerationResult = emptyResult();
  #started = false;

  /**
   * Wraps a generator function that fills the given result. Internal: generations come
   * from {@linkcode Qwen3.generate} and {@linkcode Chat.send}.
   *
   * @param start Starts the run on the result record it fills.
   * @ignore
   */
  constructor(start: (result: GenerationResult) => AsyncGenerator<Piece, unknown, undefined>) {
    this.#start = start;
  }

  /** The answer text generated so far (without the reasoning). */
  get text(): string {
    return this.#result.text;
  }

  /** The reasoning text generated so far (between `<think>` and `</think>`). */
  get thinking(): string {
    return this.#result.thinking;
  }

  /** Every token sampled so far, in order (the stop token excluded). */
  get tokens(): readonly number[] {
    return this.#result.tokens;
  }

  /** The stats, once the run has ended (undefined before). */
  get stats(): GenerationStats | undefined {
    return this.#result.stats;
  }

  /** True once iteration has begun. */
  get started(): boolean {
    return this.#started;
  }

  /** True once the run has ended. */
  get done(): boolean {
    return this.#result.stats !== undefined;
  }

  /**
   * Runs to the end without streaming.
   *
   * @returns The answer text (the reasoning is in {@linkcode Generation.thinking}).
   * @throws {Qwen3Error} What iterating it throws: `invalid_argument`, `disposed`, and on the
   * C engine `io` and `out_of_memory` (see `[Symbol.asyncIterator]`).
   *
   * @example The whole answer at once
   * ```ts
   * import { demoModelPath, Qwen3 } from "@q3/qwen3";
   *
   * using model = await Qwen3.load(await demoModelPath());
   * const run = model.generate("The sea", { temperature: 0, maxTokens: 8 });
   * console.log(await run.complete(), run.stats?.generatedTokens); // , and the sea of the sea, 8
   * ```
   */
  async complete(): Promise<string> {
    for await (const _ of this) { /* drain */ }
    return this.text;
  }

  /**
   * Starts the run. A Generation can be iterated only once. A context that fills up ends
   * the run with `stats.stopReason` "context_full" rather than an error, and a prompt that
   * does not fit runs nothing.
   *
   * @returns An iterator of the pieces, each whole UTF-8 characters and never empty.
   * @throws {Qwen3Error} `invalid_argument` when iterated a second time, for invalid
   * sampler options or `maxTokens`, an empty prompt, or a chat still answering its previous
   * turn; `disposed` when the model or chat is disposed (at the next token, the text so far
   * kept); on the C engine also `io` (the model file changed on disk) and `out_of_memory`.
   * The iteration's errors reach the `for await` loop, not this call.
   */
  [Symbol.asyncIterator](): AsyncIterator<Piece> {
    if (this.#started) {
      throw new Qwen3Error("invalid_argument", "a Generation can be iterated only once");
    }
    this.#started = true;
    return this.#start(this.#result);
  }
}
