// The fault suite's invariant check (test/helpers/fault-invariants.ts) on a real
// database with planted rows: it passes a clean outcome and fails each broken invariant,
// so a scenario cannot pass because the checker looked away.
import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { checkInvariants, type InvariantInput } from "../helpers/fault-invariants.ts";
import type { Answer, SentMessage } from "../helpers/senders.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

let tdb: TestDatabase;
before(async () => {
  tdb = await createTestDatabase();
  await tdb.db.pool.query(`INSERT INTO api_keys (id, name, secret_hash, scopes, allowed_domains) VALUES ('k1', 'faults', repeat('0', 64), '{send}', '{*}')`);
});
after(() => tdb?.drop());
beforeEach(() => tdb.db.pool.query(`TRUNCATE messages CASCADE`));

interface Planted {
  id: string;
  mid: string;
  key: string;
}

/** One message with one recipient, as the writer and the worker would leave it. */
async function plant(o: { key: string; status: string; lease?: { owner: string; expiredSecondsAgo: number } }): Promise<Planted> {
  const id = randomUUID();
  const mid = `<${id}@shop.example>`;
  const q = (sql: string, params: unknown[]) => tdb.db.pool.query(sql, params);
  await q(
    `INSERT INTO messages (id, api_key_id, status, tls_policy, message_id_header, from_address, metadata, created_at, updated_at)
     VALUES ($1, 'k1', $2, 'required', $3, 'noreply@shop.example', jsonb_build_object('fault_key', $4::text), now(), now())`,
    [id, o.status === "sending" ? "sending" : o.status, mid, o.key],
  );
  const final = ["delivered", "bounced", "failed"].includes(o.status);
  const { rows } = await q(
    `INSERT INTO deliveries (message_id, api_key_id, domain, state, attempts, next_attempt_at, lease_owner, created_at)
     VALUES ($1, 'k1', 'ok.faults.test', $2, 1, now() - make_interval(secs => $3), $4, now()) RETURNING id`,
    [id, final ? "done" : "pending", o.lease?.expiredSecondsAgo ?? 0, o.lease?.owner ?? null],
  );
  await q(
    `INSERT INTO recipients (message_id, delivery_id, position, kind, address, status, updated_at) VALUES ($1, $2, 1, 'to', 'm@ok.faults.test', $3, now())`,
    [id, rows[0].id, o.status],
  );
  return { id, mid, key: o.key };
}

const ok202 = (p: Planted, n = 0, earlier: Answer[] = []): SentMessage => ({
  key: p.key,
  n,
  answers: [...earlier, { status: 202, ms: 5, retryAfter: null }],
  id: p.id,
  final: 202,
});
const kept = (...ps: Planted[]) => ps.map((p) => ({ messageId: p.mid, kept: true }));
const check = (o: Partial<InvariantInput> & Pick<InvariantInput, "sent" | "copies">) =>
  checkInvariants({ db: tdb.db.pool, crashedInFlight: 0, settleMs: 300, ...o });

test("a clean outcome passes, with its figures", async () => {
  const a = await plant({ key: "a", status: "delivered" });
  const b = await plant({ key: "b", status: "bounced" });
  const retried = ok202(a, 0, [{ status: 503, ms: 3, retryAfter: "1" }, { status: 0, ms: 2, retryAfter: null, error: "ECONNREFUSED" }]);
  const r = await check({ sent: [retried, ok202(b, 1)], copies: [...kept(a), { messageId: b.mid, kept: false }], expected: new Map([["a", "delivered"], ["b", "bounced"]]) });
  assert.deepEqual(r.failures, []);
  assert.deepEqual(
    { ...r.figures, maxAnswerMs: 0 },
    { sent: 2, accepted: 2, answers503: 1, answers500: 0, unanswered: 1, rows: 2, recipients: 2, delivered: 1, bounced: 1, failed: 0, copies: 2, duplicates: 0, stuck: 0, maxAnswerMs: 0 },
  );
});

test("a planted duplicate fails it where nothing crashed, and passes within the messages in flight at a crash", async () => {
  const a = await plant({ key: "a", status: "delivered" });
  const b = await plant({ key: "b", status: "delivered" });
  const copies = [...kept(a, b), ...kept(a)];
  const clean = await check({ sent: [ok202(a), ok202(b, 1)], copies });
  assert.equal(clean.figures.duplicates, 1);
  assert.deepEqual(clean.failures, ["1 duplicate copies where nothing crashed"]);
  assert.deepEqual((await check({ sent: [ok202(a), ok202(b, 1)], copies, crashedInFlight: 1 })).failures, []);
  const worse = await check({ sent: [ok202(a), ok202(b, 1)], copies: [...copies, ...kept(b)], crashedInFlight: 1 });
  assert.deepEqual(worse.failures, ["2 duplicate copies, more than the 1 messages in flight at the crash"]);
  // Copies the sink refused or dropped are not duplicates: the sender had to try again.
  assert.deepEqual((await check({ sent: [ok202(a), ok202(b, 1)], copies: [...kept(a, b), { messageId: a.mid, kept: false }] })).failures, []);
});

test("a planted stuck row fails it: still sending under a lease that expired and nobody claimed", async () => {
  const a = await plant({ key: "a", status: "delivered" });
  const s = await plant({ key: "s", status: "sending", lease: { owner: "killed-worker", expiredSecondsAgo: 60 } });
  const started = Date.now();
  const r = await check({ sent: [ok202(a), ok202(s, 1)], copies: kept(a) });
  assert.ok(Date.now() - started >= 300, "it waited settleMs for the recipient to finish");
  assert.equal(r.figures.stuck, 1);
  assert.deepEqual(r.failures, [
    "1 recipients not delivered, bounced or failed after 0.3 s",
    "1 leases expired more than 2000 ms ago and were not claimed again",
  ]);
});

test("a lease still running is not stuck, but its recipient not being final is", async () => {
  const s = await plant({ key: "s", status: "sending", lease: { owner: "busy-worker", expiredSecondsAgo: -30 } });
  const r = await check({ sent: [ok202(s)], copies: [] });
  assert.deepEqual(r.failures, ["1 recipients not delivered, bounced or failed after 0.3 s"]);
});

test("a recipient that becomes final within the deadline passes", async () => {
  const s = await plant({ key: "s", status: "sending" });
  const finish = setTimeout(() => void tdb.db.pool.query(`UPDATE recipients SET status = 'delivered'`), 100);
  const r = await check({ sent: [ok202(s)], copies: kept(s), settleMs: 5000 });
  clearTimeout(finish);
  assert.deepEqual(r.failures, []);
});

test("a 202 without its row, and a key with two rows, fail it", async () => {
  const a = await plant({ key: "a", status: "delivered" });
  await plant({ key: "a", status: "delivered" }); // the same key again: a retry that made a second message
  const ghost: SentMessage = { key: "ghost", n: 1, answers: [{ status: 202, ms: 1, retryAfter: null }], id: randomUUID(), final: 202 };
  const r = await check({ sent: [ok202(a), ghost], copies: (await tdb.db.pool.query(`SELECT message_id_header AS mid FROM messages`)).rows.map((x) => ({ messageId: x.mid, kept: true })) });
  assert.deepEqual(r.failures, ["1 messages answered 202 have no row", "1 Idempotency-Keys made more than one row (e.g. a: 2)"]);
});

test("500s, other statuses and 503s without Retry-After fail it", async () => {
  const a = await plant({ key: "a", status: "delivered" });
  const answers: Answer[] = [
    { status: 500, ms: 1, retryAfter: null },
    { status: 503, ms: 1, retryAfter: null },
    { status: 401, ms: 1, retryAfter: null },
    { status: 202, ms: 1, retryAfter: null },
  ];
  const r = await check({ sent: [{ key: "a", n: 0, answers, id: a.id, final: 202 }], copies: kept(a) });
  assert.deepEqual(r.failures, ["1 answers were 5xx other than 503 (1x500)", "1 answers were neither 202 nor 503 (e.g. 401)", "1 503 answers without Retry-After"]);
  assert.equal(r.figures.answers500, 1);
});

test("a delivered row the sink never kept, and an unexpected final status, fail it", async () => {
  const a = await plant({ key: "a", status: "delivered" });
  const f = await plant({ key: "f", status: "failed" });
  const r = await check({ sent: [ok202(a), ok202(f, 1)], copies: [{ messageId: a.mid, kept: false }], expected: new Map([["a", "delivered"], ["f", "delivered"]]) });
  assert.deepEqual(r.failures, [
    `1 delivered messages the sink never kept (e.g. ${a.mid})`,
    "1 recipients ended other than expected (e.g. f: failed, expected delivered; last reply null)",
  ]);
});
