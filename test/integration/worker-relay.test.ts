// Relay mode (SMTP_RELAY_URL): every message goes to one smarthost instead of the
// recipient's MX. Credentials in the URL are sent with AUTH only over TLS that verified
// (RFC 4954 section 4 warns against cleartext PLAIN/LOGIN), so a relay
// that cannot prove who it is never sees them, whatever the message's policy.
// The relay is named by IP in the URL (no DNS involved) and its certificates carry
// that IP as a subjectAltName, which is what the name check then compares against.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { peerCertificate, startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";

const USER = "relay-user";
// Characters that must be percent-encoded in a URL, to exercise the decoding too.
const PASS = "Rl4y p@ss/w0rd:QX7";
const credentials = { user: USER, pass: PASS };

let app: TestApp;
let key: string;
let cleartextOnly: SmtpPeer; // no STARTTLS at all, would even take AUTH in cleartext
let selfSigned: SmtpPeer; // STARTTLS with a certificate nobody vouches for
let starttls: SmtpPeer; // STARTTLS, CA-signed certificate naming its IP
let implicit: SmtpPeer; // smtps: TLS from the first byte, CA-signed for its IP
const logs: string[] = [];

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  [cleartextOnly, selfSigned, starttls, implicit] = await Promise.all([
    startPeer({ ip: "127.0.0.31", starttls: "none", auth: credentials, allowInsecureAuth: true }),
    startPeer({ ip: "127.0.0.32", certificate: peerCertificate("self-signed", "127.0.0.32"), auth: credentials }),
    startPeer({ ip: "127.0.0.33", certificate: peerCertificate("ca-signed", "127.0.0.33"), auth: credentials }),
    startPeer({ ip: "127.0.0.34", implicitTls: true, certificate: peerCertificate("ca-signed", "127.0.0.34"), auth: credentials }),
  ]);
});

after(async () => {
  await Promise.all([cleartextOnly, selfSigned, starttls, implicit].map((p) => p?.close()));
  await app?.close();
});

function relayUrl(scheme: "smtp" | "smtps", peer: SmtpPeer): string {
  return `${scheme}://${USER}:${encodeURIComponent(PASS)}@${peer.host}:${peer.port}`;
}

/** A worker for this test only; `stop` may be called early and again at the end. */
function useWorker(t: TestContext, env: Record<string, string>) {
  const w = startTestWorker(app.tdb, env, logs);
  const stop = () => w.stop(5000);
  t.after(stop);
  return { ...w, stop };
}

const send = (body: Record<string, unknown>) => sendMessage(app, key, body);

/** Deferred for good from the point of view of the next test: no worker may retry it. */
async function retire(messageId: string) {
  await app.tdb.db.prisma.delivery.updateMany({ where: { messageId }, data: { state: "done" } });
}

function assertNoAuthSent(peer: SmtpPeer) {
  assert.ok(peer.sessions.length > 0, "the worker did connect");
  assert.deepEqual(peer.sessions.map((s) => s.authAttempts), peer.sessions.map(() => 0), "no AUTH attempt");
  assert.ok(peer.sessions.every((s) => s.cleartextCommands.length === 0 && s.mailFrom.length === 0), "no AUTH, MAIL or RCPT at all");
  assert.equal(peer.received.length, 0);
}

test("a relay without STARTTLS gets no AUTH and no mail: deferred 4.7.4, even for an opportunistic message", async (t) => {
  const w = useWorker(t, { SMTP_RELAY_URL: relayUrl("smtp", cleartextOnly) });
  const id = await send({ to: "ann@anywhere.example" });
  const m = await waitForMessage(app, key, id, ["deferred"], { logs });
  await w.stop();
  await retire(id);
  const a = m.recipients[0]!.delivery_attempts[0]!;
  assert.equal(a.outcome, "deferred");
  assert.equal(a.mx_host, "127.0.0.31");
  assert.equal(a.port, cleartextOnly.port);
  assert.equal(a.tls.used, false);
  assert.equal(a.smtp.enhanced_code, "4.7.4");
  assertNoAuthSent(cleartextOnly);
});

test("a relay whose certificate does not verify gets no AUTH: deferred 4.7.5", async (t) => {
  const w = useWorker(t, { SMTP_RELAY_URL: relayUrl("smtp", selfSigned) });
  const id = await send({ to: "bob@anywhere.example" });
  const m = await waitForMessage(app, key, id, ["deferred"], { logs });
  await w.stop();
  await retire(id);
  const a = m.recipients[0]!.delivery_attempts[0]!;
  assert.equal(a.tls.used, true);
  assert.equal(a.tls.verified, false);
  assert.equal(a.tls.verify_error, "DEPTH_ZERO_SELF_SIGNED_CERT");
  assert.equal(a.smtp.enhanced_code, "4.7.5");
  assertNoAuthSent(selfSigned);
});

test("smtp:// relay with STARTTLS and a verified certificate: AUTH over TLS, delivered", async (t) => {
  useWorker(t, { SMTP_RELAY_URL: relayUrl("smtp", starttls) });
  const id = await send({ to: ["carol@anywhere.example", "dan@elsewhere.example"] });
  const m = await waitForMessage(app, key, id, ["delivered"], { logs });
  for (const r of m.recipients) {
    const a = r.delivery_attempts[0]!;
    assert.equal(a.mx_host, "127.0.0.33", "the relay, not an MX of the recipient domain");
    assert.equal(a.tls.used, true);
    assert.equal(a.tls.verified, true, JSON.stringify(a.tls));
    assert.equal(a.smtp.code, 250);
  }
  const authed = starttls.sessions.filter((s) => s.authAttempts > 0);
  assert.ok(authed.length >= 1);
  assert.ok(authed.every((s) => s.secure && s.cleartextCommands.length === 0), "AUTH only after STARTTLS");
  // RFC 6066 section 3: no SNI for an IP literal (and not some other name instead).
  assert.ok(starttls.sessions.every((s) => s.servername === undefined), JSON.stringify(starttls.sessions));
  const got = starttls.received.flatMap((r) => r.to).sort();
  assert.deepEqual(got, ["carol@anywhere.example", "dan@elsewhere.example"]);
  assert.ok(starttls.received.every((r) => r.secure));
});

test("smtps:// relay (implicit TLS): AUTH over TLS, delivered", async (t) => {
  useWorker(t, { SMTP_RELAY_URL: relayUrl("smtps", implicit) });
  const id = await send({ to: "erin@anywhere.example", tls: "required" });
  const m = await waitForMessage(app, key, id, ["delivered"], { logs });
  const a = m.recipients[0]!.delivery_attempts[0]!;
  assert.equal(a.mx_host, "127.0.0.34");
  assert.equal(a.policy, "required");
  assert.equal(a.tls.used, true);
  assert.equal(a.tls.verified, true, JSON.stringify(a.tls));
  assert.equal(implicit.received.length, 1);
  assert.equal(implicit.received[0]!.secure, true);
  assert.ok(implicit.sessions.every((s) => s.secure && s.cleartextCommands.length === 0));
  assert.equal(implicit.sessions.reduce((n, s) => n + s.authAttempts, 0), 1);
  // Nor is it in what the API returns.
  const body = (await app.call("GET", `/messages/${id}/events`, { key })).body;
  assert.ok(!body.includes(PASS) && !body.includes(encodeURIComponent(PASS)));
});

// Last, so that it covers the workers of every test above.
test("the relay password never appears in the worker logs, as given or as written in the URL", () => {
  const all = logs.join("");
  assert.ok(all.includes("delivery attempt recorded"), "the workers did log their attempts");
  assert.ok(!all.includes(PASS), "the password");
  assert.ok(!all.includes(encodeURIComponent(PASS)), "the password, percent-encoded");
});
