/**
 * The one error type the module throws, with a machine-readable code.
 * @module
 */

/**
 * What went wrong, mirroring the C engine's Qwen3Status codes, plus "library" (the native
 * library could not be used) and "disposed" (a model, chat, engine or session used after
 * it was disposed, or disposed while a generation on it was streaming).
 */
export type Qwen3ErrorCode =
  | "invalid_argument"
  | "io"
  | "format"
  | "out_of_memory"
  | "context_full"
  | "unsupported"
  | "library"
  | "disposed";

/** C status codes (qwen3_inference.h) by value. */
const BY_STATUS: Record<number, Qwen3ErrorCode> = {
  [-1]: "invalid_argument",
  [-2]: "io",
  [-3]: "format",
  [-4]: "out_of_memory",
  [-5]: "context_full",
  [-6]: "unsupported",
};

/** An error from loading or running a model; `message` names the file, field or limit. */
export class Qwen3Error extends Error {
  /** The kind of failure. */
  readonly code: Qwen3ErrorCode;

  /** Creates an error of the given kind. */
  constructor(code: Qwen3ErrorCode, message: string) {
    super(message);
    this.name = "Qwen3Error";
    this.code = code;
  }

  /** Maps a negative C status and its last-error text to a Qwen3Error. */
  static fromStatus(status: number, message: string): Qwen3Error {
    return new Qwen3Error(BY_STATUS[status] ?? "library", message || `C engine status ${status}`);
  }
}

/** Control characters (C0, DEL, C1) and the line/paragraph separators. */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/**
 * Makes text from outside (a file's contents, a parser's message about them) safe to put
 * in an error message: control characters escaped as `\uXXXX`, at most `max` characters,
 * "..." when cut. A hostile file can then neither flood a message nor write terminal
 * escape sequences or fake lines into a user's console or log.
 *
 * @example
 * ```ts
 * import { escapeForMessage } from "./errors.ts";
 * console.log(escapeForMessage("bad\u001b[2J\nline")); // bad\u001b[2J\u000aline
 * ```
 */
export function escapeForMessage(text: string, max = 200): string {
  const cut = text.length > max;
  const head = cut ? text.slice(0, max) : text;
  const safe = head.replace(
    CONTROL,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return cut ? `${safe}...` : safe;
}

/**
 * Quotes a value read from a file for an error message: JSON notation (strings in
 * quotes), control characters escaped, at most `max` characters of it ("..." when cut).
 * Error messages name paths, fields and limits, and quote file contents only this way.
 *
 * @example
 * ```ts
 * import { quoteExcerpt } from "./errors.ts";
 * console.log(quoteExcerpt("Ġa\nb")); // "Ġa\nb"
 * console.log(quoteExcerpt("x".repeat(100), 8)); // "xxxxxxxx..."
 * ```
 */
export function quoteExcerpt(value: unknown, max = 48): string {
  let text: string;
  if (typeof value === "string") {
    text = value.length > max ? value.slice(0, max) : value;
    // JSON escapes take at most 6 characters per character: no second cut.
    return escapeForMessage(JSON.stringify(text), 6 * max + 2) + (value.length > max ? "..." : "");
  }
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return escapeForMessage(text, max);
}

/**
 * Shows bytes read from a file (a GGUF key or tensor name, a metadata string) exactly as the
 * C engine does (csrc/src/gguf.c `quote`), so both engines print the same message for the
 * same file: printable ASCII other than the backslash as is, every other byte (control
 * characters, the backslash, each byte of a UTF-8 sequence, invalid ones included) as
 * `\xNN`, at most `max` bytes, then "..." when cut. A string is shown as its UTF-8 bytes.
 *
 * @example
 * ```ts
 * import { quoteBytes } from "./errors.ts";
 * console.log(quoteBytes("blk.0\u001b[2J\né")); // blk.0\x1B[2J\x0A\xC3\xA9
 * console.log(quoteBytes(new Uint8Array([0x61, 0xff]))); // a\xFF
 * ```
 */
export function quoteBytes(value: Uint8Array | string, max = 80): string {
  // A string's first max + 1 code units give at least max + 1 bytes when it is longer than
  // max, and the bytes shown (the first max) are exact.
  const bytes = typeof value === "string" ? UTF8.encode(value.slice(0, max + 1)) : value;
  let out = "";
  const n = Math.min(bytes.length, max);
  for (let i = 0; i < n; i++) {
    const b = bytes[i];
    out += b >= 0x20 && b < 0x7f && b !== 0x5c
      ? String.fromCharCode(b)
      : `\\x${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return bytes.length > max ? `${out}...` : out;
}

const UTF8 = new TextEncoder();
