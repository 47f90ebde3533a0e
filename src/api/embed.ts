/**
 * Text embeddings with Qwen3-Embedding models: the input format of their model card, last-token
 * pooling through {@linkcode EngineSession.embed} (no logits computed), L2 normalisation and
 * Matryoshka truncation. docs/embeddings.md has the format and what it was taken from.
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import type { Engine } from "../types.ts";

/** Options of {@linkcode Qwen3.embed}. */
export interface EmbedOptions {
  /**
   * Keep only the first `dimensions` values of each embedding, then L2-normalise again
   * (Matryoshka truncation, which Qwen3-Embedding is trained for). An integer from 1 to the
   * model's `dim`; absent: all `dim` values.
   */
  dimensions?: number;
  /**
   * A task description for queries: the text becomes
   * `Instruct: {instruction}\nQuery:{text}` (the Qwen3-Embedding model card's query format).
   * Leave it out for the documents a query is compared with. Absent or empty: the text as it
   * is.
   */
  instruction?: string;
  /** Stops between inputs: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * The text an input is embedded as: `Instruct: {instruction}\nQuery:{text}` with an
 * instruction, else the text itself (docs/embeddings.md#input-format).
 *
 * @param text The query or document.
 * @param instruction The task description, for queries.
 * @returns The text to tokenize.
 */
export function embeddingText(text: string, instruction?: string): string {
  return instruction ? `Instruct: ${instruction}\nQuery:${text}` : text;
}

/**
 * The token ids of an input: the text ({@linkcode embeddingText}) encoded as plain text (a
 * literal `<|endoftext|>` in it is text, never the control token), then `<|endoftext|>`.
 *
 * @param tokenizer The model's tokenizer.
 * @param endOfText The `<|endoftext|>` id.
 * @param text The query or document.
 * @param instruction The task description, for queries.
 * @returns The ids, ending with `endOfText`.
 */
export function embeddingTokens(
  tokenizer: Tokenizer,
  endOfText: number,
  text: string,
  instruction?: string,
): number[] {
  const ids = tokenizer.encode(embeddingText(text, instruction));
  ids.push(endOfText);
  return ids;
}

/**
 * Checks a `dimensions` option against the model's width.
 *
 * @param dimensions The requested width, or undefined for all of it.
 * @param dim The model's hidden width.
 * @returns The width to keep.
 * @throws {Qwen3Error} `invalid_argument` naming the value and the allowed range.
 */
export function embeddingDimensions(dimensions: number | undefined, dim: number): number {
  if (dimensions === undefined) return dim;
  if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > dim) {
    throw new Qwen3Error(
      "invalid_argument",
      `dimensions must be an integer from 1 to the model's ${dim}, got ${String(dimensions)}`,
    );
  }
  return dimensions;
}

/**
 * The first `dimensions` values of `hidden`, divided by their L2 norm (summed in float64, in
 * order; a zero vector stays zero), as a new array.
 *
 * @param hidden A pooled hidden state.
 * @param dimensions How many leading values to keep.
 * @returns A unit-length Float32Array of `dimensions` values.
 */
export function normalizeEmbedding(hidden: Float32Array, dimensions: number): Float32Array {
  const out = hidden.slice(0, dimensions);
  let sum = 0;
  for (let i = 0; i < out.length; i++) sum += out[i] * out[i];
  const norm = Math.sqrt(sum);
  if (norm > 0) { for (let i = 0; i < out.length; i++) out[i] = out[i] / norm; }
  return out;
}

/**
 * Embeds token sequences one after another in one session of the engine: each is rewound
 * to position 0 and prefilled in blocks with {@linkcode EngineSession.embed} (no logits),
 * and its last token's hidden state is truncated and normalised.
 *
 * @param engine The engine to run on.
 * @param inputs Token sequences, each non-empty and at most the engine's context length.
 * @param dimensions Values to keep per embedding ({@linkcode embeddingDimensions}).
 * @param signal Checked before each input.
 * @returns One unit-length embedding per input.
 * @throws {Qwen3Error} `context_full` naming the input that does not fit (nothing run);
 * `invalid_argument` for an empty input or a bad token id; the engine's errors.
 */
export async function embedTokenInputs(
  engine: Engine,
  inputs: readonly (readonly number[])[],
  dimensions: number,
  signal?: AbortSignal,
): Promise<Float32Array[]> {
  let longest = 0;
  for (let i = 0; i < inputs.length; i++) {
    if (inputs[i].length === 0) {
      throw new Qwen3Error("invalid_argument", `input ${i} has no tokens`);
    }
    longest = Math.max(longest, inputs[i].length);
  }
  if (inputs.length === 0) return [];
  using session = engine.createSession(longest);
  for (let i = 0; i < inputs.length; i++) {
    if (inputs[i].length > session.contextLength) {
      throw new Qwen3Error(
        "context_full",
        `input ${i} has ${inputs[i].length} tokens, more than the context length ` +
          `${session.contextLength}; shorten it or load the model with a longer contextLength`,
      );
    }
  }
  const out: Float32Array[] = [];
  for (const tokens of inputs) {
    signal?.throwIfAborted();
    session.rewind(0);
    out.push(normalizeEmbedding(await session.embed(tokens), dimensions));
  }
  return out;
}
