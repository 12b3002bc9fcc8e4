// A route is described once: method, path, scope and zod schemas. The same object
// registers the Fastify handler and produces its part of openapi.yaml, so the
// contract cannot drift from what the code accepts.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { z } from "zod";
import { AppError, summarizeFieldErrors } from "../domain/errors.ts";
import { fieldErrors } from "./field-errors.ts";
import type { Scope } from "../services/api-keys.ts";
import type { AppDeps } from "./deps.ts";

export interface RouteSpec<B extends z.ZodType | undefined, Q extends z.ZodType | undefined, P extends z.ZodType | undefined> {
  operationId: string;
  method: "GET" | "POST";
  url: string; // Fastify syntax, e.g. /messages/:id
  summary: string;
  description?: string;
  scope: Scope | null;
  tags: string[];
  body?: B;
  query?: Q;
  params?: P;
  headers?: Array<{ name: string; description: string; required?: boolean; schema: z.ZodType }>;
  responses: Record<number, { description: string; schema?: z.ZodType; contentType?: string }>;
  errors: number[]; // problem+json statuses this route can answer
  /** What an error status means for this route, where it says more than the shared text. */
  errorDescriptions?: Partial<Record<number, string>>;
  handler: (
    input: {
      body: B extends z.ZodType ? z.infer<B> : undefined;
      query: Q extends z.ZodType ? z.infer<Q> : undefined;
      params: P extends z.ZodType ? z.infer<P> : undefined;
      request: FastifyRequest;
      reply: FastifyReply;
    },
    deps: AppDeps,
  ) => Promise<unknown>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyRoute = RouteSpec<any, any, any>;

export function defineRoute<B extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined, P extends z.ZodType | undefined = undefined>(
  spec: RouteSpec<B, Q, P>,
): RouteSpec<B, Q, P> {
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

export function registerRoute(app: FastifyInstance, route: AnyRoute, deps: AppDeps): void {
  app.route({
    method: route.method,
    url: route.url,
    config: { scope: route.scope },
    handler: async (request, reply) => {
      const params = parseInput(route.params, request.params, "params");
      const query = parseInput(route.query, request.query, "query");
      const body = parseInput(route.body, request.body, "body");
      return route.handler({ body, query, params, request, reply } as never, deps);
    },
  });
}
