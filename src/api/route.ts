// A route is described once: method, path, scope and zod schemas. The same object
// registers the Fastify handler and produces its part of openapi.yaml, so the
// contract cannot drift from what the code accepts or from what it answers: inputs are
// parsed with their schemas, and every 2xx body is checked against the response schema
// of its status before it is sent (see checkResponse).
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { z } from "zod";
import { AppError, summarizeFieldErrors } from "../domain/errors.ts";
import { fieldErrors, jsonPath } from "./field-errors.ts";
import type { Scope } from "../services/api-keys.ts";
import type { AppDeps } from "./deps.ts";

/** One documented 2xx answer: a JSON body described by `schema`. */
interface ResponseSpec {
  description: string;
  schema: z.ZodType;
}

/** The 2xx answers of a route by status; errors are listed apart (`errors`), as problem+json. */
export type Responses = Record<number, ResponseSpec>;

/** What a handler may return: the body of one of its documented answers. */
type ResponseBody<R extends Responses> = { [S in keyof R]: R[S] extends ResponseSpec ? z.output<R[S]["schema"]> : never }[keyof R];

export interface RouteSpec<
  B extends z.ZodType | undefined,
  Q extends z.ZodType | undefined,
  P extends z.ZodType | undefined,
  R extends Responses = Responses,
> {
  operationId: string;
  method: "GET" | "POST" | "PATCH" | "DELETE";
  url: string; // Fastify syntax, e.g. /messages/:id
  summary: string;
  description?: string;
  scope: Scope | null;
  tags: string[];
  body?: B;
  query?: Q;
  params?: P;
  headers?: Array<{ name: string; description: string; required?: boolean; schema: z.ZodType }>;
  responses: R;
  errors: number[]; // problem+json statuses this route can answer
  /** What an error status means for this route, where it says more than the shared text. */
  errorDescriptions?: Partial<Record<number, string>>;
  /**
   * Returns the body; the status is the route's only documented one, or what the handler
   * set with `reply.code()`. registerRoute checks the body against that status's schema.
   */
  handler: (
    input: {
      body: B extends z.ZodType ? z.infer<B> : undefined;
      query: Q extends z.ZodType ? z.infer<Q> : undefined;
      params: P extends z.ZodType ? z.infer<P> : undefined;
      request: FastifyRequest;
      reply: FastifyReply;
    },
    deps: AppDeps,
  ) => Promise<NoInfer<ResponseBody<R>>>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyRoute = RouteSpec<any, any, any, any>;

export function defineRoute<
  B extends z.ZodType | undefined = undefined,
  Q extends z.ZodType | undefined = undefined,
  P extends z.ZodType | undefined = undefined,
  R extends Responses = Responses,
>(spec: RouteSpec<B, Q, P, R>): RouteSpec<B, Q, P, R> {
  return spec;
}

/** The parsed input, or the AppError (422 with field errors) the route answers for it. */
export function parseInput<T extends z.ZodType>(schema: T | undefined, value: unknown, where: string): unknown {
  if (!schema) return undefined;
  const r = schema.safeParse(value, { reportInput: true });
  if (!r.success) {
    const errors = fieldErrors(r.error, schema).map((e) => ({ ...e, path: where === "body" ? e.path : `${where}.${e.path}` }));
    throw new AppError("invalid_request", summarizeFieldErrors(errors, `the request ${where} is not valid`), { errors });
  }
  return r.data;
}

/** Where a body breaks its schema: a JSON path and zod's sentence, which names the expected type or values, never the value found. */
export interface ContractIssue {
  path: string;
  message: string;
}

/** At most this many issues are logged for one body. */
const MAX_CONTRACT_ISSUES = 10;

/** The issues of a failed parse, with the branches of a union that matched no alternative spelled out. */
function contractIssues(issues: readonly z.core.$ZodIssue[], base: PropertyKey[] = [], out: ContractIssue[] = []): ContractIssue[] {
  for (const issue of issues) {
    if (out.length >= MAX_CONTRACT_ISSUES) break;
    const path = [...base, ...issue.path];
    if (issue.code === "invalid_union" && issue.errors.length > 0) {
      issue.errors.forEach((branch) => contractIssues(branch, path, out));
    } else if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys.slice(0, MAX_CONTRACT_ISSUES - out.length)) out.push({ path: jsonPath([...path, key]), message: "is not a field of this response in the contract" });
    } else {
      out.push({ path: jsonPath(path) || "(the body)", message: issue.message });
    }
  }
  return out;
}

/**
 * A handler answered something its route does not document: a body that does not match
 * the response schema of its status, or a status with no schema. The client gets a 500
 * `internal` (a broken promise of the contract is a server bug, not the client's); the
 * log says which route and which paths, never the body, which may hold message content.
 */
export class ResponseContractError extends Error {
  override name = "ResponseContractError";
  readonly operationId: string;
  readonly status: number;
  readonly issues: ContractIssue[];

  constructor(route: AnyRoute, status: number, issues: ContractIssue[]) {
    const where = issues.map((i) => `${i.path}: ${i.message}`).join("; ");
    super(`the ${status} answer of ${route.operationId} (${route.method} ${route.url}) does not match its response schema: ${where}`);
    this.operationId = route.operationId;
    this.status = status;
    this.issues = issues;
  }
}

/**
 * The body to send for `status`, parsed with the route's schema for that status, or a
 * ResponseContractError. Response schemas are strict objects (a unit test holds every
 * route to it), so a missing field, a wrong type, a value outside an enum and a field
 * the contract does not name are all refused: nothing is coerced or silently dropped.
 * The parse is zod's compiled object check: about half a microsecond for a 202 of
 * POST /send, against the better part of a millisecond of CPU for the request.
 */
export function checkResponse(route: AnyRoute, status: number, body: unknown): unknown {
  const spec = (route.responses as Responses)[status];
  if (!spec) throw new ResponseContractError(route, status, [{ path: "(the status)", message: `${status} is not a documented answer of this route` }]);
  const r = spec.schema.safeParse(body);
  if (r.success) return r.data;
  throw new ResponseContractError(route, status, contractIssues(r.error.issues));
}

export function registerRoute(app: FastifyInstance, route: AnyRoute, deps: AppDeps): void {
  const statuses = Object.keys(route.responses).map(Number);
  // A route documenting one answer gets its status without saying it again in the handler.
  const status = statuses.length === 1 ? statuses[0]! : 200;
  app.route({
    method: route.method,
    url: route.url,
    config: { scope: route.scope },
    handler: async (request, reply) => {
      const params = parseInput(route.params, request.params, "params");
      const query = parseInput(route.query, request.query, "query");
      const body = parseInput(route.body, request.body, "body");
      reply.code(status);
      const answer = await route.handler({ body, query, params, request, reply } as never, deps);
      try {
        return checkResponse(route, reply.statusCode, answer);
      } catch (err) {
        if (err instanceof ResponseContractError)
          request.log.error(
            { operationId: err.operationId, route: `${route.method} ${route.url}`, status: err.status, issues: err.issues },
            "response does not match its schema",
          );
        throw err;
      }
    },
  });
}
