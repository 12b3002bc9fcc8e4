// Builds openapi.yaml from the route list and its zod schemas. The committed file is
// checked against this output by a test, so contract and code cannot disagree.
import { z } from "zod";
import { stringify } from "yaml";
import { ERROR_CODES } from "../domain/errors.ts";
import type { AnyRoute } from "./route.ts";
import { ROUTES } from "./routes/index.ts";
import { ProblemSchema } from "./schemas.ts";

const STATUS_TEXT: Record<number, string> = {
  400: "Malformed request (bad JSON)", 401: "Missing, invalid or revoked API key", 403: "The key lacks the scope or sender domain",
  404: "Not found (including another key's message)", 409: "Conflict", 413: "Body or attachments too large",
  415: "Body is not application/json", 422: "Validation failed; see errors[]", 429: "Rate limited; see Retry-After",
  500: "Internal error", 503: "Database unavailable; retry",
};

type Json = Record<string, unknown>;

function toSchema(schema: z.ZodType, io: "input" | "output"): Json {
  const s = z.toJSONSchema(schema, { target: "draft-2020-12", io, unrepresentable: "any", reused: "inline" }) as Json;
  delete s.$schema;
  return s;
}

export function buildOpenApi(routes: AnyRoute[] = ROUTES): Json {
  const components: Record<string, Json> = {};
  // Named components: the top-level schemas carrying an `id` in their metadata.
  const ref = (schema: z.ZodType, io: "input" | "output"): Json => {
    const id = (z.globalRegistry.get(schema) as { id?: string } | undefined)?.id;
    const json = toSchema(schema, io);
    if (!id) return json;
    components[id] ??= json;
    return { $ref: `#/components/schemas/${id}` };
  };
  components.Problem = toSchema(ProblemSchema, "output");
  const paths: Record<string, Record<string, Json>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:(\w+)/g, "{$1}");
    const parameters: Json[] = [];
    for (const [where, schema] of [["path", r.params], ["query", r.query]] as const) {
      if (!schema) continue;
      const js = toSchema(schema, "input") as { properties?: Record<string, Json>; required?: string[] };
      for (const [name, prop] of Object.entries(js.properties ?? {}))
        parameters.push({ name, in: where, required: where === "path" || (js.required ?? []).includes(name), schema: prop });
    }
    for (const h of r.headers ?? []) parameters.push({ name: h.name, in: "header", required: h.required ?? false, description: h.description, schema: toSchema(h.schema, "input") });
    const responses: Record<string, Json> = {};
    for (const [status, resp] of Object.entries(r.responses)) {
      responses[status] = {
        description: resp.description,
        ...(resp.schema ? { content: { [resp.contentType ?? "application/json"]: { schema: ref(resp.schema, "output") } } } : {}),
      };
    }
    for (const status of r.errors) {
      responses[String(status)] = {
        description: STATUS_TEXT[status] ?? "Error",
        content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } },
        ...(status === 401 ? { headers: { "WWW-Authenticate": { schema: { type: "string" }, description: "Bearer" } } } : {}),
        ...(status === 429
          ? { headers: { "Retry-After": { schema: { type: "integer" } }, "RateLimit-Limit": { schema: { type: "integer" } }, "RateLimit-Remaining": { schema: { type: "integer" } }, "RateLimit-Reset": { schema: { type: "integer" } } } }
          : {}),
      };
    }
    responses.default = { description: "Unexpected error", content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } } };
    const op: Json = {
      operationId: r.operationId,
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      tags: r.tags,
      security: r.scope ? [{ bearer: [r.scope] }] : [],
      ...(parameters.length ? { parameters } : {}),
      ...(r.body ? { requestBody: { required: true, content: { "application/json": { schema: ref(r.body, "input") } } } } : {}),
      responses,
    };
    (paths[path] ??= {})[r.method.toLowerCase()] = op;
  }
  paths["/openapi.yaml"] = {
    get: {
      operationId: "getOpenApi", summary: "This contract", tags: ["operations"], security: [],
      responses: { 200: { description: "OpenAPI 3.1 document", content: { "application/yaml": { schema: { type: "string" } } } } },
    },
  };
  return {
    openapi: "3.1.0",
    info: {
      title: "sealpost",
      version: "0.1.0",
      description:
        "Self-hosted transactional email API. HTTPS only; authenticate with `Authorization: Bearer sp_<id>_<secret>`. " +
        `Errors are RFC 9457 problem+json with a code from: ${Object.keys(ERROR_CODES).join(", ")}.`,
      license: { name: "MIT", identifier: "MIT" },
    },
    servers: [{ url: "https://localhost:8443" }],
    tags: [{ name: "messages", description: "Sending and reading messages" }, { name: "operations", description: "Health and contract" }],
    paths,
    components: {
      schemas: components,
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "sp_<id>_<secret> API key; scopes send and read" } },
    },
  };
}

export function openApiYaml(): string {
  return "# Generated from the route schemas by `npm run openapi`; a test fails if it is stale.\n" + stringify(buildOpenApi(), { lineWidth: 0 });
}
