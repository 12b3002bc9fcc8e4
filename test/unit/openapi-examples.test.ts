// Every operation in openapi.yaml shows examples: of its request body (when it has one),
// of a successful answer and of a problem. Each example is validated twice, against the
// JSON Schema the contract publishes for it and against the zod schema the code uses for
// the same body, so an example that drifts from either fails here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse } from "yaml";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { z } from "zod";
import { ROUTES } from "../../src/api/routes/index.ts";
import { ProblemSchema } from "../../src/api/schemas.ts";
import { ERROR_CODES, type ErrorCode } from "../../src/domain/errors.ts";
import { normalizeSendRequest, type SendRequest } from "../../src/domain/message.ts";
import { loadConfig } from "../../src/config.ts";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const doc: any = parse(readFileSync(resolve(import.meta.dirname, "../../openapi.yaml"), "utf8"));
const METHODS = ["get", "put", "post", "delete", "patch"];

interface MediaType {
  schema: Record<string, unknown>;
  examples?: Record<string, { summary?: string; value: unknown }>;
}
interface Operation {
  operationId: string;
  requestBody?: { content: Record<string, MediaType> };
  responses: Record<string, { content?: Record<string, MediaType> }>;
}

const operations: Array<{ path: string; method: string; op: Operation }> = Object.entries<Record<string, Operation>>(doc.paths).flatMap(
  ([path, item]) => METHODS.filter((m) => item[m]).map((method) => ({ path, method, op: item[method]! })),
);

// Ajv over the contract's own schemas: references into components are pointed at one
// bundle of all components, as in openapi.test.ts. Formats are checked by zod below.
const BUNDLE = "urn:sealpost:openapi";
const retarget = (v: unknown): unknown => JSON.parse(JSON.stringify(v).replace(/"#\/components\/schemas\//g, `"${BUNDLE}#/$defs/`));
const ajv = new Ajv2020({ strict: true, allErrors: true });
ajv.addFormat("date-time", true).addFormat("email", true).addFormat("uuid", true).addFormat("uri", true);
ajv.addSchema({ $id: BUNDLE, $defs: retarget(doc.components.schemas) as object });
const compiled = new Map<string, ReturnType<typeof ajv.compile>>();
function contractValidator(schema: Record<string, unknown>) {
  const key = JSON.stringify(schema);
  let v = compiled.get(key);
  if (!v) compiled.set(key, (v = ajv.compile(retarget(schema) as object)));
  return v;
}

/** The zod schema the code uses for this body, when the code has one. */
function zodSchemaFor(operationId: string, where: "request" | string): z.ZodType | undefined {
  const route = ROUTES.find((r) => r.operationId === operationId);
  if (where === "request") return route?.body;
  if (where === "default" || Number(where) >= 400) return ProblemSchema;
  return route?.responses[Number(where)]?.schema;
}

function checkExamples(operationId: string, where: string, media: MediaType): number {
  const examples = Object.entries(media.examples ?? {});
  const validate = contractValidator(media.schema);
  const zodSchema = zodSchemaFor(operationId, where);
  for (const [name, ex] of examples) {
    const label = `${operationId} ${where} example "${name}"`;
    assert.ok(typeof ex.summary === "string" && ex.summary.length > 0, `${label} has a summary`);
    assert.ok(validate(ex.value), `${label} does not match the contract's schema: ${ajv.errorsText(validate.errors)}`);
    if (zodSchema) {
      const r = zodSchema.safeParse(ex.value);
      assert.ok(r.success, `${label} does not match the code's schema: ${r.success ? "" : JSON.stringify(r.error.issues)}`);
    }
  }
  return examples.length;
}

test("every operation has a request example (when it has a body), a 2xx example and an error example", () => {
  assert.ok(operations.length >= ROUTES.length, "the operations were found");
  for (const { op } of operations) {
    const count = (pred: (status: string) => boolean) =>
      Object.entries(op.responses)
        .filter(([status]) => pred(status))
        .reduce((n, [, resp]) => n + Object.values(resp.content ?? {}).reduce((m, media) => m + Object.keys(media.examples ?? {}).length, 0), 0);
    if (op.requestBody) {
      for (const [type, media] of Object.entries(op.requestBody.content))
        assert.ok(Object.keys(media.examples ?? {}).length > 0, `${op.operationId}: no example of its ${type} request body`);
    }
    assert.ok(count((s) => /^2\d\d$/.test(s)) > 0, `${op.operationId}: no example of a successful answer`);
    assert.ok(count((s) => s === "default" || /^[45]\d\d$/.test(s)) > 0, `${op.operationId}: no example of an error`);
    // Every problem response shows one, not only some.
    for (const [status, resp] of Object.entries(op.responses))
      if (resp.content?.["application/problem+json"])
        assert.ok(Object.keys(resp.content["application/problem+json"].examples ?? {}).length > 0, `${op.operationId} ${status}: no problem example`);
  }
});

test("every example validates against its schema, in the contract and in the code", () => {
  let checked = 0;
  for (const { op } of operations) {
    for (const media of Object.values(op.requestBody?.content ?? {})) checked += checkExamples(op.operationId, "request", media);
    for (const [status, resp] of Object.entries(op.responses))
      for (const media of Object.values(resp.content ?? {})) checked += checkExamples(op.operationId, status, media);
  }
  assert.ok(checked > 40, `only ${checked} examples checked`);
});

test("each problem example has the status of its response and a code that answers with it", () => {
  for (const { op } of operations)
    for (const [status, resp] of Object.entries(op.responses))
      for (const [name, ex] of Object.entries(resp.content?.["application/problem+json"]?.examples ?? {})) {
        const problem = ex.value as { status: number; code: ErrorCode };
        const label = `${op.operationId} ${status} example "${name}"`;
        if (status === "default") assert.ok(problem.status >= 500, label);
        else assert.equal(problem.status, Number(status), label);
        // invalid_request is 422, or 400 for a body that is not JSON at all.
        assert.ok(ERROR_CODES[problem.code].status === problem.status || (problem.code === "invalid_request" && problem.status === 400), label);
      }
});

test("send request examples pass the cross-field rules too, as the API would accept them", () => {
  const config = loadConfig({ NODE_ENV: "test", SEALPOST_DATA_KEY: Buffer.alloc(32, 1).toString("base64") });
  const limits = { attachmentMaxBytes: config.ATTACHMENT_MAX_BYTES, attachmentsTotalMaxBytes: config.ATTACHMENTS_TOTAL_MAX_BYTES };
  const examples = doc.paths["/send"].post.requestBody.content["application/json"].examples as Record<string, { value: SendRequest }>;
  assert.ok(Object.keys(examples).length >= 2);
  for (const [name, ex] of Object.entries(examples)) {
    const r = normalizeSendRequest(ex.value, limits, new Date("2026-03-02T09:00:00Z"));
    assert.ok(r.ok, `${name}: ${JSON.stringify(r.ok ? null : r.errors)}`);
  }
});

test("the validators can fail: a broken example is refused by both", () => {
  const op = operations.find((o) => o.op.operationId === "getMessage")!.op;
  const media = op.responses["200"]!.content!["application/json"]!;
  const good = Object.values(media.examples!)[0]!.value as { recipients: Array<Record<string, unknown>> };
  const broken = structuredClone(good);
  delete broken.recipients[0]!.expires_at;
  assert.equal(contractValidator(media.schema)(broken), false);
  assert.equal(zodSchemaFor("getMessage", "200")!.safeParse(broken).success, false);
  const sendMedia = operations.find((o) => o.op.operationId === "sendMessage")!.op.requestBody!.content["application/json"]!;
  const badSend = { ...(Object.values(sendMedia.examples!)[0]!.value as object), importance: "high" };
  assert.equal(contractValidator(sendMedia.schema)(badSend), false, "unknown fields are refused");
  assert.equal(zodSchemaFor("sendMessage", "request")!.safeParse(badSend).success, false);
});
