import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";

let t: TestApp;
let key: string;
before(async () => {
  t = await startTestApp();
  key = (await t.createKey({ domains: ["shop.example"] })).key;
});
after(() => t.close());

const count = async () => ({
  messages: await t.tdb.db.prisma.message.count(),
  deliveries: await t.tdb.db.prisma.delivery.count(),
});

test("valid items are accepted and invalid ones get their own problem, in order", async () => {
  const before = await count();
  const r = await t.call("POST", "/send/batch", {
    key,
    body: {
      messages: [
        validSend({ to: "a@example.com" }),
        validSend({ subject: "bad\r\nBcc: x@evil.example" }),
        validSend({ from: "x@other.example" }),
        validSend({ to: "b@example.com", tls: "required", tags: ["batch"] }),
        { ...validSend(), status: "delivered" },
      ],
    },
  });
  assert.equal(r.status, 200, r.body);
  const b = r.json();
  assert.equal(b.accepted, 2);
  assert.equal(b.rejected, 3);
  assert.deepEqual(b.data.map((d: { index: number }) => d.index), [0, 1, 2, 3, 4]);
  assert.equal(b.data[0].status, "queued");
  assert.equal(b.data[1].error.code, "invalid_request");
  assert.equal(b.data[1].error.status, 422);
  assert.equal(b.data[1].error.errors[0].path, "subject");
  assert.equal(b.data[1].error.detail, "subject: must not contain line breaks or other control characters");
  assert.equal(b.data[2].error.code, "forbidden");
  assert.equal(b.data[3].tls_policy, "required");
  assert.equal(b.data[4].error.errors[0].path, "status");
  assert.match(b.data[4].error.errors[0].message, /^unknown field; the fields here are from, to, cc/);
  const after = await count();
  assert.equal(after.messages - before.messages, 2);
  assert.equal(after.deliveries - before.deliveries, 2);
  const got = await t.call("GET", `/messages/${b.data[3].id}`, { key });
  assert.equal(got.json().tags[0], "batch");
});

test("the envelope is validated as a whole: empty, over 100, not an array, unknown fields", async () => {
  const before = await count();
  for (const body of [{ messages: [] }, { messages: Array.from({ length: 101 }, () => validSend()) }, { messages: validSend() }, { messages: [validSend()], extra: 1 }, [validSend()]]) {
    const r = await t.call("POST", "/send/batch", { key, body });
    assert.equal(r.status, 422, r.body);
    assert.equal(r.json().code, "invalid_request");
  }
  assert.deepEqual(await count(), before);
});

test("Idempotency-Key is refused on batches rather than silently ignored", async () => {
  const before = await count();
  const r = await t.call("POST", "/send/batch", { key, body: { messages: [validSend()] }, headers: { "idempotency-key": "abc" } });
  assert.equal(r.status, 422);
  assert.match(r.json().detail, /not supported/);
  assert.deepEqual(await count(), before);
});

test("100 messages in one call are all accepted", async () => {
  const before = await count();
  const r = await t.call("POST", "/send/batch", { key, body: { messages: Array.from({ length: 100 }, (_, i) => validSend({ to: `u${i}@example.com` })) } });
  assert.equal(r.status, 200);
  assert.equal(r.json().accepted, 100);
  assert.equal((await count()).messages - before.messages, 100);
});
