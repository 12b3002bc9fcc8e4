// A handler that answers a body its schema does not describe gets a 500 `internal`
// problem, and the log names the route and the path that was wrong, never the body. The
// routes below are deliberately wrong, served by the real app next to the real ones.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { assertProblem } from "../helpers/route-security.ts";
import { defineRoute } from "../../src/api/route.ts";
import { ROUTES } from "../../src/api/routes/index.ts";
import { SendResponseSchema, type SendResponseView } from "../../src/api/schemas.ts";

const SECRET = "Your reset link: https://shop.example/r/4f9c-contract-marker";
const sent: SendResponseView = { id: "0b6c3f0e-64a4-4c0f-9d35-5b1e1c9f7a10", status: "queued", tls_policy: "required", created_at: "2030-01-01T00:00:00.000Z" };
const base = { method: "GET" as const, summary: "deliberately wrong", scope: null, tags: [] as string[], errors: [] as number[] };

const missingField = defineRoute({
  ...base,
  operationId: "contractMissingField",
  url: "/contract-test/missing",
  responses: { 202: { description: "", schema: SendResponseSchema } },
  // @ts-expect-error: created_at is required by the schema
  async handler() {
    const { created_at: _omitted, ...rest } = sent;
    return rest;
  },
});

const wrongType = defineRoute({
  ...base,
  operationId: "contractWrongType",
  url: "/contract-test/wrong-type",
  responses: { 202: { description: "", schema: SendResponseSchema } },
  // @ts-expect-error: tls_policy is one of two strings, not the text of a message
  async handler() {
    return { ...sent, tls_policy: SECRET };
  },
});

const extraField = defineRoute({
  ...base,
  operationId: "contractExtraField",
  url: "/contract-test/extra-field",
  responses: { 202: { description: "", schema: SendResponseSchema } },
  async handler() {
    const withContent = { ...sent, subject: SECRET };
    return withContent; // not a fresh literal: only the runtime check can see the extra field
  },
});

const undocumentedStatus = defineRoute({
  ...base,
  operationId: "contractUndocumentedStatus",
  url: "/contract-test/status",
  responses: { 202: { description: "", schema: SendResponseSchema } },
  async handler({ reply }) {
    reply.code(200);
    return sent;
  },
});

const right = defineRoute({
  ...base,
  operationId: "contractRight",
  url: "/contract-test/right",
  responses: { 202: { description: "", schema: SendResponseSchema } },
  async handler() {
    return sent;
  },
});

let t: TestApp;
before(async () => {
  t = await startTestApp({}, { routes: [...ROUTES, missingField, wrongType, extraField, undocumentedStatus, right] });
});
after(() => t?.close());

/** The JSON log lines of one request. */
const linesOf = (requestId: string) =>
  t.logs.flatMap((l) => l.split("\n")).filter((l) => l.includes(requestId)).map((l) => JSON.parse(l) as Record<string, unknown>);

async function assertBroken(path: string, operationId: string, status: number, wrongPaths: string[]): Promise<void> {
  const r = await t.call("GET", path);
  const p = assertProblem(r, 500, "internal", path);
  assert.equal(p.detail, "an internal error occurred", "the client learns nothing of the body");
  assert.ok(!r.body.includes(SECRET));
  const lines = linesOf(p.request_id);
  const line = lines.find((l) => l.msg === "response does not match its schema");
  assert.ok(line, `no contract log line for ${path}: ${JSON.stringify(lines)}`);
  assert.equal(line.level, 50, "logged as an error");
  assert.equal(line.operationId, operationId);
  assert.equal(line.route, `GET ${path}`);
  assert.equal(line.status, status);
  assert.deepEqual((line.issues as Array<{ path: string }>).map((i) => i.path), wrongPaths);
  for (const l of lines) assert.ok(!JSON.stringify(l).includes(SECRET), `the body's content is logged: ${JSON.stringify(l)}`);
  assert.ok(lines.some((l) => l.msg === "request" && l.status === 500), "the request line says 500");
}

test("a body missing a required field is a 500 internal, logged with its route and path", async () => {
  await assertBroken("/contract-test/missing", "contractMissingField", 202, ["created_at"]);
});

test("a field of the wrong type or value is a 500, and the value is not logged", async () => {
  await assertBroken("/contract-test/wrong-type", "contractWrongType", 202, ["tls_policy"]);
});

test("a field the contract does not name is a 500, not silently dropped or sent", async () => {
  await assertBroken("/contract-test/extra-field", "contractExtraField", 202, ["subject"]);
});

test("a status the route does not document is a 500", async () => {
  await assertBroken("/contract-test/status", "contractUndocumentedStatus", 200, ["(the status)"]);
});

test("a body that matches is sent with the route's documented status", async () => {
  const r = await t.call("GET", "/contract-test/right");
  assert.equal(r.status, 202, r.body);
  assert.match(String(r.headers["content-type"]), /^application\/json\b/);
  assert.deepEqual(r.json(), sent);
});

test("the real routes answer next to the broken ones", async () => {
  const r = await t.call("GET", "/healthz");
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json(), { status: "ok" });
});
