// Every error leaves as application/problem+json with a code from the closed list,
// including Fastify's own (bad JSON, wrong content type, body too large, unknown
// route) and database outages (503, so clients retry instead of giving up).
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ZodError } from "zod";
import { AppError, type ErrorCode, type FieldError } from "../../domain/errors.ts";
import { problem, SERVICE_UNAVAILABLE_RETRY_AFTER_S, type Problem } from "../problem.ts";
import { databaseUnavailableReason, isDatabaseUnavailable } from "../../db/errors.ts";

export function zodIssues(err: ZodError): FieldError[] {
  return err.issues.map((i) => ({
    path: i.path.map(String).join(".") || "(body)",
    message: i.code === "unrecognized_keys" ? `unknown field(s): ${i.keys.join(", ")}` : i.message,
  }));
}

function classify(err: FastifyError | Error): { code: ErrorCode; status?: number; detail: string; errors?: FieldError[] } {
  if (err instanceof AppError) return { code: err.code, status: err.status, detail: err.message, ...(err.errors ? { errors: err.errors } : {}) };
  if (err instanceof ZodError) return { code: "invalid_request", detail: "the request is not valid", errors: zodIssues(err) };
  const fe = err as FastifyError;
  switch (fe.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return { code: "payload_too_large", detail: "the request body is larger than the limit" };
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return fe.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE"
        ? { code: "unsupported_media_type", detail: "send the body as application/json" }
        : { code: "invalid_request", status: 400, detail: "the Content-Length does not match the body" };
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return { code: "invalid_request", status: 400, detail: "the JSON body is empty" };
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return { code: "invalid_request", status: 400, detail: "the body is not valid JSON" };
  }
  if (fe.statusCode === 400 && (err instanceof SyntaxError || /JSON|prototype|constructor/i.test(fe.message)))
    return { code: "invalid_request", status: 400, detail: "the body is not valid JSON (or uses __proto__/constructor keys)" };
  if (fe.statusCode === 413) return { code: "payload_too_large", detail: "the request body is larger than the limit" };
  if (fe.statusCode === 415) return { code: "unsupported_media_type", detail: "send the body as application/json" };
  if (fe.statusCode === 429) return { code: "rate_limited", detail: "too many requests" };
  if (fe.statusCode === 404) return { code: "not_found", detail: "not found" };
  if (fe.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500)
    return { code: "invalid_request", status: fe.statusCode, detail: fe.message };
  if (isDatabaseUnavailable(err)) return { code: "service_unavailable", detail: "the database is unavailable; retry later" };
  return { code: "internal", detail: "an internal error occurred" };
}

/** The problem document for any error, as the API would answer it. */
export function problemFor(err: Error, requestId: string): Problem {
  const c = classify(err);
  return problem(c.code, c.detail, requestId, { ...(c.status ? { status: c.status } : {}), ...(c.errors ? { errors: c.errors } : {}) });
}

export function sendProblem(reply: FastifyReply, request: FastifyRequest, err: Error): FastifyReply {
  const body = problemFor(err, request.id);
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
