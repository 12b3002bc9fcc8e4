// Every error leaves as application/problem+json with a code from the closed list,
// including Fastify's own (bad JSON, wrong content type, body too large, unknown
// route) and database outages (503, so clients retry instead of giving up).
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ZodError } from "zod";
import { AppError, summarizeFieldErrors, type ErrorCode, type FieldError } from "../../domain/errors.ts";
import { formatBytes } from "../../domain/message.ts";
import { fieldErrors } from "../field-errors.ts";
import { problem, SERVICE_UNAVAILABLE_RETRY_AFTER_S, type Problem } from "../problem.ts";
import { databaseUnavailableReason, isDatabaseUnavailable } from "../../db/errors.ts";

/** What the request said about itself, for the wording of Fastify's own errors. */
export interface RequestFacts {
  bodyLimit?: number | undefined;
  contentType?: string | undefined;
}

function tooLarge(facts: RequestFacts): string {
  if (!facts.bodyLimit) return "the request body is larger than the server's limit";
  return (
    `the request body is larger than the limit of ${formatBytes(facts.bodyLimit)}; ` +
    "attachments count with their base64 encoding, a third larger than the files"
  );
}

function unsupportedMediaType(facts: RequestFacts): string {
  const given = facts.contentType?.split(";")[0]?.trim().slice(0, 100);
  return given
    ? `the body must be JSON sent with Content-Type: application/json, not ${given}`
    : "the body must be JSON sent with Content-Type: application/json; the request has no Content-Type";
}

function classify(err: FastifyError | Error, facts: RequestFacts): { code: ErrorCode; status?: number; detail: string; errors?: FieldError[] } {
  if (err instanceof AppError) return { code: err.code, status: err.status, detail: err.message, ...(err.errors ? { errors: err.errors } : {}) };
  if (err instanceof ZodError) {
    const errors = fieldErrors(err);
    return { code: "invalid_request", detail: summarizeFieldErrors(errors), errors };
  }
  const fe = err as FastifyError;
  switch (fe.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return { code: "payload_too_large", detail: tooLarge(facts) };
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return { code: "unsupported_media_type", detail: unsupportedMediaType(facts) };
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return { code: "invalid_request", status: 400, detail: "the Content-Length header does not match the length of the body" };
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return { code: "invalid_request", status: 400, detail: "the body is empty; send the request as a JSON object" };
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return { code: "invalid_request", status: 400, detail: "the body is not valid JSON" };
  }
  if (fe.statusCode === 400 && (err instanceof SyntaxError || /JSON|prototype|constructor/i.test(fe.message)))
    return { code: "invalid_request", status: 400, detail: "the body is not valid JSON (or uses __proto__/constructor keys)" };
  if (fe.statusCode === 413) return { code: "payload_too_large", detail: tooLarge(facts) };
  if (fe.statusCode === 415) return { code: "unsupported_media_type", detail: unsupportedMediaType(facts) };
  if (fe.statusCode === 429) return { code: "rate_limited", detail: "too many requests" };
  if (fe.statusCode === 404) return { code: "not_found", detail: "not found" };
  if (fe.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500)
    return { code: "invalid_request", status: fe.statusCode, detail: fe.message };
  if (isDatabaseUnavailable(err)) return { code: "service_unavailable", detail: "the database is unavailable; retry later" };
  return { code: "internal", detail: "an internal error occurred" };
}

/** The problem document for any error, as the API would answer it. */
export function problemFor(err: Error, requestId: string, facts: RequestFacts = {}): Problem {
  const c = classify(err, facts);
  return problem(c.code, c.detail, requestId, { ...(c.status ? { status: c.status } : {}), ...(c.errors ? { errors: c.errors } : {}) });
}

function sendProblem(reply: FastifyReply, request: FastifyRequest, err: Error): FastifyReply {
  const body = problemFor(err, request.id, {
    bodyLimit: request.routeOptions?.bodyLimit,
    contentType: typeof request.headers["content-type"] === "string" ? request.headers["content-type"] : undefined,
  });
  if (err instanceof AppError && err.headers) reply.headers(err.headers);
  if (body.status === 401) reply.header("www-authenticate", 'Bearer realm="sealpost"');
  if (body.status === 503) reply.header("retry-after", String(SERVICE_UNAVAILABLE_RETRY_AFTER_S));
  if (body.status >= 500) {
    const db = databaseUnavailableReason(err); // the SQLSTATE or driver condition that made it a 503
    request.log.error({ err: { type: err.name, message: err.message, code: (err as FastifyError).code }, ...(db ? { db } : {}) }, "request failed");
  }
  return reply.code(body.status).type("application/problem+json; charset=utf-8").send(body);
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => sendProblem(reply, request, err));
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, request, new AppError("not_found", `no route for ${request.method} ${request.url.split("?")[0]}`)),
  );
}
