// Retries and timing of delivery, end to end: POST /send, a real worker, MX answers from
// a fake DNS server, smtp-server peers on 127.0.0.2x that fail once (or always) the way
// real servers do, and the outcome read back through the API. Each test starts its own
// worker, so one can run with a different SMTP_MAX_RETRY without touching the others.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { isPastLifetime } from "../../src/domain/retry-lifetime.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { startPeer, type PeerOptions, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { getMessage, messageIdOf, sendMessage, waitForMessage, type MessageView } from "../helpers/messages.ts";
import { waitFor } from "../helpers/wait.ts";

let app: TestApp;
let key: string;
let dns: FakeDns;
let port: number;
const logs: string[] = [];

// One peer and one recipient domain per behaviour; all peers share a port (SMTP_MX_PORT
// is one setting) on their own loopback address.
const PEERS = {
  // Greeting 421 once (RFC 5321 3.8: "service not available"), then a normal server.
  busyOnce: { ip: "127.0.0.21", greeting: { code: 421, message: "4.3.2 too busy, try again later", times: 1 } },
  // Greylisting: 451 to the first RCPT of this address (RFC 6647), accepted on retry.
  // (smtp-server puts its own RFC 3463 code in front of RCPT and DATA replies.)
  greylist: { ip: "127.0.0.22", rcpt: { "grey@greylist.test": { code: 451, message: "greylisted, try again later", times: 1 } } },
  // 552 after the final dot (RFC 5321 4.2.5): the message is refused for good.
  tooBig: { ip: "127.0.0.23", data: { code: 552, message: "message exceeds fixed size limit" } },
  // Takes the whole message, then drops the connection instead of replying, once.
  dropOnce: { ip: "127.0.0.24", data: { drop: true, times: 1 } },
  // Greeting 421 every time: a deferral that never ends.
  alwaysBusy: { ip: "127.0.0.25", greeting: { code: 421, message: "4.3.2 still too busy" } },
  // An ordinary server, for scheduled mail.
  plain: { ip: "127.0.0.26" },
  // 451 to every RCPT of these addresses: a deferral that lasts.
  later: {
    ip: "127.0.0.27",
    rcpt: {
      "wait@later.test": { code: 451, message: "mailbox busy, try again later" },
      "giveup@later.test": { code: 451, message: "mailbox busy, try again later" },
    },
  },
} satisfies Record<string, PeerOptions>;
type PeerName = keyof typeof PEERS;
const peers = {} as Record<PeerName, SmtpPeer>;
const domainOf = (name: PeerName) => `${name.toLowerCase()}.test`;

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  for (const name of Object.keys(PEERS) as PeerName[]) {
    peers[name] = await startPeer({ ...PEERS[name], ...(port ? { port } : {}) });
    port ??= peers[name].port;
  }
  dns = await startFakeDns(
    Object.fromEntries(
      (Object.keys(PEERS) as PeerName[]).flatMap((name) => [
        [domainOf(name), { MX: [{ preference: 10, exchange: `mx.${domainOf(name)}` }] }],
        [`mx.${domainOf(name)}`, { A: [PEERS[name].ip] }],
      ]),
    ),
  );
});

after(async () => {
  await Promise.all(Object.values(peers).map((p) => p.close()));
  await dns?.close();
  await app?.close();
});

/** A worker for this test only, stopped when it ends. */
function useWorker(t: TestContext, env: Record<string, string> = {}) {
  const w = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(port), ...env }, logs);
  t.after(() => w.stop(5000));
  return w;
}

const send = (body: Record<string, unknown>) => sendMessage(app, key, body);
const settled = (id: string, statuses?: string[]) => waitForMessage(app, key, id, statuses, { logs });
const outcomes = (m: { recipients: Array<{ delivery_attempts: Array<{ outcome: string }> }> }) =>
  m.recipients[0]!.delivery_attempts.map((a) => a.outcome);
const copiesFor = (peer: SmtpPeer, address: string) => peer.received.filter((r) => r.to.includes(address));
const deliveryRow = (messageId: string) => app.tdb.db.prisma.delivery.findFirstOrThrow({ where: { messageId } });

test("421 at the greeting defers, and the retry delivers", async (t) => {
  useWorker(t);
  const id = await send({ to: "ann@busyonce.test" });
  const m = await settled(id, ["delivered"]);
  assert.deepEqual(outcomes(m), ["deferred", "delivered"]);
  const [first, second] = m.recipients[0]!.delivery_attempts;
  assert.equal(first!.smtp.code, 421);
  assert.equal(first!.smtp.enhanced_code, "4.3.2");
  assert.equal(first!.attempt, 1);
  assert.equal(second!.attempt, 2);
  assert.equal(m.recipients[0]!.attempts, 2);
  assert.equal(copiesFor(peers.busyOnce, "ann@busyonce.test").length, 1);
  assert.deepEqual(peers.busyOnce.sessions[0]!.mailFrom, [], "nothing was sent to the refusing session");
});

test("451 at RCPT (greylisting) defers, and the retry delivers", async (t) => {
  useWorker(t);
  const id = await send({ to: "grey@greylist.test" });
  const m = await settled(id, ["delivered"]);
  assert.deepEqual(outcomes(m), ["deferred", "delivered"]);
  const first = m.recipients[0]!.delivery_attempts[0]!;
  assert.equal(first.smtp.code, 451);
  assert.match(first.smtp.enhanced_code ?? "", /^4\./);
  assert.match(first.smtp.text ?? "", /greylisted/);
  assert.equal(copiesFor(peers.greylist, "grey@greylist.test").length, 1, "the refused RCPT got no DATA");
  // Two RCPTs for the address (the retry may reuse the pooled session of the first).
  assert.equal(peers.greylist.sessions.flatMap((s) => s.rcptTo).filter((a) => a === "grey@greylist.test").length, 2);
});

test("552 after the final dot bounces at once: no retry is scheduled", async (t) => {
  useWorker(t);
  const id = await send({ to: "big@toobig.test" });
  const m = await settled(id, ["bounced"]);
  const r = m.recipients[0]!;
  assert.equal(r.status, "bounced");
  assert.equal(r.attempts, 1);
  assert.deepEqual(outcomes(m), ["bounced"]);
  assert.equal(r.last_response?.code, 552);
  assert.match(r.last_response?.enhanced_code ?? "", /^5\./);
  assert.match(r.last_response?.text ?? "", /exceeds fixed size limit/);
  // The queue row is finished: no later attempt can send it again.
  const d = await deliveryRow(id);
  assert.equal(d.state, "done");
  assert.equal(d.leaseOwner, null);
  assert.deepEqual(copiesFor(peers.tooBig, "big@toobig.test").map((c) => c.reply), [552]);
});

test("a connection lost after the final dot is retried: a duplicate is allowed, a loss is not; Message-ID is stable", async (t) => {
  useWorker(t);
  const id = await send({ to: "dup@droponce.test" });
  const m = await settled(id, ["delivered"]);
  assert.deepEqual(outcomes(m), ["deferred", "delivered"]);
  const first = m.recipients[0]!.delivery_attempts[0]!;
  assert.equal(first.smtp.code, null, "no reply came");
  assert.equal(first.smtp.enhanced_code, "4.4.2");
  // RFC 5321 6.1: after the dot the server may have the message, so at-least-once means
  // the peer holds one copy per attempt, and every copy carries the same Message-ID so a
  // receiver can recognise the duplicate (RFC 5322 3.6.4).
  const copies = copiesFor(peers.dropOnce, "dup@droponce.test");
  assert.ok(copies.length >= 1);
  assert.deepEqual(copies.map((c) => c.reply), [null, 250]);
  const ids = new Set(copies.map((c) => messageIdOf(c.data)));
  assert.equal(ids.size, 1, `one Message-ID across retries, got ${[...ids].join(", ")}`);
  assert.equal([...ids][0], `<${m.message_id.replace(/^<|>$/g, "")}>`);
});

test("SMTP_MAX_RETRY turns a deferral that never ends into failed, with the last reason", async (t) => {
  useWorker(t, { SMTP_MAX_RETRY: "300ms" });
  const id = await send({ to: "zed@alwaysbusy.test" });
  const m = await settled(id, ["failed"]);
  const r = m.recipients[0]!;
  assert.equal(r.status, "failed");
  assert.ok(r.delivery_attempts.length >= 1);
  assert.ok(r.delivery_attempts.every((a) => a.outcome === "deferred" && a.smtp.code === 421), JSON.stringify(r.delivery_attempts));
  assert.equal(r.last_response?.code, 421);
  assert.equal(r.last_response?.enhanced_code, "4.3.2");
  assert.match(r.last_response?.text ?? "", new RegExp(`^gave up after ${r.delivery_attempts.length} attempts: .*still too busy`));
  const d = await deliveryRow(id);
  assert.equal(d.state, "done", "a failed delivery is never claimed again");
  assert.equal(copiesFor(peers.alwaysBusy, "zed@alwaysbusy.test").length, 0);
});

test("a scheduled message is not delivered before send_at; a cancelled one is never delivered", async (t) => {
  useWorker(t);
  // Far enough ahead that the cancel below lands before the worker could claim anything,
  // even on a loaded machine.
  const sendAt = new Date(Date.now() + 2500);
  const keptId = await send({ to: "later@plain.test", send_at: sendAt.toISOString() });
  // Due before the kept one: by the time the kept one is delivered, this one would have
  // been claimed too had the cancel not taken it out of the queue.
  const cancelledId = await send({ to: "never@plain.test", send_at: new Date(sendAt.getTime() - 300).toISOString() });
  const scheduled = await getMessage(app, key, keptId);
  assert.equal(scheduled.status, "scheduled");
  // Due at send_at; SMTP_MAX_RETRY counts from then, not from when it was accepted.
  assert.equal(scheduled.recipients[0]!.next_attempt_at, sendAt.toISOString());
  assert.equal(scheduled.recipients[0]!.expires_at, new Date(sendAt.getTime() + app.config.SMTP_MAX_RETRY).toISOString());
  const c = await app.call("POST", `/messages/${cancelledId}/cancel`, { key });
  assert.equal(c.status, 200, c.body);
  assert.equal(c.json().status, "cancelled");

  // Watch the peer for as long as the message says it is scheduled.
  let scheduledPolls = 0;
  let copiesWhileScheduled = 0;
  const m = await waitFor(
    async () => {
      const view = await getMessage(app, key, keptId);
      if (view.status === "scheduled") {
        scheduledPolls++;
        copiesWhileScheduled += peers.plain.received.length;
      }
      return view.status === "delivered" ? view : null;
    },
    { what: "the scheduled message to be delivered", timeoutMs: 15_000 },
  );
  assert.ok(scheduledPolls > 0, "the message was seen scheduled");
  assert.equal(copiesWhileScheduled, 0, "nothing reached the peer while the message was scheduled");
  const attempt = m.recipients[0]!.delivery_attempts[0]!;
  assert.ok(new Date(attempt.started_at).getTime() >= sendAt.getTime(), `attempt at ${attempt.started_at}, send_at ${sendAt.toISOString()}`);
  assert.equal(copiesFor(peers.plain, "later@plain.test").length, 1);

  const cancelled = await getMessage(app, key, cancelledId);
  assert.equal(cancelled.status, "cancelled");
  assert.deepEqual(cancelled.recipients.map((r) => [r.status, r.attempts]), [["cancelled", 0]]);
  const d = await deliveryRow(cancelledId);
  assert.equal(d.state, "cancelled");
  assert.equal(d.attempts, 0, "never claimed");
  assert.ok(peers.plain.sessions.every((s) => !s.rcptTo.includes("never@plain.test")), "never offered to the peer");
});

test("a deferred recipient shows when its next attempt is due and when retrying ends", async (t) => {
  // The worker's lifetime is the API's (SMTP_MAX_RETRY defaults to 3 days in both); the
  // next attempt is an hour away.
  const w = useWorker(t, { SMTP_RETRY_MIN: "1h", SMTP_RETRY_MAX: "1h" });
  assert.equal(w.config.SMTP_MAX_RETRY, app.config.SMTP_MAX_RETRY);
  const id = await send({ to: "wait@later.test" });
  const early = (await getMessage(app, key, id)).recipients[0]!;
  assert.ok(early.expires_at, `a recipient not yet final (${early.status}) has an end of retries`);

  const m = await settled(id, ["deferred"]);
  const r = m.recipients[0]!;
  const seenAt = Date.now();
  assert.equal(r.status, "deferred");
  assert.equal(r.last_response?.code, 451);
  assert.ok(r.next_attempt_at && r.expires_at, JSON.stringify(r));
  const next = Date.parse(r.next_attempt_at);
  const expires = Date.parse(r.expires_at);
  // Both are in the future, the next attempt an hour (+-20% jitter) after the first one.
  const attemptAt = Date.parse(r.delivery_attempts[0]!.started_at);
  assert.ok(next > seenAt, `next_attempt_at ${r.next_attempt_at} is in the future`);
  assert.ok(next >= attemptAt + 0.8 * 3_600_000 && next <= attemptAt + 1.2 * 3_600_000 + 60_000, r.next_attempt_at);
  assert.ok(expires > next, "retrying ends after the next attempt");
  // They are what the queue row holds and the rule the worker applies to it.
  const row = await deliveryRow(id);
  assert.equal(next, row.nextAttemptAt.getTime());
  assert.equal(expires, Date.parse(m.created_at) + w.config.SMTP_MAX_RETRY, "SMTP_MAX_RETRY after the message was accepted");
  assert.equal(isPastLifetime(row.createdAt, w.config.SMTP_MAX_RETRY, new Date(expires - 1)), false);
  assert.equal(isPastLifetime(row.createdAt, w.config.SMTP_MAX_RETRY, new Date(expires)), true);
});

test("expires_at is when the worker gives up: deferrals before it are retried, the first one after it fails", async (t) => {
  // An API and a worker that agree on a short lifetime, over the same database.
  const lifetime = { SMTP_MAX_RETRY: "1500ms" };
  const api = await startTestApp(lifetime, { tdb: app.tdb });
  t.after(() => api.close());
  useWorker(t, { ...lifetime, SMTP_RETRY_MIN: "300ms", SMTP_RETRY_MAX: "300ms" });
  const id = await sendMessage(api, key, { to: "giveup@later.test" });
  const deferredViews: MessageView[] = [];
  const failed = await waitFor(
    async () => {
      const v = await getMessage(api, key, id);
      if (v.status === "deferred") deferredViews.push(v);
      return v.status === "failed" ? v : null;
    },
    { what: "the recipient to fail", timeoutMs: 15_000 },
  );
  assert.ok(deferredViews.length > 0, "the recipient was seen deferred");
  const expiresAt = Date.parse(deferredViews[0]!.recipients[0]!.expires_at!);
  assert.equal(expiresAt, Date.parse(failed.created_at) + 1500);
  for (const v of deferredViews) {
    const r = v.recipients[0]!;
    assert.equal(Date.parse(r.expires_at!), expiresAt, "expires_at does not move");
    const last = r.delivery_attempts.at(-1)!;
    assert.ok(r.next_attempt_at && Date.parse(r.next_attempt_at) > Date.parse(last.started_at), "a next attempt after the last one");
  }
  const r = failed.recipients[0]!;
  assert.equal(r.next_attempt_at, null);
  assert.equal(r.expires_at, null);
  assert.ok(r.delivery_attempts.length >= 2, "retried before giving up");
  assert.ok(r.delivery_attempts.every((a) => a.outcome === "deferred"));
  // Every attempt but the last was decided (and so started) before expires_at; the last
  // one was decided at or after it (the row's updated_at is written after the decision).
  for (const a of r.delivery_attempts.slice(0, -1)) assert.ok(Date.parse(a.started_at) < expiresAt, `attempt ${a.attempt} at ${a.started_at}`);
  const row = await app.tdb.db.prisma.recipient.findFirstOrThrow({ where: { messageId: id } });
  assert.ok(row.updatedAt.getTime() >= expiresAt, `gave up at ${row.updatedAt.toISOString()}, expires_at ${new Date(expiresAt).toISOString()}`);
  assert.match(r.last_response?.text ?? "", /^gave up after \d+ attempts: /);
});
