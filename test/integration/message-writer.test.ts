// Group commit: concurrent sends share statements, each caller is answered only after
// its statement committed, a failing statement writes nothing of any of its messages,
// and two uses of one Idempotency-Key never share a statement.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { createApiKey } from "../../src/services/api-keys.ts";
import { MessageWriter } from "../../src/services/message-writer.ts";
import { insertMessages, type NewMessageRow } from "../../src/db/messages.ts";
import { DatabaseUnavailableError, isDatabaseUnavailable } from "../../src/db/errors.ts";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";

let tdb: TestDatabase;
let keyId: string;
before(async () => {
  tdb = await createTestDatabase();
  keyId = (await createApiKey(tdb.db.prisma, { name: "w" })).record.id;
});
after(() => tdb.drop());

function row(over: Partial<NewMessageRow> = {}): NewMessageRow {
  const id = randomUUID();
  const now = new Date();
  return {
    id, apiKeyId: keyId, idempotencyKey: null, requestHash: null, response: JSON.stringify({ id }), createdAt: now,
    expiresAt: new Date(now.getTime() + 86_400_000), status: "queued", tlsPolicy: "opportunistic", tlsPolicySource: "default", priority: "normal", messageIdHeader: `<${id}@x.example>`,
    fromAddress: "a@x.example", fromName: null, replyTo: null, subject: Buffer.from([1]), textBody: null, htmlBody: null, headers: null,
    attachments: null, tags: ["t"], metadata: null, sendAt: null,
    recipients: [{ kind: "to", address: "b@y.example", name: null, domain: "y.example" }, { kind: "cc", address: "c@z.example", name: "C", domain: "z.example" }],
    ...over,
  };
}

const insertMessagesForTest = (rows: NewMessageRow[]) => insertMessages(tdb.db.pool, rows);

const counts = async () => ({
  messages: await tdb.db.prisma.message.count(),
  recipients: await tdb.db.prisma.recipient.count(),
  deliveries: await tdb.db.prisma.delivery.count(),
});

test("200 concurrent writes share statements and all commit with their recipients and queue rows", async () => {
  const writer = new MessageWriter(tdb.db.pool, { maxBatch: 64, maxInFlight: 2 });
  // The send statements that go through the pool are counted.
  let statements = 0;
  const query = tdb.db.pool.query;
  (tdb.db.pool as unknown as { query: unknown }).query = function (this: unknown, ...a: unknown[]) {
    const text = typeof a[0] === "string" ? a[0] : (a[0] as { text?: string } | undefined)?.text;
    if (text?.includes("INSERT INTO messages")) statements++;
    return (query as (...a: unknown[]) => unknown).apply(tdb.db.pool, a);
  };
  try {
    const before = await counts();
    const rows = Array.from({ length: 200 }, () => row());
    const created = await Promise.all(rows.map((r) => writer.write(r)));
    assert.ok(created.every(Boolean));
    const after = await counts();
    assert.deepEqual({ m: after.messages - before.messages, r: after.recipients - before.recipients, d: after.deliveries - before.deliveries }, { m: 200, r: 400, d: 400 });
    assert.ok(statements < 200 && statements >= 4, `grouped into ${statements} statements`);
    const tags = await tdb.db.prisma.message.findUniqueOrThrow({ where: { id: rows[7]!.id } });
    assert.deepEqual(tags.tags, ["t"]);
  } finally {
    (tdb.db.pool as unknown as { query: unknown }).query = query;
  }
});

test("as a prepared statement (outside the embedded database), repeated writes on one connection all commit", async (t) => {
  // One connection, so the session that prepared the statement is the one asked about it.
  const pool = new pg.Pool({ connectionString: tdb.url, max: 1 });
  t.after(() => pool.end());
  const writer = new MessageWriter(pool, { maxBatch: 8, maxInFlight: 1, prepared: true });
  const before = await counts();
  for (let round = 0; round < 3; round++) {
    const created = await Promise.all(Array.from({ length: 20 }, () => writer.write(row())));
    assert.ok(created.every(Boolean));
  }
  const after = await counts();
  assert.deepEqual({ m: after.messages - before.messages, r: after.recipients - before.recipients }, { m: 60, r: 120 });
  const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name = 'sealpost_insert_messages'");
  assert.equal(rows[0]!.n, 1, "the statement was prepared once and reused");
});

test("content columns keep their bytes whatever the other messages of the statement carry", async () => {
  // One statement, where the first message lacks the fields the later ones have: the
  // bytes must come back exactly, nulls stay null.
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff));
  const rows = [
    row({ subject: null, textBody: null, htmlBody: null, headers: null, attachments: null }),
    row({ subject: bytes(3), textBody: bytes(40), htmlBody: bytes(41), headers: bytes(42), attachments: bytes(70_000) }),
    row({ subject: bytes(5), textBody: null, htmlBody: bytes(1), headers: null, attachments: bytes(0) }),
  ];
  const created = await insertMessagesForTest(rows);
  assert.equal(created.size, 3);
  for (const r of rows) {
    const got = await tdb.db.prisma.message.findUniqueOrThrow({ where: { id: r.id } });
    for (const [col, want] of [["subject", r.subject], ["textBody", r.textBody], ["htmlBody", r.htmlBody], ["headers", r.headers], ["attachments", r.attachments]] as const) {
      const have = got[col] as Uint8Array | null;
      if (want === null) assert.equal(have, null, `${r.id} ${col}`);
      else assert.ok(have && Buffer.from(have).equals(want), `${r.id} ${col}: ${have ? Buffer.from(have).toString("hex").slice(0, 20) : "null"} != ${want.toString("hex").slice(0, 20)}`);
    }
  }
});

test("a statement that fails writes nothing for any message in it, and every caller hears of it", async () => {
  const writer = new MessageWriter(tdb.db.pool, { maxBatch: 64, maxInFlight: 1 });
  const before = await counts();
  // The first write occupies the only statement slot; the next three queue and share one.
  const first = writer.write(row());
  const queued = [writer.write(row()), writer.write(row({ status: "bogus" as "queued" })), writer.write(row())];
  assert.deepEqual(await first, { suppressed: [] });
  const results = await Promise.allSettled(queued);
  assert.deepEqual(results.map((r) => r.status), ["rejected", "rejected", "rejected"]);
  const after = await counts();
  assert.equal(after.messages - before.messages, 1, "only the first message exists");
  assert.equal(after.deliveries - before.deliveries, 2);
});

test("two writes with one Idempotency-Key go into separate statements: one creates, one does not", async () => {
  const writer = new MessageWriter(tdb.db.pool, { maxBatch: 64, maxInFlight: 1 });
  const a = row({ idempotencyKey: "same", requestHash: "h" });
  const b = row({ idempotencyKey: "same", requestHash: "h" });
  const blocker = writer.write(row());
  const [ra, rb] = await Promise.all([writer.write(a), writer.write(b)]);
  await blocker;
  assert.deepEqual([ra, rb], [{ suppressed: [] }, null]);
  assert.equal(await tdb.db.prisma.message.count({ where: { id: { in: [a.id, b.id] } } }), 1);
});

test("through the API: 60 concurrent sends are all answered 202 and all stored", async () => {
  const t: TestApp = await startTestApp({}, { tdb });
  try {
    const { key } = await t.createKey();
    const before = await counts();
    const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => t.call("POST", "/send", { key, body: validSend({ to: `u${i}@example.com` }) })));
    assert.deepEqual([...new Set(answers.map((r) => r.status))], [202]);
    const ids = answers.map((r) => r.json().id as string);
    assert.equal(await tdb.db.prisma.message.count({ where: { id: { in: ids } } }), 60);
    assert.equal((await counts()).recipients - before.recipients, 60);
  } finally {
    await t.close();
  }
});

test("a message no statement can take within the queue wait is answered unavailable, and is never written later", async () => {
  const writer = new MessageWriter(tdb.db.pool, { maxBatch: 64, maxInFlight: 1, maxQueueWaitMs: 200 });
  const locker = await tdb.db.pool.connect();
  await locker.query("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE");
  let stuck: Promise<unknown>;
  const late = row();
  try {
    stuck = writer.write(row()); // takes the only slot and waits on the lock
    const started = Date.now();
    const err = await writer.write(late).then(() => assert.fail("the queued message was written"), (e: unknown) => e);
    const waited = Date.now() - started;
    assert.ok(err instanceof DatabaseUnavailableError && isDatabaseUnavailable(err), String(err));
    assert.ok(waited >= 190 && waited < 2000, `answered after ${waited} ms`);
  } finally {
    await locker.query("ROLLBACK");
    locker.release();
  }
  assert.deepEqual(await stuck, { suppressed: [] }, "the statement that held the slot commits once the lock is gone");
  assert.deepEqual(await writer.write(row()), { suppressed: [] }, "the writer carries on");
  assert.equal(await tdb.db.prisma.message.count({ where: { id: late.id } }), 0, "the message answered unavailable was never written");
});
