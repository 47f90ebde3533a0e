/**
 * One request's generation: the prompt's tokens run through `Qwen3.generate`, reasoning and
 * answer each filtered for stop strings, and the outcome in OpenAI's terms.
 * @module
 */

import type { Generation, PieceKind, TokenConstraint, TokenLogprob } from "../api/generate.ts";
import type { Qwen3, Qwen3GenerateOptions } from "../api/qwen3.ts";
import { ApiError } from "./errors.ts";
import { StopFilter } from "./stop.ts";
import type { SamplingRequest } from "./validate.ts";

/** New text of one kind: reasoning ("thinking") or answer. */
export interface Delta {
  /** "thinking" (OpenAI's `reasoning_content`) or "answer" (`content`). */
  kind: PieceKind;
  /** Never empty. */
  text: string;
}

/** How a generation ended, in OpenAI's terms, and its token counts. */
export interface Outcome {
  /** "stop": a stop token or string, or the JSON of `response_format` closed; "length": max
   * tokens or a full context (also when they cut a JSON answer short); "tool_calls": the
   * model called a tool and stopped. */
  finishReason: "stop" | "length" | "tool_calls";
  /** Tokens of the prompt. */
  promptTokens: number;
  /** Tokens generated. */
  completionTokens: number;
  /** Prompt tokens taken from the slot's KV cache, not prefilled. */
  cachedTokens: number;
  /** Prompt tokens prefilled per second (the uncached ones; 0 when none). */
  prefillTokensPerSecond: number;
  /** Tokens generated per second. */
  decodeTokensPerSecond: number;
  /** The request's deadline (`--timeout`) stopped the generation ("length"). */
  timedOut: boolean;
}

/**
 * Trims what Qwen3 writes around its reasoning, as llama-server does: the newlines inside
 * `<think>\n...\n</think>` and those that open the answer after it, so `reasoning_content`
 * and `content` hold just the text. Whitespace at the end of the reasoning is held back
 * until more reasoning follows it.
 */
export class ReasoningTrim {
  #inThink = false;
  #thinkStarted = false;
  #held = "";
  #answerAfterThink = false;

  /**
   * Trims the next delta.
   *
   * @param d The next delta.
   * @returns What to send now (possibly nothing).
   */
  push(d: Delta): Delta | undefined {
    if (d.kind === "thinking") {
      if (!this.#inThink) {
        this.#inThink = true;
        this.#thinkStarted = false;
        this.#held = "";
      }
      let text = d.text;
      if (!this.#thinkStarted) {
        text = text.trimStart();
        if (text === "") return undefined;
        this.#thinkStarted = true;
      }
      const all = this.#held + text;
      const body = all.trimEnd();
      this.#held = all.slice(body.length);
      return body === "" ? undefined : { kind: "thinking", text: body };
    }
    if (this.#inThink) {
      this.#inThink = false;
      this.#answerAfterThink = true;
    }
    let text = d.text;
    if (this.#answerAfterThink) {
      text = text.trimStart();
      if (text === "") return undefined;
      this.#answerAfterThink = false;
    }
    return { kind: "answer", text };
  }
}

/**
 * Refuses a prompt that does not fit the context: it is never truncated.
 *
 * @param tokens The prompt's length in tokens.
 * @param contextLength The positions of a slot's context.
 * @param param The request field holding the prompt ("messages" or "prompt").
 * @throws {ApiError} 400 naming both lengths.
 */
export function checkFits(tokens: number, contextLength: number, param: string): void {
  if (tokens > contextLength) {
    throw new ApiError(
      400,
      "context_length_exceeded",
      `the prompt is ${tokens} tokens, more than the context length of ${contextLength}; ` +
        "shorten it (or start the server with a larger --context)",
      { param },
    );
  }
}

/**
 * Generates from `tokens`, yielding reasoning and answer text with stop strings removed
 * (and generation ended at the first one).
 *
 * @param model The model.
 * @param tokens The prompt, rendered and encoded.
 * @param req Sampling, token cap and stop strings.
 * @param signal Ends the generation (the client went away).
 * @param opts `trim`: trim the whitespace around the reasoning ({@linkcode ReasoningTrim});
 * `deadline`: the request's deadline, part of `signal` (a run it stops ends as "length");
 * `generate`: starts the run (default `model.generate`; the server's prompt cache);
 * `constraint`: restricts the answer's tokens (`response_format`); `onLogprobs`: receives
 * each token's log-probability record (with `req.logprobs`) as its text arrives.
 * @returns The outcome, once the deltas are done.
 */
export async function* generateDeltas(
  model: Qwen3,
  tokens: readonly number[],
  req: SamplingRequest,
  signal: AbortSignal,
  opts: {
    trim?: boolean;
    deadline?: AbortSignal;
    generate?: (tokens: readonly number[], opts: Qwen3GenerateOptions) => Generation;
    constraint?: TokenConstraint;
    onLogprobs?: (kind: PieceKind, entries: TokenLogprob[]) => void;
  } = {},
): AsyncGenerator<Delta, Outcome, undefined> {
  const trim = opts.trim ? new ReasoningTrim() : undefined;
  const out = (d: Delta) => trim ? trim.push(d) : d;
  const start = opts.generate ?? ((t, o) => model.generate(t, o));
  const run = start(tokens, {
    ...req.sampler,
    maxTokens: req.maxTokens,
    signal,
    logprobs: req.logprobs,
    constraint: opts.constraint,
  });
  const filters: Record<PieceKind, StopFilter> = {
    thinking: new StopFilter(req.stop),
    answer: new StopFilter(req.stop),
  };
  let last: PieceKind | undefined;
  let stopped = false;
  for await (const piece of run) {
    if (piece.logprobs && opts.onLogprobs) opts.onLogprobs(piece.kind, piece.logprobs);
    if (last !== undefined && last !== piece.kind) {
      // A stop string cannot span the </think> tag: what the old kind held back is text.
      const rest = filters[last].flush();
      const d = rest !== "" ? out({ kind: last, text: rest }) : undefined;
      if (d) yield d;
    }
    last = piece.kind;
    const text = filters[piece.kind].push(piece.text);
    const d = text !== "" ? out({ kind: piece.kind, text }) : undefined;
    if (d) yield d;
    if (filters[piece.kind].stopped) {
      stopped = true;
      break;
    }
  }
  if (!stopped && last !== undefined) {
    const rest = filters[last].flush();
    const d = rest !== "" ? out({ kind: last, text: rest }) : undefined;
    if (d) yield d;
  }
  const stats = run.stats!;
  const timedOut = !stopped && stats.stopReason === "aborted" && opts.deadline?.aborted === true;
  const length = !stopped &&
    (stats.stopReason === "max_tokens" || stats.stopReason === "context_full" || timedOut);
  return {
    finishReason: length ? "length" : "stop",
    timedOut,
    promptTokens: tokens.length,
    completionTokens: stats.generatedTokens,
    cachedTokens: stats.startPosition,
    prefillTokensPerSecond: stats.prefillTokensPerSecond,
    decodeTokensPerSecond: stats.decodeTokensPerSecond,
  };
}
