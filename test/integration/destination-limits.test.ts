// Destination limits (issue 14, item 4), against real SMTP peers: a receiving host gets at
// most its sessions at once and its messages per session, whatever the worker's
// concurrency; a host that answers 421 (or 4.7.x) is left alone until its pause ends,
// instead of every queued message being tried against it, and then gets the mail.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";

let app: TestApp;
let key: string;
let dns: FakeDns;
let limited: SmtpPeer; // 127.0.0.61: holds each final dot 150 ms, so sessions overlap
let unlimited: SmtpPeer; // 127.0.0.62: the same, with no rule for its domain
let throttles: SmtpPeer; // 127.0.0.63: 421 to the first connection, then a normal server
const logs: string[] = [];

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  limited = await startPeer({ ip: "127.0.0.61", dataDelay: { ms: 150 } });
  unlimited = await startPeer({ ip: "127.0.0.62", port: limited.port, dataDelay: { ms: 150 } });
  throttles = await startPeer({ ip: "127.0.0.63", port: limited.port, greeting: { code: 421, message: "4.7.0 Too many connections from your IP, try again later", times: 1 } });
  const zone = (domain: string, ip: string) => ({
    [domain]: { MX: [{ preference: 10, exchange: `mx.${domain}` }] },
    [`mx.${domain}`]: { A: [ip] },
  });
  dns = await startFakeDns({ ...zone("limited.test", "127.0.0.61"), ...zone("unlimited.test", "127.0.0.62"), ...zone("throttles.test", "127.0.0.63") });
});

after(async () => {
  await Promise.all([limited, unlimited, throttles].map((p) => p?.close()));
  await dns?.close();
  await app?.close();
});

function useWorker(t: TestContext, env: Record<string, string>) {
  const w = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(limited.port), ...env }, logs);
  t.after(() => w.stop(5000));
  return w;
}

async function sendAll(domain: string, n: number): Promise<string[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => sendMessage(app, key, { to: `user${i}@${domain}`, subject: `message ${i}` })));
}

test("a host gets at most its sessions at once and its messages per session, however many slots the worker has", async (t) => {
  useWorker(t, { WORKER_CONCURRENCY: "6", SMTP_DESTINATION_LIMITS: "limited.test:sessions=2:messages=3" });
  const [few, many] = await Promise.all([sendAll("limited.test", 12), sendAll("unlimited.test", 12)]);
  await Promise.all([...few, ...many].map((id) => waitForMessage(app, key, id, ["delivered"], { logs })));

  assert.equal(limited.received.length, 12);
  assert.equal(limited.peakConnections(), 2, "never more than two sessions, and two were used");
  for (const s of limited.sessions) assert.ok(s.mailFrom.length <= 3, `a session carried ${s.mailFrom.length} messages`);
  assert.ok(limited.sessions.length >= 4, `12 messages at 3 a session take at least 4 sessions, not ${limited.sessions.length}`);
  // The same load to a domain without a rule uses the worker's slots (the default is 10 sessions a host).
  assert.ok(unlimited.peakConnections() > 2, `the unlimited host had ${unlimited.peakConnections()} sessions at most`);
});

test("421 pauses the host: nothing is tried against it until the pause ends, then everything is delivered once", async (t) => {
  useWorker(t, { WORKER_CONCURRENCY: "1", SMTP_THROTTLE_PAUSE: "1500ms", SMTP_RETRY_MIN: "50ms", SMTP_RETRY_MAX: "100ms" });
  const ids = await sendAll("throttles.test", 5);
  const done = await Promise.all(ids.map((id) => waitForMessage(app, key, id, ["delivered"], { logs, timeoutMs: 20_000 })));

  const [refused, ...later] = throttles.sessions;
  assert.ok(refused && later.length >= 1);
  const quiet = later[0]!.connectedAt - refused.connectedAt;
  assert.ok(quiet >= 1400, `the next connection came ${quiet} ms after the 421, inside the 1500 ms pause`);
  assert.equal(throttles.received.length, 5, "one copy of each message");

  // The messages that came up during the pause say why they were not tried, with no reply code (nothing was asked).
  const notTried = done.flatMap((m) => m.recipients[0]!.delivery_attempts).filter((a) => a.outcome === "deferred" && a.smtp.code === null);
  assert.ok(notTried.length >= 1, "some message came up during the pause");
  for (const a of notTried) {
    assert.equal(a.smtp.enhanced_code, "4.7.0");
    assert.match(a.smtp.text ?? "", /^not tried: mx\.throttles\.test asked this sender to slow down/);
  }
  assert.ok(logs.some((l) => /mx\.throttles\.test is throttling this sender \(421 4\.7\.0\)/.test(l)), "the pause is logged");
});
