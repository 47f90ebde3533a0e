/**
 * The one error type the module throws, with a machine-readable code.
 * @module
 */

/**
 * What went wrong: one of the C engine's statuses (see {@linkcode C_STATUSES}), or
 * "library" (the native library could not be used) or "disposed" (a model, chat, engine or
 * session used after it was disposed, or disposed while a generation on it was streaming).
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

/** One status of the C API (`Qwen3Status` in csrc/include/qwen3_inference.h). */
export interface CStatus {
  /** The enum constant's name in the header, e.g. `QWEN3_ERR_IO`. */
  readonly name: string;
  /** Its value: 0 for success, negative for a failure. */
  readonly value: number;
  /** The {@linkcode Qwen3Error} code a failure becomes; undefined for success. */
  readonly code: Qwen3ErrorCode | undefined;
  /** When the C API returns it. */
  readonly meaning: string;
}

/**
 * Every status of the C API, the one table the TypeScript side has of them: ffi/ compares
 * statuses with {@linkcode STATUS} and turns failures into errors with
 * {@linkcode Qwen3Error.fromStatus}; tests/errors_test.ts holds it to the header's enum.
 */
export const C_STATUSES: readonly CStatus[] = [
  { name: "QWEN3_OK", value: 0, code: undefined, meaning: "success" },
  {
    name: "QWEN3_ERR_INVALID_ARGUMENT",
    value: -1,
    code: "invalid_argument",
    meaning: "a NULL pointer, an out-of-range value or a bad token id",
  },
  {
    name: "QWEN3_ERR_IO",
    value: -2,
    code: "io",
    meaning: "a file could not be opened, read or mapped",
  },
  {
    name: "QWEN3_ERR_FORMAT",
    value: -3,
    code: "format",
    meaning: "a file is corrupt, truncated or not a Qwen3 model",
  },
  {
    name: "QWEN3_ERR_OUT_OF_MEMORY",
    value: -4,
    code: "out_of_memory",
    meaning: "an allocation failed",
  },
  {
    name: "QWEN3_ERR_CONTEXT_FULL",
    value: -5,
    code: "context_full",
    meaning: "the tokens do not fit in the context's length",
  },
  {
    name: "QWEN3_ERR_UNSUPPORTED",
    value: -6,
    code: "unsupported",
    meaning: "valid input this build cannot run (tensor type, CPU)",
  },
];

/** A status's value by its name without the `QWEN3_` / `QWEN3_ERR_` prefix. */
function statusValue(name: string): number {
  return C_STATUSES.find((s) => s.name === `QWEN3_${name}` || s.name === `QWEN3_ERR_${name}`)!
    .value;
}

/**
 * The C statuses by short name (`STATUS.IO` is `QWEN3_ERR_IO`, -2), from
 * {@linkcode C_STATUSES}, for code that compares a status it got.
 */
export const STATUS: {
  readonly OK: number;
  readonly INVALID_ARGUMENT: number;
  readonly IO: number;
  readonly FORMAT: number;
  readonly OUT_OF_MEMORY: number;
  readonly CONTEXT_FULL: number;
  readonly UNSUPPORTED: number;
} = {
  OK: statusValue("OK"),
  INVALID_ARGUMENT: statusValue("INVALID_ARGUMENT"),
  IO: statusValue("IO"),
  FORMAT: statusValue("FORMAT"),
  OUT_OF_MEMORY: statusValue("OUT_OF_MEMORY"),
  CONTEXT_FULL: statusValue("CONTEXT_FULL"),
  UNSUPPORTED: statusValue("UNSUPPORTED"),
};

/**
 * An error from loading or running a model; `message` names the file, field or limit.
 *
 * @example Telling failures apart by code
 * ```ts
 * import { Qwen3, Qwen3Error } from "@q3/qwen3";
 * try {
 *   await Qwen3.load("no/such/model.bin", { engine: "ts" });
 * } catch (e) {
 *   if (!(e instanceof Qwen3Error)) throw e;
 *   console.log(e.code); // "io"
 * }
 * ```
 */
export class Qwen3Error extends Error {
  /** The kind of failure. */
  readonly code: Qwen3ErrorCode;

  /**
   * Creates an error of the given kind.
   *
   * @param code The kind of failure.
   * @param message What failed, naming the file, field or limit.
   */
  constructor(code: Qwen3ErrorCode, message: string) {
    super(message);
    this.name = "Qwen3Error";
    this.code = code;
  }

  /**
   * The error for a failed C call.
   *
   * @param status The negative status it returned.
   * @param message Its last-error text (default: "C engine status N").
   * @returns The error with the status's code from {@linkcode C_STATUSES}, or "library" for
   * a status the table does not know.
   *
   * @example Mapping a status
   * ```ts
   * import { Qwen3Error } from "@q3/qwen3";
   * console.log(Qwen3Error.fromStatus(-3, "m.bin: truncated").code); // "format"
   * ```
   */
  static fromStatus(status: number, message: string): Qwen3Error {
    const code = status < 0 ? C_STATUSES.find((s) => s.value === status)?.code : undefined;
    return new Qwen3Error(code ?? "library", message || `C engine status ${status}`);
  }
}

/** Control characters (C0, DEL, C1) and the line/paragraph separators. */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/**
 * Makes text from outside (a file's contents, a parser's message about them) safe to put
 * in an error message: control characters escaped as `\uXXXX`, at most `max` characters,
 * "..." when cut. A hostile file can then neither flood a message nor write terminal
 * escape sequences or fake lines into a user's console or log: `"bad\u001b[2J\nline"`
 * becomes `bad\u001b[2J\u000aline`.
 *
 * @param text The text from outside.
 * @param max Most characters kept (default 200).
 * @returns The text, safe for a message.
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
 * Error messages name paths, fields and limits, and quote file contents only this way:
 * `"Ġa\nb"` is shown as `"Ġa\nb"` (quoted, the newline escaped), and 100 x's with `max` 8 as
 * `"xxxxxxxx"...`.
 *
 * @param value A string or any JSON value read from a file.
 * @param max Most characters of it kept (default 48).
 * @returns The quoted excerpt.
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
 * C engine does (csrc/src/gguf.c `qwen3_gguf_quote`), so both engines print the same message for the
 * same file: printable ASCII other than the backslash as is, every other byte (control
 * characters, the backslash, each byte of a UTF-8 sequence, invalid ones included) as
 * `\xNN`, at most `max` bytes, then "..." when cut. A string is shown as its UTF-8 bytes:
 * `"blk.0\u001b[2J\né"` as `blk.0\x1B[2J\x0A\xC3\xA9`, the bytes `61 FF` as `a\xFF`.
 *
 * @param value The bytes, or a string (shown as its UTF-8 bytes).
 * @param max Most bytes shown (default 80, as the C engine).
 * @returns The bytes, fit for a message.
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
