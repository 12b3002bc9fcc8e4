// One error type for the whole service, with a closed list of codes. The HTTP
// status for each code lives in one table; whether a caller may retry is data,
// not something inferred from a message string.

export const ERROR_CODES = {
  invalid_request: { status: 422, title: "Invalid request", retryable: false },
  unauthorized: { status: 401, title: "Unauthorized", retryable: false },
  forbidden: { status: 403, title: "Forbidden", retryable: false },
  not_found: { status: 404, title: "Not found", retryable: false },
  conflict: { status: 409, title: "Conflict", retryable: false },
  idempotency_conflict: { status: 409, title: "Idempotency key reused", retryable: false },
  payload_too_large: { status: 413, title: "Payload too large", retryable: false },
  unsupported_media_type: { status: 415, title: "Unsupported media type", retryable: false },
  rate_limited: { status: 429, title: "Too many requests", retryable: true },
  service_unavailable: { status: 503, title: "Service unavailable", retryable: true },
  internal: { status: 500, title: "Internal error", retryable: true },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface FieldError {
  path: string;
  message: string;
}

export class AppError extends Error {
  override name = "AppError";
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  readonly errors?: FieldError[];
  readonly headers?: Record<string, string>;

  constructor(
    code: ErrorCode,
    detail: string,
    opts: { errors?: FieldError[]; headers?: Record<string, string>; cause?: unknown; status?: number } = {},
  ) {
    super(detail, { cause: opts.cause });
    this.code = code;
    this.status = opts.status ?? ERROR_CODES[code].status;
    this.retryable = ERROR_CODES[code].retryable;
    if (opts.errors) this.errors = opts.errors;
    if (opts.headers) this.headers = opts.headers;
  }
}

/**
 * A problem's detail from its field errors: the first two as "path: message", then how
 * many more the errors list holds.
 */
export function summarizeFieldErrors(errors: readonly FieldError[], fallback = "the request is not valid"): string {
  if (errors.length === 0) return fallback;
  const shown = errors.slice(0, 2).map((e) => `${e.path}: ${e.message}`);
  const more = errors.length - shown.length;
  return shown.join(". ") + (more > 0 ? `. ${more} more ${more === 1 ? "problem is" : "problems are"} listed in errors` : "");
}
