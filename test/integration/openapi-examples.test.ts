// The examples in openapi.yaml are real: the request examples are accepted by a running
// API, and the documented validation problems are what it answers, word for word (the
// request id aside), to the invalid inputs they describe.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse } from "yaml";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { SendResponseSchema } from "../../src/api/schemas.ts";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const doc: any = parse(readFileSync(resolve(import.meta.dirname, "../../openapi.yaml"), "utf8"));
const examples = (media: { examples: Record<string, { value: unknown }> }) => Object.values(media.examples).map((e) => e.value);
const withoutRequestId = (p: Record<string, unknown>) => ({ ...p, request_id: "(any)" });

let app: TestApp;
let key: string;
before(async () => {
  app = await startTestApp();
  // The examples send from shop.example; a key limited to it shows they need no wider key.
  key = (await app.createKey({ domains: ["shop.example"] })).key;
});
after(() => app?.close());

test("every POST /send request example is accepted", async () => {
  const bodies = examples(doc.paths["/send"].post.requestBody.content["application/json"]);
  assert.ok(bodies.length >= 2);
  for (const body of bodies) {
    const r = await app.call("POST", "/send", { key, body });
    assert.equal(r.status, 202, r.body);
    assert.ok(SendResponseSchema.safeParse(r.json()).success, r.body);
  }
});

test("the documented 422 of POST /send is the API's answer to the invalid item of the batch example", async () => {
  const batch = examples(doc.paths["/send/batch"].post.requestBody.content["application/json"])[0] as { messages: unknown[] };
  const invalid = batch.messages[1];
  const documented = doc.paths["/send"].post.responses["422"].content["application/problem+json"].examples.invalid.value;
  const r = await app.call("POST", "/send", { key, body: invalid });
  assert.equal(r.status, 422, r.body);
  assert.deepEqual(withoutRequestId(r.json()), withoutRequestId(documented));
});

test("the batch example gets the documented shape: the first accepted, the second refused with the documented problem", async () => {
  const batch = examples(doc.paths["/send/batch"].post.requestBody.content["application/json"])[0];
  const documented = examples(doc.paths["/send/batch"].post.responses["200"].content["application/json"])[0] as {
    accepted: number;
    rejected: number;
    data: Array<{ index: number; error?: Record<string, unknown> }>;
  };
  const r = await app.call("POST", "/send/batch", { key, body: batch });
  assert.equal(r.status, 200, r.body);
  const got = r.json() as typeof documented;
  assert.deepEqual([got.accepted, got.rejected], [documented.accepted, documented.rejected]);
  assert.deepEqual(withoutRequestId(got.data[1]!.error!), withoutRequestId(documented.data[1]!.error!));
});

test("the documented 422 of GET /messages/{id} is the API's answer to a malformed id", async () => {
  const documented = doc.paths["/messages/{id}"].get.responses["422"].content["application/problem+json"].examples.id.value;
  const r = await app.call("GET", "/messages/1042", { key });
  assert.equal(r.status, 422, r.body);
  assert.deepEqual(withoutRequestId(r.json()), withoutRequestId(documented));
});
