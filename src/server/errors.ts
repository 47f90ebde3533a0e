/**
 * The server's errors in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`,
 * each with its HTTP status.
 * @module
 */

/** OpenAI's error `type` for each status the server answers with. */
const TYPES: Readonly<Record<number, string>> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "not_found_error",
  405: "invalid_request_error",
  413: "invalid_request_error",
  500: "server_error",
  503: "unavailable_error",
};

/** An error a handler answers with instead of a result. */
export class ApiError extends Error {
  /** The HTTP status. */
  readonly status: number;
  /** OpenAI's machine-readable `code`, e.g. "invalid_value". */
  readonly code: string;
  /** The request field at fault (`messages[1].role`), when one is. */
  readonly param: string | null;
  /** Extra response headers (`Retry-After` for 503). */
  readonly headers: Record<string, string>;

  /**
   * Makes the error.
   *
   * @param status The HTTP status.
   * @param code OpenAI's `code`.
   * @param message What is wrong, naming the field or limit.
   * @param opts The field at fault and extra headers.
   */
  constructor(
    status: number,
    code: string,
    message: string,
    opts: { param?: string; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = opts.param ?? null;
    this.headers = opts.headers ?? {};
  }
}

/** A 400 naming the request field at fault. */
export function badField(param: string, message: string): ApiError {
  return new ApiError(400, "invalid_value", `${param}: ${message}`, { param });
}

/** The JSON body of an error, as OpenAI writes it. */
export function errorBody(e: ApiError): { error: Record<string, unknown> } {
  return {
    error: {
      message: e.message,
      type: TYPES[e.status] ?? "invalid_request_error",
      code: e.code,
      param: e.param,
    },
  };
}

/** The response for an error; anything but an ApiError is a 500 that shows its message. */
export function errorResponse(e: unknown): Response {
  const api = e instanceof ApiError
    ? e
    : new ApiError(500, "internal_error", e instanceof Error ? e.message : String(e));
  return new Response(JSON.stringify(errorBody(api)), {
    status: api.status,
    headers: { "content-type": "application/json", ...api.headers },
  });
}
