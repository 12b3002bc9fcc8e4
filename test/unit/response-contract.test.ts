// The response contract is enforced, not only documented: every route has a zod schema
// for each 2xx answer openapi.yaml documents, those schemas are strict (a field the
// contract does not name is refused, nothing is coerced), and checkResponse refuses a
// body that does not match, naming the paths and never the values.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse } from "yaml";
import { z } from "zod";
import { checkResponse, defineRoute, ResponseContractError, type AnyRoute } from "../../src/api/route.ts";
import { ROUTES } from "../../src/api/routes/index.ts";
import sendMessage from "../../src/api/routes/sendMessage.ts";
import sendMessageBatch from "../../src/api/routes/sendMessageBatch.ts";
import getMessage from "../../src/api/routes/getMessage.ts";
import { problem } from "../../src/api/problem.ts";
import type { MessageView, SendResponseView } from "../../src/api/schemas.ts";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const doc: any = parse(readFileSync(resolve(import.meta.dirname, "../../openapi.yaml"), "utf8"));

/** What is wrong between the routes' response schemas and the 2xx answers `doc` documents for them. */
function undocumentedBodies(routes: AnyRoute[], document: typeof doc): string[] {
  const wrong: string[] = [];
  for (const r of routes) {
    const op = document.paths[r.url.replace(/:(\w+)/g, "{$1}")]?.[r.method.toLowerCase()];
    if (!op) {
      wrong.push(`${r.operationId}: not in openapi.yaml`);
      continue;
    }
    const documented = Object.keys(op.responses).filter((s) => /^2\d\d$/.test(s)).sort();
    const declared = Object.keys(r.responses).sort();
    if (documented.length === 0) wrong.push(`${r.operationId}: documents no 2xx answer`);
    if (JSON.stringify(documented) !== JSON.stringify(declared))
      wrong.push(`${r.operationId}: openapi.yaml documents ${documented.join(",")}, the route declares ${declared.join(",")}`);
    for (const status of documented) {
      const schema = (r.responses as Record<string, { schema?: unknown }>)[status]?.schema;
      if (!(schema instanceof z.ZodType)) wrong.push(`${r.operationId} ${status}: no zod schema to check its body with`);
      const media = Object.keys(op.responses[status].content ?? {});
      if (media.join() !== "application/json") wrong.push(`${r.operationId} ${status}: documented as ${media.join() || "no body"}, checked as JSON`);
    }
  }
  return wrong;
}

test("every route has a zod response schema for each 2xx status openapi.yaml documents, and documents no other", () => {
  assert.deepEqual(undocumentedBodies(ROUTES, doc), []);
  // The walk can fail: a route without a schema, and one whose statuses differ from the document.
  const noSchema = { ...getMessage, responses: { 200: { description: "The message" } } } as unknown as AnyRoute;
  const otherStatus = { ...sendMessage, responses: { 200: sendMessage.responses[202] } } as unknown as AnyRoute;
  assert.deepEqual(undocumentedBodies([noSchema, otherStatus], doc), [
    "getMessage 200: no zod schema to check its body with",
    "sendMessage: openapi.yaml documents 202, the route declares 200",
    "sendMessage 202: no zod schema to check its body with",
  ]);
});

test("every response schema is strict throughout and reads the same in and out (no coercion, default or transform)", () => {
  // zod writes additionalProperties: false on the input side only for strict objects,
  // and a default, transform or pipe makes the two sides differ: so equal sides mean a
  // body is accepted exactly as it is sent.
  for (const r of ROUTES)
    for (const [status, resp] of Object.entries(r.responses as Record<string, { schema: z.ZodType }>)) {
      const side = (io: "input" | "output") => z.toJSONSchema(resp.schema, { io, unrepresentable: "any", reused: "inline" });
      assert.deepEqual(side("input"), side("output"), `${r.operationId} ${status}: a loose object, a default or a transform in the response schema`);
    }
  // The check can fail: a plain z.object is loose on the input side.
  const loose = z.object({ a: z.string() });
  assert.notDeepEqual(z.toJSONSchema(loose, { io: "input" }), z.toJSONSchema(loose, { io: "output" }));
});

const sent: SendResponseView = { id: "0b6c3f0e-64a4-4c0f-9d35-5b1e1c9f7a10", status: "queued", tls_policy: "required", created_at: "2030-01-01T00:00:00.000Z" };

function refusal(route: AnyRoute, status: number, body: unknown): ResponseContractError {
  try {
    checkResponse(route, status, body);
  } catch (err) {
    assert.ok(err instanceof ResponseContractError, String(err));
    return err;
  }
  assert.fail(`the ${status} body of ${route.operationId} was accepted: ${JSON.stringify(body)}`);
}

test("a body that matches its schema is sent as it is", () => {
  assert.deepEqual(checkResponse(sendMessage, 202, sent), sent);
  assert.deepEqual(checkResponse(sendMessage, 202, { ...sent, status: "scheduled", send_at: "2030-01-02T00:00:00.000Z" }), {
    ...sent, status: "scheduled", send_at: "2030-01-02T00:00:00.000Z",
  });
});

test("a missing field, a wrong type, a value outside the enum and an unknown field are refused with their paths", () => {
  const { created_at: _dropped, ...missing } = sent;
  const cases: Array<[string, unknown, string]> = [
    ["missing", missing, "created_at"],
    ["a number as a string", { ...sent, created_at: 1893456000000 }, "created_at"],
    ["a Date object instead of its ISO text", { ...sent, created_at: new Date("2030-01-01T00:00:00Z") }, "created_at"],
    ["null for a required string", { ...sent, id: null }, "id"],
    ["not a UUID", { ...sent, id: "msg_1" }, "id"],
    ["outside the enum", { ...sent, status: "sent" }, "status"],
    ["an offset instead of Z", { ...sent, created_at: "2030-01-01T01:00:00+01:00" }, "created_at"],
    ["a field the contract does not name", { ...sent, subject: "Your reset link" }, "subject"],
    ["not an object", "queued", "(the body)"],
  ];
  for (const [what, body, path] of cases) {
    const err = refusal(sendMessage, 202, body);
    assert.equal(err.operationId, "sendMessage", what);
    assert.equal(err.status, 202, what);
    assert.deepEqual(err.issues.map((i) => i.path), [path], `${what}: ${JSON.stringify(err.issues)}`);
    assert.match(err.message, /the 202 answer of sendMessage \(POST \/send\) does not match its response schema/, what);
  }
});

test("the paths reach into nested objects, arrays and the branches of a union", () => {
  const message: MessageView = {
    id: sent.id, status: "queued", tls_policy: "required", priority: "normal", from: { address: "noreply@shop.example", name: null }, subject: null, tags: [],
    metadata: null, created_at: sent.created_at, send_at: null, content_purged: false, content_unreadable: null, message_id: "<a@shop.example>",
    reply_to: [], updated_at: sent.created_at,
    recipients: [{ address: "a@example.com", name: null, kind: "to", status: "queued", attempts: 0, last_response: null, next_attempt_at: null, expires_at: null, delivery_attempts: [] }],
  };
  assert.deepEqual(checkResponse(getMessage, 200, message), message);
  const wrong = { ...message, recipients: [{ ...message.recipients[0]!, attempts: "0" }] };
  assert.deepEqual(refusal(getMessage, 200, wrong).issues.map((i) => i.path), ["recipients[0].attempts"]);

  // A batch item is an accepted message or a problem: a broken item names what each branch lacked.
  const batch = { accepted: 1, rejected: 1, data: [{ index: 0, ...sent }, { index: 1, error: { ...problem("invalid_request", "x", "r1"), status: "422" } }] };
  const paths = refusal(sendMessageBatch, 200, batch).issues.map((i) => i.path);
  assert.ok(paths.includes("data[1].error.status"), JSON.stringify(paths));
  assert.ok(paths.includes("data[1].id"), JSON.stringify(paths));
});

test("a status the route does not document is refused", () => {
  const err = refusal(sendMessage, 200, sent);
  assert.deepEqual(err.issues, [{ path: "(the status)", message: "200 is not a documented answer of this route" }]);
});

test("the message never holds the value that was wrong", () => {
  const secret = "Reset link 4f9c-secret-token";
  for (const body of [{ ...sent, subject: secret }, { ...sent, id: secret }, { ...sent, status: secret }, { ...sent, created_at: secret }]) {
    const err = refusal(sendMessage, 202, body);
    assert.ok(!err.message.includes(secret) && !JSON.stringify(err.issues).includes(secret), err.message);
  }
});

test("a handler whose return type is not its response schema's output does not compile, and its body is refused", async () => {
  // The compile side is checked by `tsc --noEmit` (npm run typecheck): each expected-error
  // directive below fails the build if the handler's type stops refusing the body.
  const routes = [
    defineRoute({
      operationId: "wrongField", method: "GET", url: "/x", summary: "", scope: null, tags: [], errors: [],
      responses: { 202: { description: "", schema: z.strictObject({ id: z.string() }) } },
      // @ts-expect-error: id is a string in the schema
      async handler() {
        return { id: 1 };
      },
    }),
    defineRoute({
      operationId: "missingField", method: "GET", url: "/x", summary: "", scope: null, tags: [], errors: [],
      responses: { 200: { description: "", schema: z.strictObject({ id: z.string(), status: z.literal("ok") }) } },
      // @ts-expect-error: status is missing
      async handler() {
        return { id: "a" };
      },
    }),
  ];
  for (const r of routes) {
    const status = Number(Object.keys(r.responses)[0]);
    const body = await r.handler({} as never, {} as never);
    assert.throws(() => checkResponse(r, status, body), ResponseContractError, r.operationId);
  }
});
