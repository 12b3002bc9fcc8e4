// Results of many deliveries in one statement (issue 10, "Make the ratios good"): each
// delivery keeps its own lease fence, so a delivery whose lease another worker took writes
// nothing while the others in the same statement are written; and the claim hands the
// worker the message itself, content still encrypted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { claimDeliveries, completeDeliveries, type ClaimedDelivery, type Completion } from "../../src/db/deliveries.ts";
import { contentAad } from "../../src/security/content-cipher.ts";
import { cleartextEvidence } from "../../src/worker/smtp-evidence.ts";
import { ResultWriter } from "../../src/worker/result-writer.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { getMessage, sendMessage } from "../helpers/messages.ts";

let app: TestApp;
let key: string;

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
});

after(async () => {
  await app?.close();
});

const leases = (leaseMs: number) => ({ claimLeaseMs: leaseMs, leaseMs, startNow: 0 });

function delivered(d: ClaimedDelivery, workerId: string): Completion {
  const startedAt = new Date();
  const evidence = { ...cleartextEvidence(null), mxHost: "mx.example.test", ip: "127.0.0.1", port: 25, policy: d.tlsPolicy, startedAt, durationMs: 3 };
  const verdict = { outcome: "delivered" as const, replyCode: 250, enhancedCode: "2.0.0", replyText: "250 2.0.0 queued" };
  return {
    delivery: d,
    workerId,
    results: d.recipients.map((r) => ({ recipientId: r.id, status: "delivered" as const, replyCode: 250, enhancedCode: "2.0.0", replyText: "250 2.0.0 queued", attempts: [{ ...verdict, evidence }] })),
    retryAt: null,
    message: { status: "delivered", final: true },
  };
}

async function sendThree(tag: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push(await sendMessage(app, key, { to: `${tag}${i}@${tag}.test`, subject: `${tag} ${i}` }));
  return ids;
}

const eventsOf = async (messageId: string) =>
  (await app.tdb.db.pool.query<{ type: string }>(`SELECT type FROM events WHERE message_id = $1::uuid ORDER BY txid, id`, [messageId])).rows.map((r) => r.type);

const evidenceOf = async (messageId: string) =>
  Number((await app.tdb.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM delivery_attempts WHERE message_id = $1::uuid`, [messageId])).rows[0]!.n);

test("a batch of results where one delivery was fenced out writes the others and nothing of it", async () => {
  const ids = await sendThree("fence");
  const pool = app.tdb.db.pool;
  // w1 claims all three under a lease that has run out at once; w2 then claims one of them.
  const mine = (await claimDeliveries(pool, "w1", 10, leases(1))).filter((d) => ids.includes(d.messageId));
  assert.equal(mine.length, 3);
  await pool.query(`UPDATE deliveries SET next_attempt_at = now() - interval '1 second' WHERE id = $1`, [String(mine[1]!.id)]);
  const taken = await claimDeliveries(pool, "w2", 1, leases(60_000), mine.filter((d) => d !== mine[1]).map((d) => d.id));
  assert.deepEqual(taken.map((d) => d.id), [mine[1]!.id]);

  const written = await completeDeliveries(pool, mine.map((d) => delivered(d, "w1")));
  assert.deepEqual([...written].sort(), [mine[0]!.id, mine[2]!.id].sort());

  for (const d of [mine[0]!, mine[2]!]) {
    const view = await getMessage(app, key, d.messageId);
    assert.equal(view.status, "delivered");
    assert.equal(view.recipients[0]!.status, "delivered");
    assert.equal(await evidenceOf(d.messageId), 1);
    assert.deepEqual(await eventsOf(d.messageId), ["message.queued", "message.delivered"]);
  }
  const fenced = mine[1]!;
  assert.equal(await evidenceOf(fenced.messageId), 0, "the fenced-out delivery wrote evidence");
  assert.deepEqual(await eventsOf(fenced.messageId), ["message.queued"], "the fenced-out delivery wrote an event");
  const row = (await pool.query<{ state: string; lease_owner: string; attempts: number }>(`SELECT state, lease_owner, attempts FROM deliveries WHERE id = $1`, [String(fenced.id)])).rows[0]!;
  assert.deepEqual(row, { state: "pending", lease_owner: "w2", attempts: 2 });
  const view = await getMessage(app, key, fenced.messageId);
  assert.equal(view.status, "sending");
  assert.equal(view.recipients[0]!.status, "sending");
  // `sending` is read from the lease, never written by the claim: the rows still say queued,
  // the list shows it as sending, and once the lease is given up it is queued again.
  const stored = (await pool.query<{ m: string; r: string }>(
    `SELECT m.status AS m, r.status AS r FROM messages m JOIN recipients r ON r.message_id = m.id WHERE m.id = $1`, [fenced.messageId])).rows[0]!;
  assert.deepEqual(stored, { m: "queued", r: "queued" });
  const listed = async (status: string) =>
    ((await app.call("GET", `/messages?status=${status}`, { key })).json() as { data: Array<{ id: string; status: string }> }).data.filter((x) => x.id === fenced.messageId);
  assert.deepEqual((await listed("sending")).map((x) => x.status), ["sending"]);
  assert.deepEqual(await listed("queued"), []);
  await pool.query(`UPDATE deliveries SET lease_owner = NULL WHERE id = $1`, [String(fenced.id)]);
  assert.equal((await getMessage(app, key, fenced.messageId)).status, "queued");
  assert.equal((await listed("queued")).length, 1);
});

test("results written together through the writer each get their own answer; the claim brings the message, still encrypted", async () => {
  const ids = await sendThree("group");
  const pool = app.tdb.db.pool;
  const mine = (await claimDeliveries(pool, "w3", 10, { claimLeaseMs: 1000, leaseMs: 60_000, startNow: 2 })).filter((d) => ids.includes(d.messageId));
  assert.equal(mine.length, 3);
  // The first two start at once under the full lease, the third waits under the claim lease.
  assert.deepEqual(mine.map((d) => d.started), [true, true, false]);
  const leaseLeft = (await pool.query<{ id: string; s: number }>(
    `SELECT id::text AS id, extract(epoch FROM next_attempt_at - now()) AS s FROM deliveries WHERE id = ANY($1::bigint[])`, [mine.map((d) => String(d.id))])).rows;
  const left = new Map(leaseLeft.map((r) => [r.id, Number(r.s)]));
  assert.ok(left.get(String(mine[0]!.id))! > 30 && left.get(String(mine[2]!.id))! <= 1, JSON.stringify(leaseLeft));
  // Content as stored: it decrypts with the message id as associated data.
  const m = mine[0]!.message;
  assert.equal(app.cipher.decrypt(m.subject!, contentAad(m.id, "subject")).toString("utf8"), `group 0`);
  assert.deepEqual(m.recipients.map((r) => [r.address, r.status, r.delivery_id]), [["group0@group.test", "queued", String(mine[0]!.id)]]);

  const writer = new ResultWriter(pool);
  // One lost its lease (another worker's fence now); all three go in flight together.
  await pool.query(`UPDATE deliveries SET lease_owner = 'w4' WHERE id = $1`, [String(mine[2]!.id)]);
  const answers = await Promise.all(mine.map((d) => writer.write(delivered(d, "w3"))));
  assert.deepEqual(answers, [true, true, false]);
  assert.equal((await getMessage(app, key, mine[0]!.messageId)).status, "delivered");
  assert.equal(await evidenceOf(mine[2]!.messageId), 0);
});
