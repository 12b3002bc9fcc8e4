// RFC 9457 problem details: the one error envelope of the API.
import { ERROR_CODES, type ErrorCode, type FieldError } from "../domain/errors.ts";
import type { ProblemView } from "./schemas.ts";

/** A problem document: the Problem schema of openapi.yaml. */
export type Problem = ProblemView;

const PROBLEM_TYPE_BASE = "https://sealpost.dev/problems/";

/**
 * Retry-After (RFC 9110 section 10.2.3) of every 503 service_unavailable, in seconds.
 * Short: a failover, a restart or a lock held past the statement timeout lasts seconds,
 * and a request that meets the outage again costs at most about the statement timeout.
 */
export const SERVICE_UNAVAILABLE_RETRY_AFTER_S = 2;

export function problem(code: ErrorCode, detail: string, requestId: string, extra: { status?: number; errors?: FieldError[] } = {}): Problem {
  const p: Problem = {
    type: PROBLEM_TYPE_BASE + code.replace(/_/g, "-"),
    title: ERROR_CODES[code].title,
    status: extra.status ?? ERROR_CODES[code].status,
    detail,
    code,
    request_id: requestId,
  };
  if (extra.errors && extra.errors.length > 0) p.errors = extra.errors;
  return p;
}
