// One error type for the whole service, with a closed list of codes. The HTTP
// status and title for each code live in one table.

export const ERROR_CODES = {
  invalid_request: { status: 422, title: "Invalid request" },
  unauthorized: { status: 401, title: "Unauthorized" },
  forbidden: { status: 403, title: "Forbidden" },
  not_found: { status: 404, title: "Not found" },
  conflict: { status: 409, title: "Conflict" },
  idempotency_conflict: { status: 409, title: "Idempotency key reused" },
  payload_too_large: { status: 413, title: "Payload too large" },
  unsupported_media_type: { status: 415, title: "Unsupported media type" },
  rate_limited: { status: 429, title: "Too many requests" },
  service_unavailable: { status: 503, title: "Service unavailable" },
  internal: { status: 500, title: "Internal error" },
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
