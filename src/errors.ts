/**
 * The one error type the module throws, with a machine-readable code.
 * @module
 */

/** What went wrong, mirroring the C engine's Qwen3Status codes. */
export type Qwen3ErrorCode =
  | "invalid_argument"
  | "io"
  | "format"
  | "out_of_memory"
  | "context_full"
  | "unsupported"
  | "library";

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
