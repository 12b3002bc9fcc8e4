// Idempotency-Key on POST /send (the IETF httpapi idempotency-key draft, as Stripe and
// Postmark use it): within 24 h the same key and body replay the first response and
// create nothing; another body is 409; racing duplicates create one message.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { assertProblem } from "../helpers/route-security.ts";

let t: TestApp;
let key: string;
let keyId: string;
before(async () => {
  t = await startTestApp();
  ({ key, id: keyId } = await t.createKey({ name: "idempotency" }));
});
after(() => t.close());

const send = (body: unknown, idem: string, k = key) => t.call("POST", "/send", { key: k, body, headers: { "idempotency-key": idem } });
const messageCount = (apiKeyId = keyId) => t.tdb.db.prisma.message.count({ where: { apiKeyId } });

test("replay: the same key and body answer the first response again and create nothing", async () => {
  const idem = randomUUID();
  const body = validSend({ tags: ["replay"] });
  const first = await send(body, idem);
  assert.equal(first.status, 202, first.body);
  assert.equal(first.headers["idempotent-replayed"], undefined, "the first answer is not a replay");
  const count = await messageCount();

  const again = await send(body, idem);
  assert.equal(again.status, 202, again.body);
  assert.equal(again.headers["idempotent-replayed"], "true");
  assert.deepEqual(again.json(), first.json(), "byte-for-byte the first response body");
  assert.notEqual(again.headers["x-request-id"], first.headers["x-request-id"], "a replay is still its own request");
  assert.equal(await messageCount(), count, "no second message");
  assert.equal(await t.tdb.db.prisma.recipient.count({ where: { messageId: first.json().id } }), 1);
});

test("replay: the same body with its fields in another order is the same request", async () => {
  const idem = randomUUID();
  const first = await send({ from: "Shop <noreply@shop.example>", to: "alice@example.com", subject: "Order", text: "Thanks" }, idem);
  assert.equal(first.status, 202, first.body);
  const again = await send({ text: "Thanks", subject: "Order", to: "alice@example.com", from: "Shop <noreply@shop.example>" }, idem);
  assert.equal(again.status, 202, again.body);
  assert.equal(again.json().id, first.json().id);
});

test("conflict: the same key with another body is 409 idempotency_conflict and writes nothing", async () => {
  const idem = randomUUID();
  const first = await send(validSend({ subject: "First" }), idem);
  assert.equal(first.status, 202, first.body);
  const count = await messageCount();
  const record = await t.tdb.db.prisma.idempotencyRecord.findUniqueOrThrow({ where: { apiKeyId_key: { apiKeyId: keyId, key: idem } } });

  const res = await send(validSend({ subject: "Second" }), idem);
  assertProblem(res, 409, "idempotency_conflict");
  assert.equal(await messageCount(), count);
  const after = await t.tdb.db.prisma.idempotencyRecord.findUniqueOrThrow({ where: { apiKeyId_key: { apiKeyId: keyId, key: idem } } });
  assert.deepEqual(after, record, "the stored first response is untouched");

  // The first response is still what a correct retry gets.
  const retry = await send(validSend({ subject: "First" }), idem);
  assert.equal(retry.json().id, first.json().id);
});

test("concurrency: ten racing requests with one key create exactly one message", async () => {
  const idem = randomUUID();
  const body = validSend({ tags: ["race"] });
  const before = await messageCount();
  const answers = await Promise.all(Array.from({ length: 10 }, () => send(body, idem)));
  assert.equal(await messageCount(), before + 1, "exactly one message row");
  const accepted = answers.filter((r) => r.status === 202);
  assert.ok(accepted.length >= 1, "at least one request is accepted");
  const ids = new Set(accepted.map((r) => r.json().id));
  assert.equal(ids.size, 1, "every 202 names the same message");
  for (const r of answers.filter((x) => x.status !== 202)) assertProblem(r, 409, "conflict", "a racing duplicate");
  const [id] = ids;
  assert.equal(await t.tdb.db.prisma.message.count({ where: { id: id! } }), 1);
  assert.equal(await t.tdb.db.prisma.delivery.count({ where: { messageId: id! } }), 1, "one queue row, not one per racer");
});

test("keys are scoped per API key: two keys use the same Idempotency-Key independently", async () => {
  const other = await t.createKey({ name: "other tenant" });
  const idem = "order-4711";
  const a = await send(validSend({ subject: "A" }), idem);
  const b = await send(validSend({ subject: "B" }), idem, other.key);
  assert.equal(a.status, 202, a.body);
  assert.equal(b.status, 202, b.body);
  assert.notEqual(a.json().id, b.json().id);
  assert.equal(b.headers["idempotent-replayed"], undefined);
  // Even the identical body under the other key is a new message, never the first key's response.
  const c = await send(validSend({ subject: "A" }), "order-4712");
  const d = await send(validSend({ subject: "A" }), "order-4712", other.key);
  assert.notEqual(c.json().id, d.json().id);
  assert.equal(await messageCount(other.id), 2);
});

test("expiry: after expires_at the key starts afresh and a new message is created", async () => {
  const idem = randomUUID();
  const body = validSend({ tags: ["expiry"] });
  const first = await send(body, idem);
  assert.equal(first.status, 202, first.body);
  const record = await t.tdb.db.prisma.idempotencyRecord.findUniqueOrThrow({ where: { apiKeyId_key: { apiKeyId: keyId, key: idem } } });
  // Stored for 24 h (within a minute of the response's created_at).
  const ttl = record.expiresAt.getTime() - new Date(first.json().created_at).getTime();
  assert.ok(Math.abs(ttl - 24 * 3_600_000) < 60_000, `expires after ${ttl} ms`);

  await t.tdb.db.prisma.$executeRawUnsafe(
    `UPDATE idempotency_records SET expires_at = now() - interval '1 second' WHERE api_key_id = $1 AND key = $2`, keyId, idem);
  const count = await messageCount();
  const again = await send(body, idem);
  assert.equal(again.status, 202, again.body);
  assert.equal(again.headers["idempotent-replayed"], undefined);
  assert.notEqual(again.json().id, first.json().id);
  assert.equal(await messageCount(), count + 1);
  // The record now belongs to the new message, so the next retry replays it.
  const third = await send(body, idem);
  assert.equal(third.json().id, again.json().id);
  assert.equal(third.headers["idempotent-replayed"], "true");
});

test("an invalid Idempotency-Key is 422 and writes nothing", async () => {
  const count = await messageCount();
  for (const idem of ["x".repeat(256), "with space", "ümlaut"]) {
    const res = await t.call("POST", "/send", { key, body: validSend(), headers: { "idempotency-key": idem } });
    assertProblem(res, 422, "invalid_request", idem.slice(0, 20));
  }
  assert.equal(await messageCount(), count);
});

test("a request without Idempotency-Key is never deduplicated", async () => {
  const count = await messageCount();
  const body = validSend({ tags: ["plain"] });
  const a = await t.call("POST", "/send", { key, body });
  const b = await t.call("POST", "/send", { key, body });
  assert.notEqual(a.json().id, b.json().id);
  assert.equal(await messageCount(), count + 2);
});
