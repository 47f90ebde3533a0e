/**
 * Qwen3's byte-level BPE tokenizer, exactly as Hugging Face `tokenizers` encodes (docs/tokenizer.md#encoding-pipeline),
 * loaded from a `tokenizer.json`, from token/merge lists (GGUF metadata) or from a qwen3.c
 * `.tokenizer` side file.
 *
 * ```ts
 * import { demoModelPath, Tokenizer } from "@q3/qwen3";
 *
 * const tok = await Tokenizer.load(await demoModelPath()); // the demo model's tokenizer.json
 * const ids = tok.encode("Hello world"); // [39, 664, 78, 1170] (Qwen3's own: [9707, 1879])
 * console.log(tok.decode(ids)); // "Hello world"
 * ```
 * @module
 */

import { dirname, join } from "node:path";
import { escapeForMessage, quoteExcerpt, Qwen3Error } from "../errors.ts";
import {
  QWEN3C_TOKENIZER_LIMIT,
  readSideFile,
  TOKENIZER_JSON_LIMIT,
} from "../formats/side_file.ts";

// ---------------------------------------------------------------------------------------------
// The pre-tokenizer

/*
 * Qwen3's split regex, rewritten for JavaScript. Two spellings differ from the tokenizer.json
 * text on purpose, each checked against Hugging Face's own pre-tokenizer:
 * - `(?i:'s|...)` becomes ASCII classes: Oniguruma does not fold U+017F (long s) into `s` here,
 *   while a JavaScript `i` + `u` regex would.
 * - `\s` becomes Unicode White_Space: Oniguruma counts U+0085 as a space and U+FEFF as not,
 *   JavaScript's `\s` does the opposite.
 */
const WS = "\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PRETOKENIZE_SOURCE = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]" +
  "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+" +
  "|\\p{N}" +
  `| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*` +
  `|[${WS}]*[\\r\\n]+` +
  `|[${WS}]+(?![^${WS}])` +
  `|[${WS}]+`;
const PRETOKENIZE = new RegExp(PRETOKENIZE_SOURCE, "gu");

/** The split pattern as Qwen2/2.5/3 tokenizer.json files spell it; anything else is refused. */
const QWEN_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// ---------------------------------------------------------------------------------------------
// GPT-2's byte-to-unicode alphabet (tokenizer.json and GGUF spell tokens in it)

/** Byte value of each alphabet code point (code points 0..323), -1 elsewhere. */
const UNICODE_TO_BYTE = new Int16Array(324).fill(-1);
/** Alphabet code point of each byte. */
const BYTE_TO_UNICODE = new Uint16Array(256);
{
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const cp = printable ? b : 256 + extra++;
    BYTE_TO_UNICODE[b] = cp;
    UNICODE_TO_BYTE[cp] = b;
  }
}

const UTF8 = new TextEncoder();

/**
 * Internally a token is keyed by its GPT-2 alphabet spelling (one character per byte), the
 * form tokenizer.json and GGUF already use, so their vocabularies need no conversion.
 */
function alphabetFromBytes(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += String.fromCharCode(BYTE_TO_UNICODE[bytes[i]]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Merge table: (left id, right id) -> (rank, result id), open addressing over typed arrays so a
// lookup costs no allocation and no string hashing.

class PairTable {
  readonly left: Int32Array; // (slots) left id, -1 = empty
  readonly right: Int32Array; // (slots)
  readonly rank: Int32Array; // (slots) merge rank: lower merges first
  readonly result: Int32Array; // (slots) id of the merged token
  readonly mask: number;

  constructor(capacity: number) {
    let slots = 1024;
    while (slots < capacity * 2) slots *= 2;
    this.left = new Int32Array(slots).fill(-1);
    this.right = new Int32Array(slots);
    this.rank = new Int32Array(slots);
    this.result = new Int32Array(slots);
    this.mask = slots - 1;
  }

  static hash(a: number, b: number): number {
    let h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    return h ^ (h >>> 12);
  }

  /** Slot of the pair, or -1. */
  find(a: number, b: number): number {
    const { left, right, mask } = this;
    for (let s = PairTable.hash(a, b) & mask;; s = (s + 1) & mask) {
      const l = left[s];
      if (l === -1) return -1;
      if (l === a && right[s] === b) return s;
    }
  }

  /** Inserts or overwrites (a later duplicate merge wins, as in Hugging Face's BPE builder). */
  set(a: number, b: number, rank: number, result: number): void {
    const { left, right, mask } = this;
    let s = PairTable.hash(a, b) & mask;
    while (left[s] !== -1 && !(left[s] === a && right[s] === b)) s = (s + 1) & mask;
    left[s] = a;
    right[s] = b;
    this.rank[s] = rank;
    this.result[s] = result;
  }
}

// ---------------------------------------------------------------------------------------------
// The tokenizer

/**
 * Ids of the control tokens the chat loop needs ({@linkcode Tokenizer.specialIds}); -1
 * where the vocabulary lacks one. The numbers given are Qwen3's.
 */
export interface SpecialIds {
  /** `<|endoftext|>` (151643): end of a document. */
  endOfText: number;
  /** `<|im_start|>` (151644): opens a chat message. */
  imStart: number;
  /** `<|im_end|>` (151645): closes a chat message; the chat stop token. */
  imEnd: number;
  /** `<think>` (151667): opens the reasoning block. */
  think: number;
  /** `</think>` (151668): closes the reasoning block. */
  endThink: number;
}

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Turn added-token text (`<|im_end|>`, `<think>`, ...) into its control id. When false
   * such text is tokenized as ordinary characters, so user input cannot inject control
   * tokens.
   *
   * @default {false}
   */
  special?: boolean;
  /**
   * Most tokens the text may take (an integer >= 0, or Infinity for no limit). When it
   * needs more, encoding stops as soon as that is certain, having done work in proportion
   * to `limit` rather than to the text (a 10 MB string against a limit of 4096 is refused
   * at once), and throws a Qwen3Error "context_full" naming the limit.
   *
   * @default {Infinity}
   */
  limit?: number;
}

/** One piece of a prompt for {@linkcode Tokenizer.encodeParts}. */
export interface PromptPart {
  /** The text. */
  text: string;
  /** True when added-token text in this part becomes control tokens (template text). */
  special: boolean;
}

/** What the private constructor needs; every loader reduces its source to this. */
interface TokenizerData {
  names: (string | undefined)[]; // (size) alphabet spelling of each token, undefined = no token
  vocab: Map<string, number>; // alphabet spelling -> id of the BPE tokens (the merge symbols)
  added: Map<string, number>; // text -> id of the added tokens, matched literally, never merged
  mergeRank: Int32Array; // (size) rank of the merge that makes the token, -1 for none
  pairs: PairTable;
  exact: boolean;
  source: string;
}

/** Pieces shorter than this are merged by a plain scan; longer ones use a heap. */
const SCAN_LIMIT = 48;
/** Pieces longer than this are not cached: they are rare and would crowd out common words. */
const CACHE_PIECE_LIMIT = 64;
/** The piece cache is emptied when it holds this many entries, bounding its memory. */
const CACHE_ENTRIES = 100_000;
const TWO_32 = 4294967296;
/** Heap keys are rank * 2^32 + position in a double, exact while rank < 2^21. */
const MAX_MERGES = 1 << 21;
/** Longest piece (UTF-16 units) whose merge buffer the tokenizer keeps for the next one. */
const SCRATCH_KEPT = 1 << 16;
/** Token ids must be below this (the C loader's limit too); Qwen3 has 151669. */
const MAX_TOKENS = 1 << 24;

/**
 * Qwen3's byte-level BPE: NFC, added tokens split out (only when asked), the Qwen pre-tokenizer
 * regex, then merges by rank inside each piece. Encodes exactly as Hugging Face `tokenizers`
 * does when loaded from `tokenizer.json` or GGUF lists; from a qwen3.c `.tokenizer` file the
 * merge list is rebuilt from scores and {@linkcode Tokenizer.exact} is false. A loaded model
 * has one as {@linkcode Qwen3.tokenizer}.
 *
 * @example Encode and decode
 * ```ts
 * import { demoModelPath, Tokenizer } from "@q3/qwen3";
 *
 * const tok = await Tokenizer.load(await demoModelPath());
 * console.log(tok.encode("Hello world")); // [39, 664, 78, 1170]
 * console.log(tok.decode([39, 664, 78, 1170])); // Hello world
 * console.log(tok.encode("<|im_end|>").length); // 7: plain text by default
 * console.log(tok.encode("<|im_end|>", { special: true })); // [4098]
 * ```
 */
export class Tokenizer {
  /** Number of token ids (151669 for Qwen3; the model's 151936 embedding rows include padding). */
  readonly size: number;
  /** True when the merge list is the original one (tokenizer.json, GGUF); false from `.tokenizer`. */
  readonly exact: boolean;
  /** Where the tokenizer came from, for messages. */
  readonly source: string;

  readonly #bytes: Uint8Array; // (total token bytes) all tokens' raw bytes back to back
  readonly #offsets: Uint32Array; // (size + 1) token id -> start in #bytes
  readonly #added: Uint8Array; // (size)
  readonly #mergeRank: Int32Array; // (size)
  readonly #byteToId: Int32Array; // (256) single-byte token of each byte
  readonly #vocab: Map<string, number>; // alphabet spelling -> id of the BPE tokens
  readonly #pairs: PairTable;
  readonly #addedPattern: RegExp | undefined;
  readonly #addedIds: Map<string, number>; // added token text -> id
  readonly #cache = new Map<string, number[]>();
  #scratch = new Int32Array(256); // (piece bytes) symbols during a merge
  readonly #maxBpeBytes: number; // bytes of the longest BPE token: a piece of n bytes needs >= n / this
  readonly #maxAddedLength: number; // UTF-16 length of the longest added token text

  private constructor(data: TokenizerData) {
    const { names, source } = data;
    const size = names.length;
    this.size = size;
    this.exact = data.exact;
    this.source = source;
    this.#vocab = data.vocab;
    this.#addedIds = data.added;
    this.#mergeRank = data.mergeRank;
    let longest = 1;
    for (const name of data.vocab.keys()) longest = Math.max(longest, name.length);
    this.#maxBpeBytes = longest; // one alphabet character per byte
    let longestAdded = 1;
    for (const text of data.added.keys()) longestAdded = Math.max(longestAdded, text.length);
    this.#maxAddedLength = longestAdded;
    this.#pairs = data.pairs;

    const offsets = new Uint32Array(size + 1);
    let total = 0;
    for (let id = 0; id < size; id++) {
      offsets[id] = total;
      total += names[id]?.length ?? 0;
    }
    offsets[size] = total;
    const bytes = new Uint8Array(total);
    for (let id = 0; id < size; id++) {
      const t = names[id];
      if (t === undefined) continue;
      for (let i = 0, at = offsets[id]; i < t.length; i++) {
        const c = t.charCodeAt(i);
        const b = c < UNICODE_TO_BYTE.length ? UNICODE_TO_BYTE[c] : -1;
        if (b < 0) {
          throw new Qwen3Error(
            "format",
            `${source}: token ${quoteExcerpt(t)} (id ${id}) has a character outside the ` +
              "byte-level alphabet",
          );
        }
        bytes[at + i] = b;
      }
    }
    this.#bytes = bytes;
    this.#offsets = offsets;

    const added = new Uint8Array(size);
    for (const id of data.added.values()) added[id] = 1;
    this.#added = added;

    const byteToId = new Int32Array(256);
    for (let b = 0; b < 256; b++) {
      const id = data.vocab.get(String.fromCharCode(BYTE_TO_UNICODE[b]));
      if (id === undefined) {
        throw new Qwen3Error(
          "format",
          `${source}: no token for byte 0x${b.toString(16).padStart(2, "0")} ` +
            "(a byte-level BPE vocabulary needs all 256 single-byte tokens)",
        );
      }
      byteToId[b] = id;
    }
    this.#byteToId = byteToId;

    // Longest first so that at one position the longest added token wins (leftmost-longest).
    const texts = [...data.added.keys()].filter((s) => s.length > 0).sort((a, b) =>
      b.length - a.length
    );
    this.#addedPattern = texts.length === 0 ? undefined : new RegExp(
      texts.map((s) => s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&")).join("|"),
      "g",
    );
  }

  // -------------------------------------------------------------------------------------------
  // Loaders

  /**
   * Reads a Hugging Face `tokenizer.json` (text or parsed): `model.vocab`, `model.merges`
   * (`"a b"` strings or `[a, b]` pairs) and `added_tokens`.
   *
   * @param json The file's text, or its parsed JSON.
   * @param source Names the tokenizer in error messages and {@linkcode Tokenizer.source}.
   * @returns An exact tokenizer.
   * @throws {Qwen3Error} `format` naming the field when the file is not JSON or not a
   * byte-level BPE of the Qwen kind; `unsupported` for another model type, normalizer or
   * pre-tokenizer, or more than 2^21 merges.
   *
   * @example From a tokenizer.json
   * ```ts
   * import { demoModelPath, Tokenizer } from "@q3/qwen3";
   *
   * const path = (await demoModelPath()).replace(/model\.bin$/, "tokenizer.json");
   * const tok = Tokenizer.fromJson(await Deno.readTextFile(path), path);
   * console.log(tok.size, tok.exact); // 4122 true
   * ```
   */
  static fromJson(json: string | object, source = "tokenizer.json"): Tokenizer {
    let root: unknown = json;
    if (typeof json === "string") {
      try {
        root = JSON.parse(json);
      } catch (e) {
        throw new Qwen3Error(
          "format",
          `${source}: not JSON (${escapeForMessage((e as Error).message)})`,
        );
      }
    }
    const doc = asRecord(root, source, "top level");
    const model = asRecord(doc.model, source, "model");
    if (model.type !== undefined && model.type !== "BPE") {
      throw new Qwen3Error(
        "unsupported",
        `${source}: model.type is ${quoteExcerpt(model.type)}, only "BPE" is supported`,
      );
    }
    checkPipeline(doc, source);
    const vocab = asRecord(model.vocab, source, "model.vocab");
    if (!Array.isArray(model.merges)) {
      throw new Qwen3Error("format", `${source}: model.merges is not an array`);
    }
    const entries: [string, number][] = [];
    for (const [token, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || (id as number) < 0) {
        throw new Qwen3Error(
          "format",
          `${source}: model.vocab[${quoteExcerpt(token)}] = ${quoteExcerpt(id)} is not a token id`,
        );
      }
      entries.push([token, id as number]);
    }
    const addedList = doc.added_tokens === undefined ? [] : doc.added_tokens;
    if (!Array.isArray(addedList)) {
      throw new Qwen3Error("format", `${source}: added_tokens is not an array`);
    }
    const added: [string, number][] = [];
    for (const [i, a] of addedList.entries()) {
      const rec = asRecord(a, source, `added_tokens[${i}]`);
      if (typeof rec.content !== "string" || !Number.isInteger(rec.id) || (rec.id as number) < 0) {
        throw new Qwen3Error("format", `${source}: added_tokens[${i}] lacks content or id`);
      }
      added.push([rec.content, rec.id as number]);
    }
    return Tokenizer.#fromAlphabet(entries, model.merges, added, source);
  }

  /**
   * Builds a tokenizer from lists as GGUF metadata holds them (`tokenizer.ggml.tokens`,
   * `merges` and `token_type`). Every one of the 256 bytes needs its single-byte token.
   *
   * @param tokens `tokens[id]`: each token in GPT-2's byte-to-unicode alphabet; added tokens
   * as their text.
   * @param merges The merges by rank, as `"a b"` strings or `[a, b]` pairs.
   * @param tokenTypes One type per token (`tokenizer.ggml.token_type`): 3 (control) and 4
   * (user-defined) are added tokens, matched literally. Without types, names like `<|...|>`
   * that are not merge results are added tokens.
   * @param source Names the tokenizer in error messages and {@linkcode Tokenizer.source}.
   * @returns An exact tokenizer.
   * @throws {Qwen3Error} `format` naming the entry for a malformed token, merge or type
   * list (a missing byte token, a merge of unknown tokens, too many tokens); `unsupported`
   * for more than 2^21 merges.
   *
   * @example The lists of a tokenizer.json
   * ```ts
   * import { demoModelPath, Tokenizer } from "@q3/qwen3";
   *
   * const path = (await demoModelPath()).replace(/model\.bin$/, "tokenizer.json");
   * const json = JSON.parse(await Deno.readTextFile(path));
   * const tokens: string[] = [];
   * for (const [text, id] of Object.entries(json.model.vocab)) tokens[id as number] = text;
   * for (const added of json.added_tokens) tokens[added.id] = added.content;
   * const tok = Tokenizer.fromLists(tokens, json.model.merges);
   * console.log(tok.encode("Hello world")); // [39, 664, 78, 1170]
   * ```
   */
  static fromLists(
    tokens: readonly string[],
    merges: readonly (string | readonly [string, string])[],
    tokenTypes?: ArrayLike<number>,
    source = "token lists",
  ): Tokenizer {
    const entries: [string, number][] = [];
    const added: [string, number][] = [];
    for (let id = 0; id < tokens.length; id++) {
      const t = tokens[id];
      const type = tokenTypes?.[id];
      const isAdded = type !== undefined ? type === 3 || type === 4 : /^<\|.*\|>$/s.test(t);
      if (!isAdded) entries.push([t, id]);
      // Added tokens are written as their text, which needs no byte-level alphabet.
      else added.push([t, id]);
    }
    return Tokenizer.#fromAlphabet(entries, merges, added, source);
  }

  static #fromAlphabet(
    entries: [string, number][],
    merges: readonly unknown[],
    addedTokens: [string, number][],
    source: string,
  ): Tokenizer {
    let size = 0;
    for (const list of [entries, addedTokens]) {
      for (const [, id] of list) {
        // Tables are sized by the largest id: a hostile file must not ask for gigabytes.
        if (id >= MAX_TOKENS) {
          throw new Qwen3Error(
            "format",
            `${source}: token id ${id} exceeds the limit of ${MAX_TOKENS - 1}`,
          );
        }
        size = Math.max(size, id + 1);
      }
    }
    const names: (string | undefined)[] = new Array(size).fill(undefined);
    const vocab = new Map<string, number>();
    for (const [name, id] of entries) {
      names[id] = name;
      if (!vocab.has(name)) vocab.set(name, id);
    }
    const added = new Map<string, number>();
    for (const [content, id] of addedTokens) {
      names[id] = alphabetFromBytes(UTF8.encode(content));
      added.set(content, id);
    }
    if (merges.length > MAX_MERGES) {
      throw new Qwen3Error(
        "unsupported",
        `${source}: ${merges.length} merges is over the limit of ${MAX_MERGES}`,
      );
    }
    const pairs = new PairTable(merges.length);
    const mergeRank = new Int32Array(size).fill(-1);
    for (let rank = 0; rank < merges.length; rank++) {
      const m = merges[rank];
      let a: unknown, b: unknown;
      if (typeof m === "string") {
        const sp = m.indexOf(" ");
        if (sp > 0) [a, b] = [m.slice(0, sp), m.slice(sp + 1)];
      } else if (Array.isArray(m) && m.length === 2) {
        [a, b] = m;
      }
      if (typeof a !== "string" || typeof b !== "string") {
        throw new Qwen3Error(
          "format",
          `${source}: merges[${rank}] = ${quoteExcerpt(m)} is not a pair of tokens`,
        );
      }
      const left = vocab.get(a), right = vocab.get(b), result = vocab.get(a + b);
      if (left === undefined || right === undefined || result === undefined) {
        const which = left === undefined ? a : right === undefined ? b : a + b;
        throw new Qwen3Error(
          "format",
          `${source}: merges[${rank}] = ${quoteExcerpt(m)} uses ${
            quoteExcerpt(which)
          }, which is not in the vocabulary`,
        );
      }
      pairs.set(left, right, rank, result);
      mergeRank[result] = rank;
    }
    return new Tokenizer({ names, vocab, added, mergeRank, pairs, exact: true, source });
  }

  /**
   * Reads a qwen3.c `.tokenizer` side file (docs/tokenizer.md#the-tokenizer-side-file-rule). It holds no merge list, so one
   * is rebuilt: a token with score s was made by merge rank round(exp(-s) - 1); a pair (a, b)
   * merges when the bytes a+b form such a token, at that token's rank. Score -1e6 marks byte
   * tokens (one byte) and added tokens (longer). The rebuilt list has extra pairs Hugging
   * Face's lacks, so {@linkcode Tokenizer.exact} is false (for Qwen3 no text has been found
   * where they change the result; tests/tokenizer_test.ts measures it).
   *
   * @param bytes The file's contents.
   * @param source Names the tokenizer in error messages and {@linkcode Tokenizer.source}.
   * @returns A tokenizer whose {@linkcode Tokenizer.exact} is false.
   * @throws {Qwen3Error} `format` naming the offset when the file is truncated or malformed.
   *
   * @example From a qwen3.c side file
   * ```ts
   * import { demoModelPath, Tokenizer } from "@q3/qwen3";
   *
   * const path = (await demoModelPath()) + ".tokenizer";
   * const tok = Tokenizer.fromQwen3c(await Deno.readFile(path), path);
   * console.log(tok.exact, tok.encode("Hello world")); // false [39, 664, 78, 1170]
   * ```
   */
  static fromQwen3c(bytes: Uint8Array, source = "(.tokenizer bytes)"): Tokenizer {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.length < 12) {
      throw new Qwen3Error(
        "format",
        `${source}: ${bytes.length} bytes is too short for the 12-byte .tokenizer header`,
      );
    }
    const maxTokenLength = dv.getUint32(0, true);
    const names: (string | undefined)[] = [];
    const ranks: number[] = [];
    const vocab = new Map<string, number>();
    const added = new Map<string, number>();
    const text = new TextDecoder();
    for (let off = 12; off < bytes.length;) {
      const id = names.length;
      if (off + 8 > bytes.length) {
        throw new Qwen3Error(
          "format",
          `${source}: token ${id} at byte ${off}: the file ends inside its 8-byte record header`,
        );
      }
      const score = dv.getFloat32(off, true);
      const len = dv.getUint32(off + 4, true);
      if (len > maxTokenLength) {
        throw new Qwen3Error(
          "format",
          `${source}: token ${id} at byte ${off} has length ${len}, over the header's ` +
            `max_token_length ${maxTokenLength}`,
        );
      }
      if (off + 8 + len > bytes.length) {
        throw new Qwen3Error(
          "format",
          `${source}: token ${id} at byte ${off} (length ${len}) runs past the end of the file`,
        );
      }
      if (Number.isNaN(score) || score > 0) {
        throw new Qwen3Error("format", `${source}: token ${id} has score ${score}, not <= 0`);
      }
      const raw = bytes.subarray(off + 8, off + 8 + len);
      off += 8 + len;
      // -1e6 (written as f32) marks tokens no merge makes; merge scores are above -13.
      const noMerge = score <= -1e5;
      const rank = noMerge || len < 2 ? -1 : Math.round(Math.exp(-score) - 1);
      if (rank >= MAX_MERGES) {
        throw new Qwen3Error(
          "format",
          `${source}: token ${id} has score ${score}, merge rank ${rank} (limit ${MAX_MERGES})`,
        );
      }
      ranks.push(rank);
      if (len === 0) {
        names.push(undefined);
      } else if (noMerge && len > 1) {
        names.push(alphabetFromBytes(raw));
        added.set(text.decode(raw), id);
      } else {
        const name = alphabetFromBytes(raw);
        names.push(name);
        if (!vocab.has(name)) vocab.set(name, id);
      }
    }
    const size = names.length;
    const mergeRank = Int32Array.from(ranks);
    let candidates = 0;
    for (let id = 0; id < size; id++) if (mergeRank[id] >= 0) candidates += names[id]!.length - 1;
    const pairs = new PairTable(candidates);
    for (let id = 0; id < size; id++) {
      const rank = mergeRank[id];
      if (rank < 0) continue;
      const t = names[id]!;
      for (let k = 1; k < t.length; k++) {
        const a = vocab.get(t.slice(0, k));
        if (a === undefined) continue;
        const b = vocab.get(t.slice(k));
        if (b !== undefined) pairs.set(a, b, rank, id);
      }
    }
    return new Tokenizer({ names, vocab, added, mergeRank, pairs, exact: false, source });
  }

  /**
   * Finds and loads the tokenizer of a model. `modelPath` itself when it is a `.json` or
   * `.tokenizer` file; for a folder, its `tokenizer.json`; else the first of
   * `${modelPath}.tokenizer.json` (so two models can share a folder),
   * `tokenizer.json` in the model's folder and qwen3.c's `${modelPath}.tokenizer` that
   * exists, the order the C engine uses. Only a missing file passes on to the next: one
   * that exists but cannot be used (a FIFO, unreadable, a symlink loop, over the size limit,
   * malformed) is an error naming it.
   *
   * @param modelPath A model file, a folder, or a tokenizer file itself.
   * @returns The tokenizer; {@linkcode Tokenizer.source} says which file it came from.
   * @throws {Qwen3Error} `io` naming every path tried when none exists, or naming the file
   * that cannot be read (not a regular file, over the 64 MiB limit); `format` or
   * `unsupported` as {@linkcode Tokenizer.fromJson} and {@linkcode Tokenizer.fromQwen3c}.
   *
   * @example The tokenizer beside a model
   * ```ts
   * import { demoModelPath, Tokenizer } from "@q3/qwen3";
   *
   * const tok = await Tokenizer.load(await demoModelPath());
   * console.log(tok.source.endsWith("tokenizer.json"), tok.size); // true 4122
   * ```
   */
  static async load(modelPath: string): Promise<Tokenizer> {
    if (modelPath.endsWith(".json")) return (await Tokenizer.#fromFile(modelPath, "json"))!;
    if (modelPath.endsWith(".tokenizer")) {
      return (await Tokenizer.#fromFile(modelPath, "qwen3c"))!;
    }
    let isDir = false;
    try {
      isDir = (await Deno.stat(modelPath)).isDirectory;
    } catch {
      // a missing model file still names its side files below
    }
    const candidates: [string, "json" | "qwen3c"][] = isDir
      ? [[join(modelPath, "tokenizer.json"), "json"]]
      : [
        [`${modelPath}.tokenizer.json`, "json"],
        [join(dirname(modelPath), "tokenizer.json"), "json"],
        [`${modelPath}.tokenizer`, "qwen3c"],
      ];
    for (const [path, kind] of candidates) {
      const tok = await Tokenizer.#fromFile(path, kind, true);
      if (tok !== undefined) return tok;
    }
    const paths = candidates.map(([p]) => p);
    throw new Qwen3Error(
      "io",
      `no tokenizer for ${modelPath}: ${
        paths.length === 1 ? `${paths[0]} does not exist` : `none of ${paths.join(", ")} exists`
      } (copy the model's tokenizer.json beside it)`,
    );
  }

  /** A tokenizer file read within its size limit; undefined when optional and missing. */
  static async #fromFile(
    path: string,
    kind: "json" | "qwen3c",
    optional = false,
  ): Promise<Tokenizer | undefined> {
    const limit = kind === "json" ? TOKENIZER_JSON_LIMIT : QWEN3C_TOKENIZER_LIMIT;
    const bytes = await readSideFile(path, { limit, what: "tokenizer", optional });
    if (bytes === undefined) return undefined;
    return kind === "json"
      ? Tokenizer.fromJson(new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes), path)
      : Tokenizer.fromQwen3c(bytes, path);
  }

  // -------------------------------------------------------------------------------------------
  // Lookups

  /** Ids of `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<think>`, `</think>` (-1 if absent). */
  get specialIds(): SpecialIds {
    const id = (t: string) => this.tokenId(t) ?? -1;
    return {
      endOfText: id("<|endoftext|>"),
      imStart: id("<|im_start|>"),
      imEnd: id("<|im_end|>"),
      think: id("<think>"),
      endThink: id("</think>"),
    };
  }

  /**
   * Looks a token up by its text.
   *
   * @param text A token's exact text, e.g. "<|im_end|>" or "Hello".
   * @returns Its id, or undefined when no token has exactly that text.
   */
  tokenId(text: string): number | undefined {
    return this.#addedIds.get(text) ?? this.#vocab.get(alphabetFromBytes(UTF8.encode(text)));
  }

  /**
   * A token's raw bytes: a token may hold part of a UTF-8 character, so join them (or use
   * {@linkcode TextStreamDecoder}) before decoding.
   *
   * @param id A token id; ids past {@linkcode Tokenizer.size} (the model's padding rows)
   * give no bytes.
   * @returns A view of the bytes; do not modify it.
   * @throws {Qwen3Error} `invalid_argument` for a negative or fractional id.
   */
  tokenBytes(id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0) {
      throw new Qwen3Error("invalid_argument", `token id ${id} is not a non-negative integer`);
    }
    if (id >= this.size) return new Uint8Array(0);
    return this.#bytes.subarray(this.#offsets[id], this.#offsets[id + 1]);
  }

  /**
   * Tells added tokens (control tokens and the like), which BPE never produces, from the
   * others.
   *
   * @param id A token id.
   * @returns True for an added token.
   */
  isAdded(id: number): boolean {
    return this.#added[id] === 1;
  }

  /**
   * The rank of the merge that makes a token: lower ranks merge first.
   *
   * @param id A token id.
   * @returns The rank, or -1 for a token no merge makes (a byte, an added token, an id
   * outside the tokenizer).
   */
  mergeRank(id: number): number {
    return id >= 0 && id < this.size ? this.#mergeRank[id] : -1;
  }

  // -------------------------------------------------------------------------------------------
  // Encoding

  /**
   * Encodes text into token ids (no BOS/EOS added). With `special: true`, added-token text
   * such as `<|im_end|>` becomes its control id; by default it is tokenized as plain
   * characters.
   *
   * @param text The text.
   * @param opts `special` and `limit`.
   * @returns The token ids.
   * @throws {Qwen3Error} `context_full` when the text needs more than `limit` tokens, after
   * work bounded by the limit ({@linkcode EncodeOptions.limit}); `invalid_argument` for a
   * `limit` that is not a non-negative integer.
   *
   * @example Plain text, control tokens, and a token budget
   * ```ts
   * import { demoModelPath, Qwen3Error, Tokenizer } from "@q3/qwen3";
   *
   * const tok = await Tokenizer.load(await demoModelPath());
   * console.log(tok.encode("Hello world")); // [39, 664, 78, 1170]
   * console.log(tok.encode("<|im_end|>", { special: true })); // [4098]
   * try {
   *   tok.encode("a ".repeat(1000), { limit: 10 });
   * } catch (e) {
   *   if (!(e instanceof Qwen3Error)) throw e;
   *   console.log(e.code); // context_full
   * }
   * ```
   */
  encode(text: string, opts?: EncodeOptions): number[] {
    const out: number[] = [];
    const limit = checkLimit(opts?.limit);
    this.#refuseLonger(text.length, limit, opts?.special ?? false);
    if (opts?.special) this.#encodeWithAdded(text, out, limit);
    else this.#encodeText(text.normalize("NFC"), out, limit);
    return out;
  }

  /**
   * Encodes parts as if they were one concatenated string, with added-token text recognised
   * only inside `special` parts. Neighbouring plain text is encoded as one span, so a chat
   * prompt built from template parts and user text gets the same ids Hugging Face gives the
   * rendered template, except that user text can never become a control token.
   *
   * @param parts The prompt's pieces, in order.
   * @param opts `limit`: the most tokens, as in {@linkcode EncodeOptions.limit}.
   * @returns The token ids.
   * @throws {Qwen3Error} `context_full` when the parts need more than `limit` tokens;
   * `invalid_argument` for a bad `limit`.
   *
   * @example A chat turn: template text special, user text plain
   * ```ts
   * import { demoModelPath, Tokenizer } from "@q3/qwen3";
   *
   * const tok = await Tokenizer.load(await demoModelPath());
   * const ids = tok.encodeParts([
   *   { text: "<|im_start|>user\n", special: true },
   *   { text: "Hi <|im_end|>", special: false }, // stays text: 7 tokens, not 4098
   * ]);
   * console.log(ids[0], ids.includes(4098)); // 4097 false
   * ```
   */
  encodeParts(parts: readonly PromptPart[], opts?: { limit?: number }): number[] {
    const out: number[] = [];
    const limit = checkLimit(opts?.limit);
    let length = 0;
    for (const part of parts) length += part.text.length;
    this.#refuseLonger(length, limit, true);
    let pending = "";
    for (const part of parts) {
      if (!part.special || this.#addedPattern === undefined) {
        pending += part.text;
        continue;
      }
      const re = this.#addedPattern;
      re.lastIndex = 0;
      let last = 0;
      for (let m = re.exec(part.text); m !== null; m = re.exec(part.text)) {
        pending += part.text.slice(last, m.index);
        this.#encodeText(pending.normalize("NFC"), out, limit);
        pending = "";
        this.#pushAdded(m[0], out, limit);
        last = m.index + m[0].length;
      }
      pending += part.text.slice(last);
    }
    this.#encodeText(pending.normalize("NFC"), out, limit);
    return out;
  }

  /**
   * Refuses, before any work, a text too long to fit in `limit` tokens whatever it holds:
   * a token is at most #maxBpeBytes bytes (or one added token), every UTF-16 unit is at
   * least one UTF-8 byte, and NFC shortens UTF-8 at most threefold (Hangul jamo triples).
   */
  #refuseLonger(length: number, limit: number, special: boolean): void {
    const perToken = Math.max(4 * this.#maxBpeBytes, special ? this.#maxAddedLength : 0);
    if (length > perToken * limit) throw tooManyTokens(limit);
  }

  #pushAdded(text: string, out: number[], limit: number): void {
    out.push(this.#addedIds.get(text)!);
    if (out.length > limit) throw tooManyTokens(limit);
  }

  /** Hugging Face splits added tokens on the raw text and normalises only the spans between. */
  #encodeWithAdded(text: string, out: number[], limit: number): void {
    const re = this.#addedPattern;
    if (re === undefined) return this.#encodeText(text.normalize("NFC"), out, limit);
    re.lastIndex = 0;
    let last = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      if (m.index > last) {
        this.#encodeText(text.slice(last, m.index).normalize("NFC"), out, limit);
      }
      this.#pushAdded(m[0], out, limit);
      last = m.index + m[0].length;
    }
    if (last < text.length) this.#encodeText(text.slice(last).normalize("NFC"), out, limit);
  }

  /** Pre-tokenizes normalised text and appends each piece's BPE ids. */
  #encodeText(text: string, out: number[], limit: number): void {
    if (text.length === 0) return;
    const re = PRETOKENIZE;
    re.lastIndex = 0;
    let last = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      // The regex covers every character; a gap would still be its own piece (Isolated split).
      if (m.index > last) this.#encodePiece(text.slice(last, m.index), out, limit);
      this.#encodePiece(m[0], out, limit);
      last = m.index + m[0].length;
    }
    if (last < text.length) this.#encodePiece(text.slice(last), out, limit);
  }

  #encodePiece(piece: string, out: number[], limit: number): void {
    const cached = this.#cache.get(piece);
    if (cached !== undefined) {
      for (let i = 0; i < cached.length; i++) out.push(cached[i]);
      if (out.length > limit) throw tooManyTokens(limit);
      return;
    }
    // At least one token per #maxBpeBytes bytes: a piece that cannot fit is not merged.
    if (out.length + Math.ceil(piece.length / this.#maxBpeBytes) > limit) {
      throw tooManyTokens(limit);
    }
    const ids = this.#bpe(piece);
    if (piece.length <= CACHE_PIECE_LIMIT) {
      if (this.#cache.size >= CACHE_ENTRIES) this.#cache.clear();
      this.#cache.set(piece, ids);
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    if (out.length > limit) throw tooManyTokens(limit);
  }

  /** UTF-8 bytes of the piece as byte tokens, then merges by rank. */
  #bpe(piece: string): number[] {
    // A rare long piece gets its own buffer, so the tokenizer does not keep it afterwards.
    if (this.#scratch.length < piece.length * 3 && piece.length <= SCRATCH_KEPT) {
      this.#scratch = new Int32Array(piece.length * 3);
    }
    const sym = this.#scratch.length < piece.length * 3
      ? new Int32Array(piece.length * 3)
      : this.#scratch;
    const b2i = this.#byteToId;
    let n = 0;
    for (let i = 0; i < piece.length; i++) {
      let c = piece.charCodeAt(i);
      if (c < 0x80) {
        sym[n++] = b2i[c];
        continue;
      }
      if (c < 0x800) {
        sym[n++] = b2i[0xc0 | (c >> 6)];
        sym[n++] = b2i[0x80 | (c & 63)];
        continue;
      }
      if (c >= 0xd800 && c < 0xe000) {
        const d = i + 1 < piece.length ? piece.charCodeAt(i + 1) : 0;
        if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          sym[n++] = b2i[0xf0 | (c >> 18)];
          sym[n++] = b2i[0x80 | ((c >> 12) & 63)];
          sym[n++] = b2i[0x80 | ((c >> 6) & 63)];
          sym[n++] = b2i[0x80 | (c & 63)];
          continue;
        }
        c = 0xfffd; // a lone surrogate is not text; UTF-8 encoders write U+FFFD for it
      }
      sym[n++] = b2i[0xe0 | (c >> 12)];
      sym[n++] = b2i[0x80 | ((c >> 6) & 63)];
      sym[n++] = b2i[0x80 | (c & 63)];
    }
    return n < SCAN_LIMIT ? this.#mergeByScan(sym, n) : this.#mergeByHeap(sym, n);
  }

  /** Short pieces: find the lowest-ranked pair (leftmost on ties), merge it, repeat. */
  #mergeByScan(sym: Int32Array, n: number): number[] {
    const pairs = this.#pairs;
    const ranks = pairs.rank;
    while (n > 1) {
      let best = -1, bestRank = 0x7fffffff, bestSlot = -1;
      for (let i = 0; i + 1 < n; i++) {
        const s = pairs.find(sym[i], sym[i + 1]);
        if (s >= 0 && ranks[s] < bestRank) {
          bestRank = ranks[s];
          best = i;
          bestSlot = s;
        }
      }
      if (best < 0) break;
      sym[best] = pairs.result[bestSlot];
      sym.copyWithin(best + 1, best + 2, n);
      n--;
    }
    return Array.from(sym.subarray(0, n));
  }

  /**
   * Long pieces: a linked list of symbols and a min-heap of candidate merges keyed by
   * (rank, position), the order Hugging Face's BPE uses; stale entries are skipped on pop.
   */
  #mergeByHeap(sym: Int32Array, n: number): number[] {
    const pairs = this.#pairs;
    const id = sym.slice(0, n); // (n) token at each symbol start, -1 once merged away
    const next = new Int32Array(n); // (n) next live symbol, -1 at the end
    const prev = new Int32Array(n); // (n) previous live symbol, -1 at the start
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new Float64Array(3 * n); // (entries) rank * 2^32 + position
    let size = 0;
    const push = (pos: number) => {
      const s = pairs.find(id[pos], id[next[pos]]);
      if (s < 0) return;
      const key = pairs.rank[s] * TWO_32 + pos;
      let i = size++;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (heap[parent] <= key) break;
        heap[i] = heap[parent];
        i = parent;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0];
      const key = heap[--size];
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= size) break;
        if (c + 1 < size && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= key) break;
        heap[i] = heap[c];
        i = c;
      }
      heap[i] = key;
      return top;
    };
    for (let i = 0; i + 1 < n; i++) push(i);
    while (size > 0) {
      const key = pop();
      const rank = Math.floor(key / TWO_32);
      const pos = key - rank * TWO_32;
      const right = next[pos];
      if (id[pos] < 0 || right < 0) continue;
      const s = pairs.find(id[pos], id[right]);
      if (s < 0 || pairs.rank[s] !== rank) continue;
      id[pos] = pairs.result[s];
      id[right] = -1;
      const after = next[right];
      next[pos] = after;
      if (after >= 0) prev[after] = pos;
      if (prev[pos] >= 0) push(prev[pos]);
      if (after >= 0) push(pos);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(id[i]);
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Decoding

  /**
   * Decodes token ids into text: their bytes joined, then read as UTF-8.
   *
   * @param ids Token ids.
   * @returns The text; a bad or incomplete UTF-8 sequence becomes U+FFFD.
   * @throws {Qwen3Error} `invalid_argument` for a negative or fractional id.
   */
  decode(ids: ArrayLike<number>): string {
    let total = 0;
    for (let i = 0; i < ids.length; i++) total += this.tokenBytes(ids[i]).length;
    const buf = new Uint8Array(total);
    let at = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.tokenBytes(ids[i]);
      buf.set(b, at);
      at += b.length;
    }
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(buf);
  }
}

/**
 * Turns a stream of token bytes into text, holding back an incomplete UTF-8 sequence until
 * the token that completes it arrives (one emoji is often split over several tokens).
 *
 * @example An emoji split over two tokens
 * ```ts
 * import { TextStreamDecoder } from "@q3/qwen3";
 *
 * const d = new TextStreamDecoder();
 * console.log(JSON.stringify(d.push(new Uint8Array([0xf0, 0x9f])))); // ""
 * console.log(d.push(new Uint8Array([0x98, 0x80]))); // 😀
 * console.log(d.flush() === "", d.text); // true 😀
 * ```
 *
 * @example Decode tokens as they come
 * ```ts
 * import { demoModelPath, TextStreamDecoder, Tokenizer } from "@q3/qwen3";
 *
 * const tok = await Tokenizer.load(await demoModelPath());
 * const d = new TextStreamDecoder();
 * for (const id of tok.encode("café 😀")) d.push(tok.tokenBytes(id));
 * console.log(d.text + d.flush()); // café 😀
 * ```
 */
export class TextStreamDecoder {
  // ignoreBOM: a U+FEFF the model generates is text; the default would swallow it.
  #decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  #text = "";

  /**
   * Adds a token's bytes.
   *
   * @param bytes The next bytes of the stream.
   * @returns The text they complete (possibly "").
   */
  push(bytes: Uint8Array): string {
    const piece = this.#decoder.decode(bytes, { stream: true });
    this.#text += piece;
    return piece;
  }

  /**
   * Ends the stream; the decoder can then start a new one.
   *
   * @returns What was held back: "" after whole characters, U+FFFD for an incomplete one.
   */
  flush(): string {
    const piece = this.#decoder.decode();
    this.#text += piece;
    return piece;
  }

  /** All text decoded so far. */
  get text(): string {
    return this.#text;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** An encode limit: a non-negative integer, Infinity when absent. */
function checkLimit(limit: number | undefined): number {
  if (limit === undefined) return Infinity;
  if (!(limit === Infinity || (Number.isInteger(limit) && limit >= 0))) {
    throw new Qwen3Error("invalid_argument", `limit must be a non-negative integer, got ${limit}`);
  }
  return limit;
}

function tooManyTokens(limit: number): Qwen3Error {
  return new Qwen3Error("context_full", `the text needs more than ${limit} tokens (the limit)`);
}

function asRecord(v: unknown, source: string, field: string): Record<string, unknown> {
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw new Qwen3Error("format", `${source}: ${field} is not an object`);
  }
  return v as Record<string, unknown>;
}

/** Refuses normalizers and pre-tokenizers this implementation does not reproduce. */
function checkPipeline(doc: Record<string, unknown>, source: string): void {
  const norm = doc.normalizer as Record<string, unknown> | null | undefined;
  if (norm != null && norm.type !== "NFC") {
    throw new Qwen3Error(
      "unsupported",
      `${source}: normalizer ${quoteExcerpt(norm.type)} (only NFC is implemented)`,
    );
  }
  const pre = doc.pre_tokenizer as Record<string, unknown> | null | undefined;
  if (pre == null) return;
  const steps = pre.type === "Sequence" && Array.isArray(pre.pretokenizers)
    ? pre.pretokenizers as Record<string, unknown>[]
    : [pre];
  for (const step of steps) {
    if (step?.type === "ByteLevel") continue;
    const pattern = (step?.pattern as Record<string, unknown> | undefined)?.Regex;
    if (step?.type === "Split" && pattern === QWEN_SPLIT_PATTERN) continue;
    throw new Qwen3Error(
      "unsupported",
      `${source}: pre_tokenizer step ${quoteExcerpt(step?.type)} ${
        pattern === undefined ? "" : `with pattern ${quoteExcerpt(pattern)} `
      }is not Qwen's split regex`,
    );
  }
}
