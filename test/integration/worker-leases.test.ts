// Leases that hold as long as the delivery needs them, and no longer (issue 8, items 2, 3
// and 6): a peer slower than the lease gets one copy; a result the database cannot take for
// a while is written when it comes back instead of the message being sent again; stop()
// keeps trying for its grace period and says what it could not write; the unstarted claims
// of a killed worker are due again after the short claim lease, not the whole lease.
// The database outage is a TCP proxy between the worker and Postgres, cut and restored.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { openDatabase } from "../../src/db/client.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import type { TestDatabase } from "../helpers/db.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { getMessage, sendMessage, waitForMessage } from "../helpers/messages.ts";
import { startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.ts";
import { waitFor } from "../helpers/wait.ts";
import { spawnTestWorker, startTestWorker } from "../helpers/worker.ts";


let app: TestApp;
let key: string;
let dns: FakeDns;
let port: number;
let slower: SmtpPeer; // 127.0.0.51: answers every final dot after 5 s, longer than a 2 s lease
let answersLate: SmtpPeer; // 127.0.0.52: answers every final dot after 1.5 s
let stalls: SmtpPeer; // 127.0.0.53: holds the reply to the final dot for a minute
let prompt: SmtpPeer; // 127.0.0.54: answers at once
let proxy: TcpProxy;
let proxied: TestDatabase;

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  slower = await startPeer({ ip: "127.0.0.51", dataDelay: { ms: 5000 } });
  port = slower.port;
  answersLate = await startPeer({ ip: "127.0.0.52", port, dataDelay: { ms: 1500 } });
  stalls = await startPeer({ ip: "127.0.0.53", port, dataDelay: { ms: 60_000 } });
  prompt = await startPeer({ ip: "127.0.0.54", port });
  dns = await startFakeDns({
    "slower.test": { MX: [{ preference: 10, exchange: "mx.slower.test" }] },
    "mx.slower.test": { A: ["127.0.0.51"] },
    "late.test": { MX: [{ preference: 10, exchange: "mx.late.test" }] },
    "mx.late.test": { A: ["127.0.0.52"] },
    "stalls.test": { MX: [{ preference: 10, exchange: "mx.stalls.test" }] },
    "mx.stalls.test": { A: ["127.0.0.53"] },
    "prompt.test": { MX: [{ preference: 10, exchange: "mx.prompt.test" }] },
    "mx.prompt.test": { A: ["127.0.0.54"] },
  });
  // The worker's own pool goes through the proxy; the API and the assertions do not.
  const target = new URL(app.tdb.url);
  proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  const url = proxy.urlFor(app.tdb.url);
  const db = openDatabase({ url, poolMax: 5, statementTimeoutMs: 2000, connectTimeoutMs: 1000 });
  proxied = { name: app.tdb.name, url, db, drop: () => db.close() };
});

after(async () => {
  await Promise.all([slower, answersLate, stalls, prompt].map((p) => p?.close()));
  await dns?.close();
  await proxied?.drop();
  await proxy?.close();
  await app?.close();
});

const workerEnv = () => ({ DNS_SERVERS: dns.address, SMTP_MX_PORT: String(port) });
const send = (body: Record<string, unknown>) => sendMessage(app, key, body);
const deliveryRow = (messageId: string) => app.tdb.db.prisma.delivery.findFirstOrThrow({ where: { messageId } });
const copiesTo = (peer: SmtpPeer, address: string) => peer.received.filter((r) => r.to.includes(address)).length;

/** A worker whose database connections go through the proxy; stopped at the end of the test unless stopped before. */
function proxiedWorker(t: TestContext, env: Record<string, string>, logs: string[]) {
  const w = startTestWorker(proxied, { ...workerEnv(), ...env }, logs);
  const stop = (graceMs = 5000) => w.stop(graceMs);
  t.after(async () => {
    await proxy.restore();
    await stop();
  });
  return { id: w.id, stop };
}

test("a peer that answers the final dot after longer than the lease gets one copy, and the message is delivered", async (t) => {
  const logs: string[] = [];
  // Lease 2 s (claim lease 1 s, renewals every 333 ms); the peer answers after 5 s.
  const w = startTestWorker(app.tdb, { ...workerEnv(), WORKER_LEASE_MS: "2000" }, logs);
  t.after(() => w.stop(10_000));
  const id = await send({ to: "patient@slower.test" });
  await waitFor(() => slower.received.length === 1, { what: "the message to reach the slow peer" });

  const m = await waitForMessage(app, key, id, ["delivered"], { logs, timeoutMs: 20_000 });
  assert.equal(copiesTo(slower, "patient@slower.test"), 1, "one copy, not one per lease");
  const d = await deliveryRow(id);
  assert.deepEqual({ attempts: d.attempts, state: d.state, lease: d.leaseOwner }, { attempts: 1, state: "done", lease: null });
  assert.deepEqual(m.recipients[0]!.delivery_attempts.map((a) => [a.attempt, a.outcome]), [[1, "delivered"]]);
  assert.equal(slower.received[0]!.reply, 250);
  assert.ok(!logs.some((l) => l.includes("lease lost")), "no attempt lost its lease");
});

test("a result the database cannot take for longer than the old 15 s retry window is written when it comes back: no duplicate", async (t) => {
  const logs: string[] = [];
  // Four deliveries in flight when the database goes away, a lease (40 s) longer than the
  // outage: the old worker gave up writing after ~15.5 s and sent all four again once the
  // lease ran out.
  proxiedWorker(t, { WORKER_LEASE_MS: "40000" }, logs);
  const to = ["a", "b", "c", "d"].map((x) => `${x}@late.test`);
  const ids = [];
  for (const address of to) ids.push(await send({ to: address }));
  await waitFor(() => answersLate.received.length === 4, { what: "all four messages to reach the peer" });

  await proxy.cut();
  await waitFor(() => answersLate.received.every((r) => r.reply === 250), { what: "the peer to accept all four", timeoutMs: 5000 });
  await waitFor(() => logs.filter((l) => l.includes("recording a delivery result failed")).length >= 4, { what: "all four result writes to fail" });
  // The outage itself: this is the length of the injected fault, not a wait for work.
  await delay(18_000);
  await proxy.restore();

  for (const id of ids) await waitForMessage(app, key, id, ["delivered"], { logs, timeoutMs: 15_000 });
  for (const address of to) assert.equal(copiesTo(answersLate, address), 1, `${address} got one copy`);
  for (const id of ids) {
    const d = await deliveryRow(id);
    assert.deepEqual({ attempts: d.attempts, state: d.state, lease: d.leaseOwner }, { attempts: 1, state: "done", lease: null });
  }
  assert.equal(logs.filter((l) => l.includes("delivery result recorded after the database came back")).length, 4);
  assert.ok(!logs.some((l) => l.includes("delivery attempt failed")), "no result was given up");
});

test("stop() during an outage keeps trying to write results for its grace period", async (t) => {
  const logs: string[] = [];
  const w = proxiedWorker(t, {}, logs);
  const id = await send({ to: "graceful@late.test" });
  await waitFor(() => copiesTo(answersLate, "graceful@late.test") === 1, { what: "the message to reach the peer" });
  await proxy.cut();
  const failures = () => logs.filter((l) => l.includes("recording a delivery result failed") || l.includes("delivery attempt failed")).length;
  await waitFor(() => failures() >= 1, { what: "the result write to fail", timeoutMs: 5000 });

  const stopped = w.stop(15_000);
  // A write that fails after stop() was called must not be the last one: the old worker
  // gave up there and left the row leased, to be sent again when the lease ran out.
  const before = failures();
  await waitFor(() => failures() > before, { what: "a write to fail after stop()", timeoutMs: 5000 });
  await proxy.restore();
  await stopped;

  const m = await getMessage(app, key, id);
  assert.equal(m.status, "delivered", `recorded before stop() returned; log: ${logs.slice(-3).join("")}`);
  const d = await deliveryRow(id);
  assert.deepEqual({ attempts: d.attempts, state: d.state, lease: d.leaseOwner }, { attempts: 1, state: "done", lease: null });
  assert.equal(copiesTo(answersLate, "graceful@late.test"), 1);
});

test("stop() whose grace period ends before the database returns says which result it could not write; the message is not lost", async (t) => {
  const logs: string[] = [];
  const w = proxiedWorker(t, { WORKER_LEASE_MS: "3000" }, logs);
  const id = await send({ to: "unlucky@late.test" });
  await waitFor(() => copiesTo(answersLate, "unlucky@late.test") === 1, { what: "the message to reach the peer" });
  await proxy.cut();
  await waitFor(() => logs.some((l) => l.includes("recording a delivery result failed")), { what: "the result write to fail", timeoutMs: 5000 });
  const d = await deliveryRow(id);

  await w.stop(500);
  const left = logs.find((l) => l.includes("stopped before this delivery's result could be recorded"));
  assert.ok(left, `the unwritten result is logged; log: ${logs.slice(-3).join("")}`);
  assert.deepEqual(
    { delivery: JSON.parse(left).delivery, message: JSON.parse(left).message, outcomes: JSON.parse(left).outcomes },
    { delivery: String(d.id), message: id, outcomes: ["delivered"] },
  );

  // At-least-once: once its lease runs out, another worker sends it again.
  await proxy.restore();
  const next = startTestWorker(app.tdb, workerEnv(), logs);
  t.after(() => next.stop());
  await waitForMessage(app, key, id, ["delivered"], { logs, timeoutMs: 15_000 });
  assert.equal(copiesTo(answersLate, "unlucky@late.test"), 2, "sent again, since the first result was never written");
  assert.equal((await deliveryRow(id)).attempts, 2);
});

test("a killed worker's claimed but unstarted deliveries are due again after the claim lease, not the whole lease", async (t) => {
  const logs: string[] = [];
  // Two stall in flight; two more wait in the backlog (concurrency 2, claims of 4).
  const stalled = [await send({ to: "s1@stalls.test" }), await send({ to: "s2@stalls.test" })];
  const waiting = [await send({ to: "w1@prompt.test" }), await send({ to: "w2@prompt.test" })];
  const { child, output, exited } = spawnTestWorker(t, app.tdb, {
    WORKER_ID: "killed-with-a-backlog",
    WORKER_CONCURRENCY: "2",
    WORKER_BATCH_SIZE: "4",
    WORKER_LEASE_MS: "60000",
    WORKER_CLAIM_LEASE_MS: "1500",
    ...workerEnv(),
  });

  await waitFor(() => stalls.received.length === 2 || child.exitCode !== null, { what: "the child to start both stalling deliveries", timeoutMs: 20_000 })
    .catch((err: Error) => Promise.reject(new Error(`${err.message}; child output: ${output.join("")}`)));
  for (const id of waiting) {
    const d = await deliveryRow(id);
    assert.deepEqual({ owner: d.leaseOwner, attempts: d.attempts }, { owner: "killed-with-a-backlog", attempts: 1 }, "claimed, waiting in the backlog");
  }
  assert.equal(prompt.received.length, 0, "the backlog was not started");
  child.kill("SIGKILL");
  await exited;
  const killedAt = Date.now();

  const w = startTestWorker(app.tdb, workerEnv(), logs);
  t.after(() => w.stop());
  for (const id of waiting) await waitForMessage(app, key, id, ["delivered"], { logs, timeoutMs: 15_000 });
  const tookMs = Date.now() - killedAt;
  assert.ok(tookMs < 15_000, `picked up within ${tookMs} ms of the kill, far below the 60 s lease`);
  for (const id of waiting) assert.equal((await deliveryRow(id)).attempts, 2, "claimed by the killed worker, then by the new one");
  assert.equal(prompt.received.length, 2, "each sent once");
  // What was under way keeps its full lease: the new worker does not send it again yet.
  for (const id of stalled) {
    const d = await deliveryRow(id);
    assert.deepEqual({ owner: d.leaseOwner, state: d.state }, { owner: "killed-with-a-backlog", state: "pending" });
    assert.ok(d.nextAttemptAt.getTime() > Date.now() + 30_000, "the delivery under way kept its full lease");
  }
  assert.equal(stalls.received.length, 2);
});
