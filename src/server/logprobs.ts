/**
 * `logprobs` in OpenAI's two shapes: chat completions' `choices[].logprobs.content[]` (one
 * entry per answer token: `token`, `logprob`, `bytes`, `top_logprobs`) and text
 * completions' legacy `tokens`, `token_logprobs`, `top_logprobs` and `text_offset`.
 * The values are the model's own distribution, the softmax of the raw logits, before
 * penalties, temperature, filters and `response_format` (README's server section).
 * @module
 */

import type { PieceKind, TokenLogprob } from "../api/generate.ts";

/** What the records need from a tokenizer. */
export interface TokenText {
  /** The raw bytes of a token id. */
  tokenBytes(id: number): Uint8Array;
}

/** One chat `logprobs.content[]` entry (and, without its own list, a `top_logprobs` one). */
export interface ChatTokenLogprob {
  /** The token's text (U+FFFD where it holds part of a character). */
  token: string;
  /** Natural log-probability. */
  logprob: number;
  /** The token's raw UTF-8 bytes. */
  bytes: number[];
  /** The most likely tokens at that step. */
  top_logprobs?: Omit<ChatTokenLogprob, "top_logprobs">[];
}

/** The legacy text completion `logprobs` object. */
export interface TextLogprobs {
  /** Each token's text. */
  tokens: string[];
  /** Each token's log-probability. */
  token_logprobs: number[];
  /** Each step's most likely tokens, text to log-probability. */
  top_logprobs: Record<string, number>[];
  /** Where each token's text starts in the completion text (UTF-16 code units). */
  text_offset: number[];
}

const LOSSY = new TextDecoder();

/**
 * Collects the records of one reply as the tokens arrive and hands them out chunk by chunk
 * (`take`) or all at once (`all`). Chat replies list the answer's tokens only (the fields
 * are defined per content token; reasoning tokens are left out); text replies list every
 * token, their offsets counting the `<think>` / `</think>` tags the text holds.
 */
export class LogprobCollector {
  #vocab: TokenText;
  #chat: boolean;
  #entries: TokenLogprob[] = [];
  #offsets: number[] = [];
  #taken = 0;
  #decoder = new TextDecoder();
  #length = 0;
  #kind: PieceKind = "answer";

  /**
   * Starts an empty collection.
   *
   * @param vocab The tokenizer.
   * @param chat Chat (answer tokens only) or text completion (every token).
   */
  constructor(vocab: TokenText, chat: boolean) {
    this.#vocab = vocab;
    this.#chat = chat;
  }

  /**
   * Adds the records of a piece's tokens.
   *
   * @param kind The piece's kind.
   * @param entries Its tokens' records.
   */
  push(kind: PieceKind, entries: readonly TokenLogprob[]): void {
    if (this.#chat && kind !== "answer") return;
    if (!this.#chat && kind !== this.#kind) {
      // The text reply writes the tags between the kinds (handlers.ts withThinkTags).
      this.#length += (kind === "thinking" ? "<think>" : "</think>").length;
      this.#kind = kind;
    }
    for (const e of entries) {
      this.#entries.push(e);
      this.#offsets.push(this.#length);
      this.#length += this.#decoder.decode(this.#vocab.tokenBytes(e.token), { stream: true })
        .length;
    }
  }

  /**
   * The records added since the last `take`, in the reply's shape.
   *
   * @returns Chat: `{content, refusal}`; text: the legacy object.
   */
  take(): { content: ChatTokenLogprob[]; refusal: null } | TextLogprobs {
    const from = this.#taken;
    this.#taken = this.#entries.length;
    return this.#shape(from, this.#taken);
  }

  /**
   * Every record, in the reply's shape.
   *
   * @returns As `take`, over the whole reply.
   */
  all(): { content: ChatTokenLogprob[]; refusal: null } | TextLogprobs {
    this.#taken = this.#entries.length;
    return this.#shape(0, this.#entries.length);
  }

  #entry(token: number, logprob: number): Omit<ChatTokenLogprob, "top_logprobs"> {
    const bytes = this.#vocab.tokenBytes(token);
    return { token: LOSSY.decode(bytes), logprob, bytes: Array.from(bytes) };
  }

  #shape(from: number, to: number) {
    const entries = this.#entries.slice(from, to);
    if (this.#chat) {
      return {
        content: entries.map((e) => ({
          ...this.#entry(e.token, e.logprob),
          top_logprobs: e.top.map((t) => this.#entry(t.token, t.logprob)),
        })),
        refusal: null,
      };
    }
    return {
      tokens: entries.map((e) => LOSSY.decode(this.#vocab.tokenBytes(e.token))),
      token_logprobs: entries.map((e) => e.logprob),
      top_logprobs: entries.map((e) => {
        const top: Record<string, number> = {};
        // Two tokens with the same text (parts of characters): the likelier one is kept.
        for (const t of e.top) top[LOSSY.decode(this.#vocab.tokenBytes(t.token))] ??= t.logprob;
        return top;
      }),
      text_offset: this.#offsets.slice(from, to),
    };
  }
}
