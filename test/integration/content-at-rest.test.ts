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
import { checkDataKeys } from "../../src/security/data-key-check.ts";
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

test("a tampered value is reported as unreadable instead of returning garbage", async () => {
  const id = await sendFull();
  await t.tdb.db.pool.query(`UPDATE messages SET subject = set_byte(subject, length(subject) - 1, (get_byte(subject, length(subject) - 1) + 1) % 256) WHERE id = $1`, [id]);
  const got = await t.call("GET", `/messages/${id}`, { key });
  // The rest of the message (addresses, statuses, evidence) is not encrypted and is still shown.
  assert.equal(got.status, 200, got.body);
  assert.equal(got.json().subject, null);
  assert.deepEqual(got.json().content_unreadable, {
    reason: "failed_authentication", data_key_id: "k1",
    detail: "the stored content failed authentication: it was changed or damaged in storage and is not shown",
  });
  assert.equal(got.json().recipients[0].address, "alice@example.com");
  assert.doesNotMatch(got.body, /secret|receipt/);
  const view = await getMessage(t.tdb.db.prisma, t.cipher, keyId, id, { maxRetryMs: t.config.SMTP_MAX_RETRY });
  assert.equal(view.subject, null);
  assert.equal(view.content_unreadable?.reason, "failed_authentication");
  // The list shows it the same way, and the other messages normally.
  const list = await t.call("GET", "/messages?limit=100", { key });
  assert.equal(list.status, 200, list.body);
  const items: Array<{ id: string; subject: string | null; content_unreadable: unknown }> = list.json().data;
  assert.equal(items.find((m) => m.id === id)?.content_unreadable !== null, true);
  assert.ok(items.some((m) => m.subject === SUBJECT && m.content_unreadable === null));
});

test("a ciphertext copied into another row does not decrypt there", async () => {
  const a = await sendFull();
  const b = await t.call("POST", "/send", { key, body: validSend({ subject: "other" }) });
  const bId = b.json().id;
  await t.tdb.db.pool.query(`UPDATE messages SET subject = (SELECT subject FROM messages WHERE id = $1) WHERE id = $2`, [a, bId]);
  const got = await t.call("GET", `/messages/${bId}`, { key });
  assert.equal(got.status, 200, got.body);
  assert.equal(got.json().subject, null);
  assert.equal(got.json().content_unreadable.reason, "failed_authentication");
});

test("content under a data key this server does not hold: the view names the key id", async () => {
  const id = await sendFull();
  const other = new ContentCipher(parseDataKeys(`k9:${randomBytes(32).toString("base64")}`));
  await t.tdb.db.prisma.message.update({ where: { id }, data: { subject: new Uint8Array(other.encrypt("x", contentAad(id, "subject"))) } });
  const got = await t.call("GET", `/messages/${id}`, { key });
  assert.equal(got.status, 200, got.body);
  assert.equal(got.json().subject, null);
  assert.equal(got.json().content_unreadable.reason, "unknown_data_key");
  assert.equal(got.json().content_unreadable.data_key_id, "k9");
  assert.match(got.json().content_unreadable.detail, /data key k9, which this server does not hold .*SEALPOST_DATA_KEY/);
  await t.tdb.db.pool.query(`UPDATE messages SET content_purged_at = now(), subject = NULL WHERE id = $1`, [id]); // out of the rotation test's way
});

test("rotation: with a new first key, old rows still read and rotate-data re-encrypts them under it", async () => {
  const id = await sendFull();
  const oldKey = (await import("../helpers/app.ts")).TEST_DATA_KEY;
  const newKey = randomBytes(32).toString("base64");
  const rotated = new ContentCipher(parseDataKeys(`k2:${newKey},k1:${oldKey}`));
  const before = await t.tdb.db.prisma.message.findUniqueOrThrow({ where: { id } });
  assert.equal(rotated.keyIdOf(before.subject!), "k1");
  // The procedure (README, "Rotating the data key"): the processes run with k1 first,
  // then with k2 listed after it, then with k2 first; only then may the rotation run.
  const db = t.tdb.db.prisma;
  await checkDataKeys(db, t.cipher, "encrypts");
  await assert.rejects(rotateDataKey(db, rotated), /keys rotate-data: data key k2 does not encrypt new content yet/);
  await checkDataKeys(db, new ContentCipher(parseDataKeys(`k1:${oldKey},k2:${newKey}`)), "encrypts");
  await assert.rejects(rotateDataKey(db, rotated), /data key k2 does not encrypt new content yet/);
  await checkDataKeys(db, rotated, "encrypts");
  const r = await rotateDataKey(db, rotated, { batchSize: 2 });
  assert.ok(r.rewritten >= 1);
  // The two rows the earlier tests tampered with are reported, not rewritten; they
  // still name k1, so k1 stays required.
  assert.equal(r.unreadable.length, 2);
  assert.deepEqual(r.retired, []);
  const after = await t.tdb.db.prisma.message.findUniqueOrThrow({ where: { id } });
  for (const col of ["subject", "textBody", "htmlBody", "headers", "attachments"] as const) assert.equal(rotated.keyIdOf(after[col]!), "k2", col);
  assert.equal(rotated.decrypt(after.subject!, contentAad(id, "subject")).toString(), SUBJECT);
  // The old key alone can no longer read it: the rotation really re-encrypted.
  assert.throws(() => t.cipher.decrypt(after.subject!, contentAad(id, "subject")), /unknown data key "k2"/);
  const again = await rotateDataKey(t.tdb.db.prisma, rotated);
  assert.equal(again.rewritten, 0, "a second run has nothing left to do");
  // Once no stored value names k1, the rotation retires it: processes no longer need it.
  await t.tdb.db.pool.query(
    `UPDATE messages SET subject = NULL, text_body = NULL, html_body = NULL, headers = NULL, attachments = NULL, content_purged_at = now()
      WHERE id = ANY($1::uuid[])`, [r.unreadable]);
  const last = await rotateDataKey(db, rotated);
  assert.deepEqual(last.retired, ["k1"]);
  await checkDataKeys(db, new ContentCipher(parseDataKeys(`k2:${newKey}`)), "encrypts");
  await assert.rejects(checkDataKeys(db, t.cipher, "decrypts"), /encrypted under data key k2, which SEALPOST_DATA_KEY does not hold/);
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
