// Content at rest: every content column holds AES-256-GCM ciphertext, reads round-trip
// through the API, tampering fails loudly, values cannot be moved between rows, key
// rotation re-encrypts under the new key, and retention erases content but keeps the
// evidence.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { ContentCipher, contentAad } from "../../src/security/content-cipher.ts";
import { parseDataKeys } from "../../src/security/data-keys.ts";
import { rotateDataKey } from "../../src/services/rotate-data-key.ts";
import { purgeExpired } from "../../src/services/retention.ts";
import { getMessage } from "../../src/services/messages.ts";

let t: TestApp;
let key: string;
let keyId: string;
const SUBJECT = "Your receipt #4711 (secret-subject-marker)";
const TEXT = "Total 42.00 EUR (secret-body-marker)";

before(async () => {
  t = await startTestApp();
  ({ key, id: keyId } = await t.createKey());
});
after(() => t.close());

async function sendFull(): Promise<string> {
  const r = await t.call("POST", "/send", {
    key,
    body: validSend({
      subject: SUBJECT,
      text: TEXT,
      html: "<p>secret-html-marker</p>",
      headers: { "X-Order": "secret-header-marker" },
      attachments: [{ filename: "r.txt", content: Buffer.from("secret-attachment-marker").toString("base64"), content_type: "text/plain" }],
    }),
  });
  assert.equal(r.status, 202, r.body);
  return r.json().id;
}

test("a raw SELECT sees ciphertext in every content column, the API sees plaintext", async () => {
  const id = await sendFull();
  const rows = await t.tdb.db.pool.query(
    `SELECT subject, text_body, html_body, headers, attachments FROM messages WHERE id = $1`, [id]);
  const row = rows.rows[0];
  for (const col of ["subject", "text_body", "html_body", "headers", "attachments"]) {
    const v: Buffer = row[col];
    assert.ok(Buffer.isBuffer(v) && v.length > 28, `${col} is stored`);
    assert.equal(v[0], 1, `${col} has the cipher's version byte`);
    const text = v.toString("latin1");
    assert.doesNotMatch(text, /secret-|receipt|Total/, `${col} holds no plaintext`);
  }
  const dump = JSON.stringify((await t.tdb.db.pool.query(`SELECT * FROM messages WHERE id = $1`, [id])).rows);
  assert.doesNotMatch(dump, /secret-\w+-marker/);
  const got = await t.call("GET", `/messages/${id}`, { key });
  assert.equal(got.json().subject, SUBJECT);
});

test("a tampered value fails loudly instead of returning garbage", async () => {
  const id = await sendFull();
  await t.tdb.db.pool.query(`UPDATE messages SET subject = set_byte(subject, length(subject) - 1, (get_byte(subject, length(subject) - 1) + 1) % 256) WHERE id = $1`, [id]);
  const got = await t.call("GET", `/messages/${id}`, { key });
  assert.equal(got.status, 500);
  assert.equal(got.json().code, "internal");
  assert.doesNotMatch(got.body, /secret|receipt/);
  await assert.rejects(getMessage(t.tdb.db.prisma, t.cipher, keyId, id, { maxRetryMs: t.config.SMTP_MAX_RETRY }), /failed authentication/);
});

test("a ciphertext copied into another row does not decrypt there", async () => {
  const a = await sendFull();
  const b = await t.call("POST", "/send", { key, body: validSend({ subject: "other" }) });
  const bId = b.json().id;
  await t.tdb.db.pool.query(`UPDATE messages SET subject = (SELECT subject FROM messages WHERE id = $1) WHERE id = $2`, [a, bId]);
  const got = await t.call("GET", `/messages/${bId}`, { key });
  assert.equal(got.status, 500);
});

test("rotation: with a new first key, old rows still read and rotate-data re-encrypts them under it", async () => {
  const id = await sendFull();
  const oldKey = (await import("../helpers/app.ts")).TEST_DATA_KEY;
  const newKey = randomBytes(32).toString("base64");
  const rotated = new ContentCipher(parseDataKeys(`k2:${newKey},k1:${oldKey}`));
  const before = await t.tdb.db.prisma.message.findUniqueOrThrow({ where: { id } });
  assert.equal(rotated.keyIdOf(before.subject!), "k1");
  const r = await rotateDataKey(t.tdb.db.prisma, rotated, { batchSize: 2 });
  assert.ok(r.rewritten >= 1);
  // The two rows the earlier tests tampered with are reported, not rewritten.
  assert.equal(r.unreadable.length, 2);
  const after = await t.tdb.db.prisma.message.findUniqueOrThrow({ where: { id } });
  for (const col of ["subject", "textBody", "htmlBody", "headers", "attachments"] as const) assert.equal(rotated.keyIdOf(after[col]!), "k2", col);
  assert.equal(rotated.decrypt(after.subject!, contentAad(id, "subject")).toString(), SUBJECT);
  // The old key alone can no longer read it: the rotation really re-encrypted.
  assert.throws(() => t.cipher.decrypt(after.subject!, contentAad(id, "subject")), /unknown data key "k2"/);
  const again = await rotateDataKey(t.tdb.db.prisma, rotated);
  assert.equal(again.rewritten, 0, "a second run has nothing left to do");
});

test("retention purges content of messages finished long enough ago, keeps addresses and evidence", async () => {
  const oldId = await sendFull();
  const recentId = await sendFull();
  const activeId = await sendFull();
  const now = new Date("2030-01-31T00:00:00Z");
  await t.tdb.db.prisma.message.update({ where: { id: oldId }, data: { status: "delivered", finishedAt: new Date("2029-12-01T00:00:00Z") } });
  await t.tdb.db.prisma.message.update({ where: { id: recentId }, data: { status: "delivered", finishedAt: new Date("2030-01-20T00:00:00Z") } });
  const rec = await t.tdb.db.prisma.recipient.findFirstOrThrow({ where: { messageId: oldId } });
  await t.tdb.db.prisma.deliveryAttempt.create({
    data: { messageId: oldId, recipientId: rec.id, attempt: 1, policy: "required", tls: true, tlsVersion: "TLSv1.3", verified: true, outcome: "delivered", startedAt: new Date("2029-12-01T00:00:00Z"), durationMs: 10 },
  });
  await t.tdb.db.pool.query(`UPDATE idempotency_records SET expires_at = '2000-01-01'`);
  const r = await purgeExpired(t.tdb.db.prisma, { retentionDays: 30, now });
  assert.ok(r.messagesPurged >= 1);
  const old = await t.call("GET", `/messages/${oldId}`, { key });
  assert.equal(old.json().content_purged, true);
  assert.equal(old.json().subject, null);
  assert.equal(old.json().recipients[0].address, "alice@example.com");
  assert.equal(old.json().recipients[0].delivery_attempts[0].tls.version, "TLSv1.3");
  const raw = (await t.tdb.db.pool.query(`SELECT subject, text_body, html_body, headers, attachments FROM messages WHERE id = $1`, [oldId])).rows[0];
  assert.deepEqual(Object.values(raw), [null, null, null, null, null]);
  assert.equal((await t.call("GET", `/messages/${recentId}`, { key })).json().content_purged, false);
  assert.equal((await t.call("GET", `/messages/${activeId}`, { key })).json().subject, SUBJECT);
  assert.equal(Number((await t.tdb.db.pool.query(`SELECT count(*) FROM idempotency_records`)).rows[0].count), 0);
});
