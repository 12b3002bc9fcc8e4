// The whole delivery path: POST /send over HTTPS, a real worker, MX lookups against a
// fake DNS server, real smtp-server peers with a test CA on 127.0.0.x, and the
// evidence read back through the API.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { startPeer, TEST_MX_HOST, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import type { WorkerHandle } from "../../src/worker/worker.ts";

let t: TestApp;
let key: string;
let dns: FakeDns;
let good: SmtpPeer; // 127.0.0.2: CA-signed for mx.example.test, TLS 1.3
let selfSigned: SmtpPeer; // 127.0.0.3
let refusing: SmtpPeer; // 127.0.0.4: 550 for bounce@, 451 for later@ (first time)
let port: number;
let worker: WorkerHandle;
const workerLogs: string[] = [];

before(async () => {
  t = await startTestApp();
  key = (await t.createKey()).key;
  good = await startPeer({ ip: "127.0.0.2" });
  port = good.port;
  selfSigned = await startPeer({ ip: "127.0.0.3", port, certificate: "self-signed" });
  refusing = await startPeer({ ip: "127.0.0.4", port, rcpt: { "bounce@refusing.test": { code: 550, message: "5.1.1 no such user" } } });
  dns = await startFakeDns({
    "good.test": { MX: [{ preference: 10, exchange: TEST_MX_HOST }] },
    [TEST_MX_HOST]: { A: ["127.0.0.2"] },
    "selfsigned.test": { MX: [{ preference: 10, exchange: "mx.selfsigned.test" }] },
    "mx.selfsigned.test": { A: ["127.0.0.3"] },
    // First MX has no listener (127.0.0.9): the worker must fall back to the second.
    "fallback.test": { MX: [{ preference: 5, exchange: "dead.fallback.test" }, { preference: 20, exchange: TEST_MX_HOST }] },
    "dead.fallback.test": { A: ["127.0.0.9"] },
    "implicit.test": { A: ["127.0.0.2"] },
    "refusing.test": { MX: [{ preference: 10, exchange: "mx.refusing.test" }] },
    "mx.refusing.test": { A: ["127.0.0.4"] },
    "nullmx.test": { MX: [{ preference: 0, exchange: "." }] },
    "broken.test": { rcode: "SERVFAIL" },
  });
  worker = startTestWorker(t.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(port) }, workerLogs);
});

after(async () => {
  await worker?.stop(2000);
  await Promise.all([good, selfSigned, refusing].map((p) => p?.close()));
  await dns?.close();
  await t?.close();
});

const send = (body: Record<string, unknown>) => sendMessage(t, key, body);

/** Untyped: the tests below index the view freely. */
const settled = (id: string, final = ["delivered", "partially_delivered", "bounced", "failed", "deferred"]): Promise<any> =>
  waitForMessage(t, key, id, final, { logs: workerLogs, until: (m) => m.recipients.every((x) => x.attempts > 0) });

test("delivers over verified TLS 1.3 and shows the evidence", async () => {
  const id = await send({ to: "alice@good.test", tls: "required" });
  const m = await settled(id, ["delivered"]);
  const a = m.recipients[0].delivery_attempts[0];
  assert.equal(a.outcome, "delivered");
  assert.equal(a.mx_host, TEST_MX_HOST);
  assert.equal(a.ip, "127.0.0.2");
  assert.equal(a.policy, "required");
  assert.equal(a.tls.used, true);
  assert.equal(a.tls.version, "TLSv1.3");
  assert.equal(a.tls.verified, true);
  assert.match(a.tls.certificate.fingerprint_sha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  assert.match(a.tls.certificate.subject, /CN=mx\.example\.test/);
  assert.equal(a.smtp.code, 250);
  const got = good.received.find((r) => r.to.includes("alice@good.test"));
  assert.ok(got, "the peer received the message");
  assert.equal(got.secure, true);
  assert.match(got.data.toString(), new RegExp(`Message-ID: <${id}@shop.example>`));
  assert.match(got.data.toString(), /Subject: Reset your password/);
  const events = (await t.call("GET", `/messages/${id}/events`, { key })).json();
  assert.equal(events.events.length, 1);
  assert.equal(events.events[0].recipient, "alice@good.test");
});

test("required + self-signed peer: deferred, nothing sent; opportunistic delivers and says why it did not verify", async () => {
  const before = selfSigned.received.length;
  const reqId = await send({ to: "bob@selfsigned.test", tls: "required" });
  const m = await settled(reqId, ["deferred"]);
  const a = m.recipients[0].delivery_attempts[0];
  assert.equal(a.outcome, "deferred");
  assert.equal(a.tls.verified, false);
  assert.equal(a.tls.verify_error, "DEPTH_ZERO_SELF_SIGNED_CERT");
  assert.equal(a.smtp.enhanced_code, "4.7.5");
  assert.equal(selfSigned.received.length, before, "a required-policy message never reaches an unverified peer");
  assert.ok(selfSigned.sessions.every((s) => s.mailFrom.length === 0), "not even MAIL FROM was sent");

  const oppId = await send({ to: "carol@selfsigned.test" });
  const o = await settled(oppId, ["delivered"]);
  const oa = o.recipients[0].delivery_attempts[0];
  assert.equal(oa.tls.used, true);
  assert.equal(oa.tls.verified, false);
  assert.equal(oa.tls.verify_error, "DEPTH_ZERO_SELF_SIGNED_CERT");
  assert.equal(selfSigned.received.length, before + 1);
  // Keep the deferred one from retrying forever in the background of later tests.
  await t.tdb.db.prisma.delivery.updateMany({ where: { messageId: reqId }, data: { state: "done" } });
});

test("falls back to the next MX when the first does not answer; implicit MX from A records", async () => {
  const id = await send({ to: "dave@fallback.test" });
  const m = await settled(id, ["delivered"]);
  const attempts = m.recipients[0].delivery_attempts;
  assert.deepEqual(attempts.map((a: { outcome: string }) => a.outcome), ["deferred", "delivered"]);
  assert.equal(attempts[0].mx_host, "dead.fallback.test");
  assert.equal(attempts[1].mx_host, TEST_MX_HOST);

  const id2 = await send({ to: "erin@implicit.test" });
  const m2 = await settled(id2, ["delivered"]);
  assert.equal(m2.recipients[0].delivery_attempts[0].mx_host, "implicit.test");
});

test("550 at RCPT bounces one recipient while the other is delivered; null MX bounces; SERVFAIL defers", async () => {
  const id = await send({ to: ["bounce@refusing.test", "fine@refusing.test"] });
  const m = await settled(id, ["partially_delivered"]);
  const byAddr = Object.fromEntries(m.recipients.map((r: { address: string }) => [r.address, r]));
  assert.equal(byAddr["bounce@refusing.test"].status, "bounced");
  assert.equal(byAddr["bounce@refusing.test"].last_response.code, 550);
  assert.equal(byAddr["fine@refusing.test"].status, "delivered");
  const got = refusing.received.filter((r) => r.to.includes("fine@refusing.test"));
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.to, ["fine@refusing.test"]);

  const n = await settled(await send({ to: "x@nullmx.test" }), ["bounced"]);
  assert.equal(n.recipients[0].last_response.enhanced_code, "5.1.10");
  const s = await settled(await send({ to: "y@broken.test" }), ["deferred"]);
  assert.equal(s.recipients[0].last_response.enhanced_code, "4.4.3");
  await t.tdb.db.prisma.delivery.updateMany({ where: { message: { recipients: { some: { address: "y@broken.test" } } } }, data: { state: "done" } });
});
