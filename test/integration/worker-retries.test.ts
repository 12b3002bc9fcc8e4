// Retries and timing of delivery, end to end: POST /send, a real worker, MX answers from
// a fake DNS server, smtp-server peers on 127.0.0.2x that fail once (or always) the way
// real servers do, and the outcome read back through the API. Each test starts its own
// worker, so one can run with a different SMTP_MAX_RETRY without touching the others.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { startPeer, type PeerOptions, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { getMessage, messageIdOf, sendMessage, waitForMessage } from "../helpers/messages.ts";
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
  assert.equal((await getMessage(app, key, keptId)).status, "scheduled");
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
