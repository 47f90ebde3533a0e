/**
 * Writes qwen3.c's tokenizer and template side files (docs/formats.md#side-files), so a
 * checkpoint we export runs under qwen3.c and qwen3-rs too. For Qwen3's tokenizer and the
 * stock templates, {@linkcode qwen3cSideFiles} gives `.tokenizer` (about 2.2 MB) and the four
 * `.template*` files (52 to 103 bytes each).
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import {
  type ChatTemplates,
  STOCK_TEMPLATES,
  TEMPLATE_SUFFIXES,
  validateTemplates,
} from "../text/template.ts";

/** Score of byte tokens and added tokens: "never made by a merge". */
export const QWEN3C_NO_MERGE_SCORE: number = -1e6;

/** Header ids of the `.tokenizer` file; by default taken from the tokenizer's own tokens. */
export interface Qwen3cTokenizerOptions {
  /**
   * bos_id field. Default: `<|endoftext|>` (151643), Qwen3's config.json `bos_token_id`,
   * which qwen3.c's exporter copies.
   */
  bosId?: number;
  /**
   * eos_id field. Default: `<|im_end|>` (151645), the instruct models' config.json
   * `eos_token_id`, which qwen3.c's exporter copies (the chat loop stops on it).
   */
  eosId?: number;
}

/**
 * The qwen3.c `.tokenizer` file for a tokenizer: u32 max_token_length, u32 bos_id, u32
 * eos_id, then per token id: f32 score, u32 byte length, raw bytes. Score is -ln(rank + 1)
 * for a token made by merge `rank` and -1e6 for byte and added tokens; a missing id is
 * written empty.
 *
 * @param tok The tokenizer.
 * @param opts The header's bos and eos ids (default: the tokenizer's own).
 * @returns The file's bytes.
 * @throws {Qwen3Error} `invalid_argument` when bos or eos is not a token id.
 */
export function writeQwen3cTokenizer(
  tok: Tokenizer,
  opts: Qwen3cTokenizerOptions = {},
): Uint8Array {
  const ids = tok.specialIds;
  const bosId = opts.bosId ?? (ids.endOfText >= 0 ? ids.endOfText : 0);
  const eosId = opts.eosId ?? (ids.imEnd >= 0 ? ids.imEnd : bosId);
  for (const [name, v] of [["bosId", bosId], ["eosId", eosId]] as const) {
    if (!Number.isInteger(v) || v < 0 || v >= tok.size) {
      throw new Qwen3Error("invalid_argument", `${name} ${v} is not a token id (size ${tok.size})`);
    }
  }
  let total = 12;
  let maxLength = 0;
  for (let id = 0; id < tok.size; id++) {
    const n = tok.tokenBytes(id).length;
    total += 8 + n;
    if (n > maxLength) maxLength = n;
  }
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, maxLength, true);
  dv.setUint32(4, bosId, true);
  dv.setUint32(8, eosId, true);
  let off = 12;
  for (let id = 0; id < tok.size; id++) {
    const bytes = tok.tokenBytes(id);
    const rank = tok.mergeRank(id);
    dv.setFloat32(off, rank >= 0 ? -Math.log(rank + 1) : QWEN3C_NO_MERGE_SCORE, true);
    dv.setUint32(off + 4, bytes.length, true);
    out.set(bytes, off + 8);
    off += 8 + bytes.length;
  }
  return out;
}

/**
 * The four template side files' contents (UTF-8, no trailing newline), validated.
 *
 * @param t The templates (default: the stock Qwen3 ones).
 * @returns Each file's bytes by its suffix (`.template`, `.template.with-thinking`, ...).
 * @throws {Qwen3Error} `format` or `invalid_argument` naming a template with the wrong
 * placeholders or that is not a string.
 */
export function writeQwen3cTemplates(t: ChatTemplates = STOCK_TEMPLATES): Map<string, Uint8Array> {
  validateTemplates(t);
  const enc = new TextEncoder();
  const out = new Map<string, Uint8Array>();
  for (const [key, suffix] of Object.entries(TEMPLATE_SUFFIXES)) {
    out.set(suffix, enc.encode(t[key as keyof ChatTemplates]));
  }
  return out;
}

/**
 * Every side file qwen3.c writes beside `model.bin`: `.tokenizer` and the four `.template*`
 * files.
 *
 * @param tok The tokenizer.
 * @param templates The chat templates (default: the stock Qwen3 ones).
 * @param opts The `.tokenizer` header's bos and eos ids (default: the tokenizer's own).
 * @returns Each file's bytes, keyed by the suffix to append to the checkpoint path.
 * @throws {Qwen3Error} as {@linkcode writeQwen3cTokenizer} and
 * {@linkcode writeQwen3cTemplates} say.
 */
export function qwen3cSideFiles(
  tok: Tokenizer,
  templates: ChatTemplates = STOCK_TEMPLATES,
  opts: Qwen3cTokenizerOptions = {},
): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>([[".tokenizer", writeQwen3cTokenizer(tok, opts)]]);
  for (const [suffix, bytes] of writeQwen3cTemplates(templates)) out.set(suffix, bytes);
  return out;
}
