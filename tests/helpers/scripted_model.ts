/**
 * A real model (the demo model) whose `generate` is replaced by a script, for the server
 * tests: the demo model never reasons aloud or calls a tool, so the paths that handle those
 * are fed pieces written here instead.
 * @module
 */

import { Generation, type GenerationResult, type Piece } from "../../src/api/generate.ts";
import { demoModelPath } from "../../src/api/demo.ts";
import { Qwen3 } from "../../src/api/qwen3.ts";

/** A scripted model, with every prompt `generate` was given (token ids; [] for text). */
export type ScriptedModel = Qwen3 & { prompts: number[][] };

/**
 * Loads the demo model with `contextLength` positions and makes its `generate` stream
 * `pieces`, a token each, then end with a stop token, at `maxTokens`, or as aborted when the
 * caller's signal fired or it stopped reading.
 *
 * @param pieces The pieces, or a function of the run's AbortSignal giving them.
 * @param contextLength The context length of the loaded model.
 * @returns The model, with `prompts` recording each prompt.
 */
export async function scriptedModel(
  pieces: Piece[] | ((signal: AbortSignal | undefined) => AsyncIterable<Piece>),
  contextLength: number,
): Promise<ScriptedModel> {
  const m = await Qwen3.load(await demoModelPath(), { contextLength });
  const prompts: number[][] = [];
  m.generate = (prompt, opts = {}) =>
    new Generation(async function* (result: GenerationResult) {
      prompts.push(typeof prompt === "string" ? [] : [...prompt]);
      const source = typeof pieces === "function" ? pieces(opts.signal) : pieces;
      let stopReason: "stop_token" | "aborted" | "max_tokens" = "aborted";
      try {
        for await (const p of source) {
          result.tokens.push(0);
          yield p;
          if (result.tokens.length >= (opts.maxTokens ?? Infinity)) {
            stopReason = "max_tokens";
            return;
          }
        }
        stopReason = opts.signal?.aborted ? "aborted" : "stop_token";
      } finally {
        result.stats = {
          promptTokens: typeof prompt === "string" ? 1 : prompt.length,
          generatedTokens: result.tokens.length,
          prefillMs: 0,
          decodeMs: 0,
          prefillTokensPerSecond: 0,
          decodeTokensPerSecond: 0,
          stopReason,
          startPosition: 0,
          draftedTokens: 0,
          acceptedTokens: 0,
          acceptanceRate: 0,
        };
      }
    });
  return Object.assign(m, { prompts });
}
