// Fair queueing (issue 14, item 3): the claim takes due deliveries in turns across API keys,
// so one key's burst does not hold back another key's message, and "priority": "high" goes
// first within its own key's turn, never ahead of other keys' turns. A key alone is claimed
// in due order, as before. The claims here run the worker's statement on the real database;
// no worker runs, so the order is the statement's alone.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { claimDeliveries, type ClaimedDelivery } from "../../src/db/deliveries.ts";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { getMessage, sendMessage } from "../helpers/messages.ts";

let app: TestApp;

before(async () => {
  app = await startTestApp();
});

after(async () => {
  await app?.close();
});

const leases = { claimLeaseMs: 60_000, leaseMs: 60_000, startNow: 0 };

/** Sends `n` messages with one POST /send/batch call per hundred; returns their ids in order. */
async function burst(key: string, n: number, over: Record<string, unknown> = {}): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 100) {
    const messages = Array.from({ length: Math.min(100, n - i) }, (_, j) => validSend({ to: `user${i + j}@burst.test`, ...over }));
    const r = await app.call("POST", "/send/batch", { key, body: { messages } });
    assert.equal(r.status, 200, r.body);
    for (const item of (r.json() as { data: Array<{ id?: string; error?: unknown }> }).data) {
      assert.equal(item.error, undefined);
      ids.push(item.id!);
    }
  }
  return ids;
}

/** The claimed rows are in due order (oldest first) and are exactly `ids`, each once. */
function assertDueOrder(claimed: ClaimedDelivery[], ids: string[]) {
  for (let i = 1; i < claimed.length; i++) assert.ok(claimed[i - 1]!.createdAt <= claimed[i]!.createdAt, `row ${i} is claimed before an older one`);
  assert.deepEqual(claimed.map((d) => d.messageId).sort(), [...ids].sort());
}

/** Claims everything due in batches of `limit`, and hands it back so the next test starts from an empty queue. */
async function claimAll(limit: number): Promise<ClaimedDelivery[][]> {
  const pool = app.tdb.db.pool;
  const rounds: ClaimedDelivery[][] = [];
  for (;;) {
    const got = await claimDeliveries(pool, "fair", limit, leases);
    if (got.length === 0) break;
    rounds.push(got);
  }
  await pool.query(`UPDATE deliveries SET state = 'done', lease_owner = NULL WHERE state = 'pending'`);
  return rounds;
}

test("a lone message from another key is claimed in the first batch after a burst of 500, not after the burst", async () => {
  const [a, b] = [(await app.createKey({ name: "newsletter" })).key, (await app.createKey({ name: "resets" })).key];
  const burstIds = await burst(a, 500);
  const lone = await sendMessage(app, b, { to: "bob@lone.test", subject: "Your one-time code" });

  const rounds = await claimAll(20);
  const first = rounds[0]!.map((d) => d.messageId);
  assert.equal(first.length, 20);
  assert.ok(first.slice(0, 2).includes(lone), `the lone message is in the first turn: ${first.indexOf(lone)}`);
  // The burst's own order is kept: its rows come out oldest first, every one of them once.
  assertDueOrder(rounds.flat().filter((d) => d.messageId !== lone), burstIds);
});

test("a key alone is claimed in due order and in full batches: the turns cost a burst nothing", async () => {
  const { key } = await app.createKey({ name: "alone" });
  const ids = await burst(key, 120);
  const rounds = await claimAll(50);
  assert.deepEqual(rounds.map((r) => r.length), [50, 50, 20]);
  assertDueOrder(rounds.flat(), ids);
});

test("priority high goes ahead of its own key's queue, but not ahead of other keys' turns", async () => {
  const [a, b] = [(await app.createKey({ name: "shop" })).key, (await app.createKey({ name: "other" })).key];
  const newsletters = await burst(a, 200);
  const reset = await sendMessage(app, a, { to: "alice@reset.test", priority: "high" });
  assert.equal((await getMessage(app, a, reset)).priority, "high");
  assert.equal((await getMessage(app, a, newsletters[0]!)).priority, "normal");
  // Key B marks its whole burst high: that moves it ahead of nothing but its own mail.
  const allHigh = await burst(b, 200, { priority: "high" });

  const rounds = await claimAll(10);
  const first = rounds[0]!;
  assert.equal(first.length, 10);
  assert.equal(first[0]!.messageId === reset || first[1]!.messageId === reset, true, "the reset is in the first turn");
  assert.ok(first.find((d) => d.messageId === reset)!.highPriority);
  // Turns alternate between the two keys whatever their priorities: five rows each.
  assert.equal(first.filter((d) => newsletters.includes(d.messageId) || d.messageId === reset).length, 5);
  assert.equal(first.filter((d) => allHigh.includes(d.messageId)).length, 5);
  assert.equal(rounds.flat().length, 401);
});

test("a deferred row of a key is not in its turn before it is due, and does not hold the key's due rows back", async () => {
  const { key } = await app.createKey({ name: "deferred" });
  const ids = await burst(key, 30);
  const pool = app.tdb.db.pool;
  // The ten oldest are deferred an hour (a destination that is down).
  await pool.query(`UPDATE deliveries SET next_attempt_at = now() + interval '1 hour' WHERE message_id = ANY($1::uuid[])`, [ids.slice(0, 10)]);
  const got = await claimDeliveries(pool, "fair", 50, leases);
  assertDueOrder(got, ids.slice(10));
  await pool.query(`UPDATE deliveries SET state = 'done', lease_owner = NULL WHERE state = 'pending'`);
});

test("priority is checked like every field", async () => {
  const { key } = await app.createKey({ name: "bad" });
  const count = async () => Number((await app.tdb.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM messages`)).rows[0]!.n);
  const before = await count();
  const r = await app.call("POST", "/send", { key, body: validSend({ priority: "urgent" }) });
  assert.equal(r.status, 422, r.body);
  const problem = r.json() as { errors: Array<{ path: string; message: string }> };
  assert.equal(problem.errors[0]!.path, "priority");
  assert.match(problem.errors[0]!.message, /normal.*high/);
  assert.equal(await count(), before, "nothing stored");
});
