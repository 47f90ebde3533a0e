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
