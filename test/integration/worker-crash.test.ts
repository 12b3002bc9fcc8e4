// What the queue promises when workers compete, crash or stop (ARCHITECTURE.md, "Leases and fences"):
// two workers on one database never deliver a recipient twice in normal operation; a
// worker killed with SIGKILL mid-delivery loses nothing (its lease runs out and another
// worker finishes: at-least-once, a duplicate is allowed); stop() lets in-flight work
// finish, or hands its leases back when the grace period runs out.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { spawnTestWorker, startTestWorker } from "../helpers/worker.ts";
import { getMessage, sendMessage, waitForMessage } from "../helpers/messages.ts";
import { waitFor } from "../helpers/wait.ts";


let app: TestApp;
let key: string;
let dns: FakeDns;
let port: number;
let busy: SmtpPeer; // 127.0.0.41: takes everything at once
let stallsOnce: SmtpPeer; // 127.0.0.42: holds the reply to the first final dot for a minute
let slow: SmtpPeer; // 127.0.0.43: answers every final dot after 700 ms
const logs: string[] = [];

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  busy = await startPeer({ ip: "127.0.0.41" });
  port = busy.port;
  stallsOnce = await startPeer({ ip: "127.0.0.42", port, dataDelay: { ms: 60_000, times: 1 } });
  slow = await startPeer({ ip: "127.0.0.43", port, dataDelay: { ms: 700 } });
  dns = await startFakeDns({
    "a.crash.test": { MX: [{ preference: 10, exchange: "mx.busy.test" }] },
    "b.crash.test": { MX: [{ preference: 10, exchange: "mx.busy.test" }] },
    "mx.busy.test": { A: ["127.0.0.41"] },
    "killed.test": { MX: [{ preference: 10, exchange: "mx.killed.test" }] },
    "mx.killed.test": { A: ["127.0.0.42"] },
    "slow.test": { MX: [{ preference: 10, exchange: "mx.slow.test" }] },
    "mx.slow.test": { A: ["127.0.0.43"] },
  });
});

after(async () => {
  await Promise.all([busy, stallsOnce, slow].map((p) => p?.close()));
  await dns?.close();
  await app?.close();
});

const workerEnv = () => ({ DNS_SERVERS: dns.address, SMTP_MX_PORT: String(port) });

/** A worker for this test; `stop` may be called early, and is called again at the end. */
function useWorker(t: TestContext) {
  const w = startTestWorker(app.tdb, workerEnv(), logs);
  const stop = (graceMs = 5000) => w.stop(graceMs);
  t.after(() => stop());
  return { id: w.id, stop };
}

const send = (body: Record<string, unknown>) => sendMessage(app, key, body);
const deliveryRow = (messageId: string) => app.tdb.db.prisma.delivery.findFirstOrThrow({ where: { messageId } });
const leasesHeld = () => app.tdb.db.prisma.delivery.count({ where: { leaseOwner: { not: null } } });

test("two workers on one database deliver every recipient exactly once", async (t) => {
  // Two domains per message: two queue rows of one message finish at the same time, on
  // different workers, and both update the message's status.
  const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => send({ to: [`r${i}@a.crash.test`, `r${i}@b.crash.test`] })));
  // The backlog exists before either worker starts, so they race for the same rows.
  const [w1, w2] = [useWorker(t), useWorker(t)];
  assert.notEqual(w1.id, w2.id);
  const prisma = app.tdb.db.prisma;
  await waitFor(async () => (await prisma.message.count({ where: { id: { in: ids }, status: "delivered" } })) === ids.length, {
    what: "all 40 messages to be delivered",
    timeoutMs: 20_000,
  }).catch(async (err: Error) => {
    const byStatus = await prisma.message.groupBy({ by: ["status"], where: { id: { in: ids } }, _count: true });
    throw new Error(`${err.message}: ${JSON.stringify(byStatus)}; log tail: ${logs.slice(-3).join("")}`);
  });

  const copies = new Map<string, number>();
  for (const r of busy.received) for (const to of r.to) copies.set(to, (copies.get(to) ?? 0) + 1);
  assert.equal(copies.size, 80, "every recipient arrived");
  const twice = [...copies].filter(([, n]) => n !== 1);
  assert.deepEqual(twice, [], "no recipient arrived twice");
  const rows = await prisma.delivery.findMany({ where: { messageId: { in: ids } }, select: { attempts: true, state: true, leaseOwner: true } });
  assert.equal(rows.length, 80);
  assert.ok(rows.every((r) => r.attempts === 1 && r.state === "done" && r.leaseOwner === null), "each row claimed once, finished, released");
  // Both took part (each claims at most WORKER_CONCURRENCY rows at a time, 80 rows in all).
  const recordedBy = (id: string) => logs.filter((l) => l.includes(`"worker":"${id}"`) && l.includes("delivery attempt recorded")).length;
  assert.equal(recordedBy(w1.id) + recordedBy(w2.id), 80);
  assert.ok(recordedBy(w1.id) > 0 && recordedBy(w2.id) > 0, `work was shared: ${recordedBy(w1.id)} / ${recordedBy(w2.id)}`);
  assert.ok(!logs.some((l) => l.includes("delivery attempt failed")), "no attempt failed to record (e.g. a deadlock)");
});

test("a worker killed with SIGKILL mid-delivery loses nothing: another finishes after the lease", async (t) => {
  const id = await send({ to: "victim@killed.test" });
  // A separate process, built by startWorker() from the environment like `sealpost worker`,
  // with a short lease so the test need not wait minutes for it to run out.
  const { child, output, exited } = spawnTestWorker(t, app.tdb, { WORKER_ID: "doomed-worker", WORKER_LEASE_MS: "1500", ...workerEnv() });

  // The peer has the whole message and the child waits for the reply to the final dot.
  await waitFor(() => stallsOnce.received.length === 1 || child.exitCode !== null, { what: "the child to send the message", timeoutMs: 20_000 })
    .catch((err: Error) => Promise.reject(new Error(`${err.message}; child output: ${output.join("")}`)));
  assert.equal(child.exitCode, null, `the child is still running: ${output.join("")}`);
  const leased = await deliveryRow(id);
  assert.equal(leased.leaseOwner, "doomed-worker");
  assert.equal(leased.attempts, 1);

  child.kill("SIGKILL");
  await exited;
  assert.equal(child.signalCode, "SIGKILL");

  useWorker(t);
  const m = await waitForMessage(app, key, id, ["delivered"], { logs });
  const d = await deliveryRow(id);
  assert.equal(d.attempts, 2, "claimed by the killed worker, then once more");
  assert.equal(d.state, "done");
  assert.equal(d.leaseOwner, null);
  // The killed attempt recorded nothing; the second one waited for the lease to run out.
  const attempts = m.recipients[0]!.delivery_attempts;
  assert.deepEqual(attempts.map((a) => [a.attempt, a.outcome]), [[2, "delivered"]]);
  assert.ok(new Date(attempts[0]!.started_at) >= leased.nextAttemptAt, `retried at ${attempts[0]!.started_at}, lease until ${leased.nextAttemptAt.toISOString()}`);
  // At-least-once: the peer has the copy nobody acknowledged and the delivered one.
  assert.deepEqual(stallsOnce.received.map((r) => [r.to, r.reply]), [[["victim@killed.test"], null], [["victim@killed.test"], 250]]);
});

test("stop() while a delivery is in flight waits for it, records the result and holds no lease", async (t) => {
  const w = useWorker(t);
  const id = await send({ to: "patient@slow.test" });
  await waitFor(() => slow.received.length === 1, { what: "the message to reach the slow peer" });
  assert.equal((await deliveryRow(id)).leaseOwner, w.id, "in flight");
  assert.equal(slow.received[0]!.reply, null, "not answered yet");

  await w.stop(10_000);
  // Recorded before stop() returned, not some time later.
  const d = await deliveryRow(id);
  assert.equal(d.state, "done");
  assert.equal(d.leaseOwner, null);
  assert.equal(await leasesHeld(), 0);
  assert.equal((await getMessage(app, key, id)).status, "delivered");
  assert.equal(slow.received[0]!.reply, 250);
  // And the worker's pooled SMTP sessions are closed too.
  await slow.waitForIdle(3000);
});

test("stop() whose grace period runs out hands the lease back; the late result is fenced out", async (t) => {
  const first = useWorker(t);
  const id = await send({ to: "impatient@slow.test" });
  const before = slow.received.length;
  await waitFor(() => slow.received.length === before + 1, { what: "the message to reach the slow peer" });

  await first.stop(50);
  const released = await deliveryRow(id);
  assert.equal(released.leaseOwner, null, "the lease was handed back");
  assert.equal(released.state, "pending");
  assert.ok(released.nextAttemptAt.getTime() <= Date.now() + 1000, "due again at once, not after the lease");

  // Another worker takes it over at once. The first worker's SMTP session is still going;
  // when its reply comes, its write is refused by the fence (lease owner and attempt number).
  useWorker(t);
  const m = await waitForMessage(app, key, id, ["delivered"], { logs });
  await waitFor(() => logs.some((l) => l.includes(`"worker":"${first.id}"`) && l.includes("lease lost")), {
    what: "the first worker's late result to be refused",
  });
  const d = await deliveryRow(id);
  assert.equal(d.attempts, 2);
  assert.deepEqual(m.recipients[0]!.delivery_attempts.map((a) => a.attempt), [2], "only the attempt that owned the row recorded evidence");
  assert.equal(m.recipients[0]!.attempts, 1);
  assert.equal(slow.received.filter((r) => r.to.includes("impatient@slow.test")).length, 2, "at-least-once: a duplicate, not a loss");
});

test("stop() hands back deliveries it claimed but never started, as they were: queued and cancellable", async (t) => {
  // Both queued before the worker starts, and one slot: its first claim takes both, one
  // goes in flight and the other waits in the backlog.
  const before = slow.received.length;
  const first = await send({ to: "one@slow.test" });
  const second = await send({ to: "two@slow.test" });
  const w = startTestWorker(app.tdb, { ...workerEnv(), WORKER_CONCURRENCY: "1", WORKER_BATCH_SIZE: "5" }, logs);
  let stopped = false;
  t.after(() => (stopped ? undefined : w.stop(5000)));
  await waitFor(() => slow.received.length === before + 1, { what: "the first message to reach the slow peer" });
  assert.equal((await deliveryRow(second)).leaseOwner, w.id, "the second is claimed, waiting in the backlog");
  assert.equal((await getMessage(app, key, second)).status, "sending");

  await w.stop(10_000);
  stopped = true;
  assert.equal((await getMessage(app, key, first)).status, "delivered");
  const d = await deliveryRow(second);
  assert.deepEqual({ lease: d.leaseOwner, attempts: d.attempts, state: d.state }, { lease: null, attempts: 0, state: "pending" });
  const m = await getMessage(app, key, second);
  assert.equal(m.status, "queued");
  assert.equal(m.recipients[0]!.status, "queued");
  assert.equal(slow.received.length, before + 1, "the second was never sent");
  const cancel = await app.call("POST", `/messages/${second}/cancel`, { key });
  assert.equal(cancel.status, 200, cancel.body);
});
