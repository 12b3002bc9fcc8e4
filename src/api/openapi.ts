// Builds openapi.yaml from the route list and its zod schemas. The committed file is
// checked against this output by a test, so contract and code cannot disagree.
import { z } from "zod";
import { stringify } from "yaml";
import { ERROR_CODES } from "../domain/errors.ts";
import type { AnyRoute, Responses } from "./route.ts";
import { ROUTES } from "./routes/index.ts";
import { ProblemSchema, WebhookPayloadSchema } from "./schemas.ts";
import { EXAMPLES, genericProblem, type Example, type OperationExamples } from "./examples.ts";

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

const DEFS_REF = /^#\/\$defs\/(.+)$/;

/** Every `#/$defs/X` reference in `value` pointed at `#/components/schemas/X` instead. */
function retarget(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(retarget);
  if (!value || typeof value !== "object") return value;
  const out: Json = {};
  for (const [k, v] of Object.entries(value)) {
    const m = k === "$ref" && typeof v === "string" ? DEFS_REF.exec(v) : null;
    out[k] = m ? `#/components/schemas/${m[1]}` : retarget(v);
  }
  return out;
}

/** The examples of one status: the operation's own, else the generic problem for an error status. */
function examplesFor(ex: OperationExamples, status: string, scope: string | null): Record<string, Example> | undefined {
  const own = ex.responses[status];
  if (own) return own;
  if (status === "default" || Number(status) >= 400) {
    const generic = genericProblem(status === "default" ? "default" : Number(status), scope);
    return { [(generic.value as { code: string }).code]: generic };
  }
  return undefined;
}

const problemContent = (examples: Record<string, Example> | undefined): Json => ({
  "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" }, ...(examples ? { examples } : {}) },
});

/**
 * The named schemas of the document. zod writes a schema carrying an `id` (and every
 * id'd schema inside it) as `{ $ref: "#/$defs/Id", $defs: {...} }`; inside an OpenAPI 3.1
 * document such a fragment resolves against the document root, which has no $defs, so
 * every reference would dangle: the $defs move to components.schemas and point there.
 */
class Components {
  readonly schemas: Record<string, Json> = {};

  add(name: string, json: Json): void {
    const prior = this.schemas[name];
    // One name, two shapes (say an input and an output variant) would make the
    // contract lie for one of them: refuse to generate rather than pick one.
    if (prior && JSON.stringify(prior) !== JSON.stringify(json)) throw new Error(`openapi: two different schemas are named ${name}`);
    this.schemas[name] = json;
  }

  /** The schema with its $defs moved to components. */
  hoist(json: Json): Json {
    const defs = (json.$defs ?? {}) as Record<string, Json>;
    delete json.$defs;
    for (const [name, def] of Object.entries(defs)) this.add(name, retarget(def) as Json);
    return retarget(json) as Json;
  }

  /** A reference to the schema's component when it carries an `id`, else the schema inline. */
  ref(schema: z.ZodType, io: "input" | "output"): Json {
    const id = (z.globalRegistry.get(schema) as { id?: string } | undefined)?.id;
    const json = this.hoist(toSchema(schema, io));
    if (!id || json.$ref === `#/components/schemas/${id}`) return json;
    this.add(id, json);
    return { $ref: `#/components/schemas/${id}` };
  }
}

/** Path, query and header parameters of one route. */
function parametersOf(r: AnyRoute, c: Components): Json[] {
  const parameters: Json[] = [];
  for (const [where, schema] of [["path", r.params], ["query", r.query]] as const) {
    if (!schema) continue;
    const js = c.hoist(toSchema(schema, "input")) as { properties?: Record<string, Json>; required?: string[] };
    for (const [name, prop] of Object.entries(js.properties ?? {}))
      parameters.push({ name, in: where, required: where === "path" || (js.required ?? []).includes(name), schema: prop });
  }
  for (const h of r.headers ?? []) parameters.push({ name: h.name, in: "header", required: h.required ?? false, description: h.description, schema: c.hoist(toSchema(h.schema, "input")) });
  return parameters;
}

/** The headers an error status carries. */
function errorHeaders(status: number): Json {
  if (status === 401) return { headers: { "WWW-Authenticate": { schema: { type: "string" }, description: "Bearer" } } };
  if (status === 429)
    return { headers: { "Retry-After": { schema: { type: "integer" } }, "RateLimit-Limit": { schema: { type: "integer" } }, "RateLimit-Remaining": { schema: { type: "integer" } }, "RateLimit-Reset": { schema: { type: "integer" } } } };
  if (status === 503) return { headers: { "Retry-After": { schema: { type: "integer" }, description: "seconds to wait before retrying" } } };
  return {};
}

/** Success answers, problems and the default of one route, each with its examples. */
function responsesOf(r: AnyRoute, ex: OperationExamples, c: Components): Record<string, Json> {
  const responses: Record<string, Json> = {};
  for (const [status, resp] of Object.entries(r.responses as Responses)) {
    const shown = examplesFor(ex, status, r.scope);
    if (!shown) throw new Error(`openapi: no example of the ${status} answer of ${r.operationId}`);
    responses[status] = { description: resp.description, content: { "application/json": { schema: c.ref(resp.schema, "output"), examples: shown } } };
  }
  for (const status of r.errors) {
    responses[String(status)] = {
      description: r.errorDescriptions?.[status] ?? STATUS_TEXT[status] ?? "Error",
      content: problemContent(examplesFor(ex, String(status), r.scope)),
      ...errorHeaders(status),
    };
  }
  responses.default = { description: "Unexpected error", content: problemContent(examplesFor(ex, "default", r.scope)) };
  return responses;
}

function operationOf(r: AnyRoute, ex: OperationExamples, c: Components): Json {
  // In this order: it is the order the components are first named in, and so their order in the file.
  const parameters = parametersOf(r, c);
  const responses = responsesOf(r, ex, c);
  return {
    operationId: r.operationId,
    summary: r.summary,
    ...(r.description ? { description: r.description } : {}),
    tags: r.tags,
    security: r.scope ? [{ bearer: [r.scope] }] : [],
    ...(parameters.length ? { parameters } : {}),
    ...(r.body
      ? { requestBody: { required: true, content: { "application/json": { schema: c.ref(r.body, "input"), ...(ex.request ? { examples: ex.request } : {}) } } } }
      : {}),
    responses,
  };
}

// The two documents served for people and tools rather than operations of the API:
// open to all, limited only by the per-address rate limit.
function documentPath(operationId: string, summary: string, description: string, type: string, example: Example): Record<string, Json> {
  return {
    get: {
      operationId, summary, description, tags: ["operations"], security: [],
      responses: {
        200: { description: summary, content: { [type]: { schema: { type: "string" }, examples: { document: example } } } },
        429: {
          description: STATUS_TEXT[429],
          content: problemContent(examplesFor({ responses: {} }, "429", null)),
          headers: { "Retry-After": { schema: { type: "integer" } } },
        },
        default: { description: "Unexpected error", content: problemContent(examplesFor({ responses: {} }, "default", null)) },
      },
    },
  };
}

/**
 * What sealpost POSTs to a registered endpoint (OpenAPI 3.1 `webhooks`): an event as GET
 * /events shows it without its id, which travels in webhook-id, signed per Standard Webhooks.
 */
function webhooksOf(c: Components): Json {
  const header = (name: string, description: string) => ({ name, in: "header", required: true, description, schema: { type: "string" } });
  return {
    event: {
      post: {
        operationId: "receiveEvent",
        // Not a bearer call: the receiver checks webhook-signature instead.
        security: [],
        summary: "An event of this key, sent to each enabled endpoint that wants its type",
        description:
          "Verify webhook-signature before trusting the body: base64 HMAC-SHA256, keyed with the base64-decoded part of the secret after whsec_, over " +
          "`<webhook-id>.<webhook-timestamp>.<body>`, prefixed `v1,`; during a secret rotation there are two, separated by a space. The `standardwebhooks` " +
          "package does this. Answer 2xx within 15 s; anything else is retried (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h, or later if " +
          "Retry-After asks), 410 Gone disables the endpoint. Deliveries are at least once: deduplicate on webhook-id.",
        parameters: [
          header("webhook-id", "The event's id (evt_...; whtest_... for a test); the same on every retry"),
          header("webhook-timestamp", "Seconds since the epoch when this attempt was signed"),
          header("webhook-signature", "v1,<base64 signature>, one per secret in use, space separated"),
        ],
        requestBody: { required: true, content: { "application/json": { schema: c.ref(WebhookPayloadSchema, "output") } } },
        responses: { 200: { description: "Received (any 2xx)" }, 410: { description: "Gone: sealpost disables the endpoint" } },
      },
    },
  };
}

function buildOpenApi(routes: AnyRoute[] = ROUTES, examples: Record<string, OperationExamples> = EXAMPLES): Json {
  const c = new Components();
  const problem = c.ref(ProblemSchema, "output");
  if (problem.$ref !== "#/components/schemas/Problem") c.add("Problem", problem);
  const paths: Record<string, Record<string, Json>> = {};
  for (const r of routes) {
    const ex = examples[r.operationId];
    if (!ex) throw new Error(`openapi: no examples for ${r.operationId} (src/api/examples.ts)`);
    (paths[r.url.replace(/:(\w+)/g, "{$1}")] ??= {})[r.method.toLowerCase()] = operationOf(r, ex, c);
  }
  paths["/openapi.yaml"] = documentPath("getOpenApi", "This contract", "The OpenAPI 3.1 document, generated from the route schemas.", "application/yaml", {
    summary: "The start of this document",
    value: "openapi: 3.1.0\ninfo:\n  title: sealpost\n  version: 0.1.0\n",
  });
  paths["/docs"] = documentPath(
    "getApiReference",
    "A browsable reference of this contract",
    "An HTML page that renders /openapi.yaml with Swagger UI. Every file it loads is served by sealpost from the swagger-ui-dist package; nothing comes from another origin.",
    "text/html",
    { summary: "The page (abridged)", value: '<!doctype html>\n<html lang="en">\n<head>\n<title>sealpost API reference</title>\n...' },
  );
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
    tags: [
      { name: "messages", description: "Sending and reading messages" },
      { name: "events", description: "What happened to each recipient, in commit order" },
      { name: "domains", description: "Sender domains: DNS records, verification, DKIM keys" },
      { name: "webhooks", description: "Endpoints that receive events, signed per Standard Webhooks" },
      { name: "suppressions", description: "Addresses a sender domain no longer mails: hard bounces, complaints, and those added by hand" },
      { name: "tls-policies", description: "The operator's TLS policy map: recipient domains whose mail must go over verified TLS, to pinned MX hosts or certificates" },
      { name: "operations", description: "Health and contract" },
    ],
    paths,
    webhooks: webhooksOf(c),
    components: {
      schemas: c.schemas,
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "sp_<id>_<secret> API key; scopes send and read" } },
    },
  };
}

export function openApiYaml(): string {
  return "# Generated from the route schemas by `npm run openapi`; a test fails if it is stale.\n" + stringify(buildOpenApi(), { lineWidth: 0 });
}
