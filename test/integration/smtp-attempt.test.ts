// One delivery attempt against real smtp-server peers on loopback: the STARTTLS policy
// matrix of opportunistic and required against every kind of peer (what the result says AND what the peer actually got), reply
// classification per recipient, and relay AUTH that never leaves without verified TLS.
import { describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { attemptDelivery, openSession, type AttemptOptions, type AttemptResult, type TlsPolicy } from "../../src/worker/smtp-attempt.ts";
import { attemptOptionsFor, peerCertificate, startPeer, TEST_MX_HOST, type PeerOptions, type SmtpPeer } from "../helpers/smtp-peers.ts";

const MESSAGE = Buffer.from(
  "From: Shop <noreply@sender.test>\r\nTo: rcpt@example.test\r\nSubject: Your receipt\r\n" +
    "Message-ID: <attempt-1@sender.test>\r\n\r\nThank you.\r\n.leading dot stays intact\r\n",
);
const RELAY_AUTH = { user: "relay-user", pass: "relay-secret" };

async function peer(t: TestContext, opts: PeerOptions = {}): Promise<SmtpPeer> {
  const p = await startPeer(opts);
  t.after(() => p.close());
  return p;
}

const optionsFor = (p: SmtpPeer, policy: TlsPolicy, extra: Partial<AttemptOptions> = {}) => attemptOptionsFor(p, policy, { message: MESSAGE, ...extra });

/** One attempt; then the peer must have no connection left open (no leaks). */
async function deliver(p: SmtpPeer, policy: TlsPolicy, extra: Partial<AttemptOptions> = {}): Promise<AttemptResult> {
  const result = await attemptDelivery(optionsFor(p, policy, extra));
  await p.waitForIdle();
  return result;
}

function assertNothingSent(p: SmtpPeer) {
  assert.equal(p.received.length, 0, "the peer received a message");
  for (const s of p.sessions) {
    assert.deepEqual([s.mailFrom, s.rcptTo, s.authAttempts], [[], [], 0], "the peer saw envelope or AUTH commands");
  }
}

// How each peer looks under `opportunistic`: it always gets the message.
interface Expected {
  peer: PeerOptions;
  tls: boolean;
  version?: string;
  verified: boolean | null;
  /** verifyError, or its leading code when it carries detail after ": ". */
  reason: string | null;
  /** Connections the opportunistic attempt needs (2 = cleartext retry after a failed handshake). */
  connections: number;
  /** What `required` defers it with; undefined = delivered. */
  requiredDefer?: "4.7.4" | "4.7.5";
}

const MATRIX: Record<string, Expected> = {
  "without STARTTLS": { peer: { starttls: "none" }, tls: false, verified: null, reason: "STARTTLS_NOT_OFFERED", connections: 1, requiredDefer: "4.7.4" },
  "454 to STARTTLS": { peer: { starttls: "refuse" }, tls: false, verified: null, reason: "STARTTLS_REFUSED", connections: 1, requiredDefer: "4.7.4" },
  "broken handshake": { peer: { starttls: "broken" }, tls: false, verified: null, reason: "TLS_HANDSHAKE_FAILED", connections: 2, requiredDefer: "4.7.5" },
  "self-signed": { peer: { certificate: "self-signed" }, tls: true, version: "TLSv1.3", verified: false, reason: "DEPTH_ZERO_SELF_SIGNED_CERT", connections: 1, requiredDefer: "4.7.5" },
  "CA-signed, right name": { peer: {}, tls: true, version: "TLSv1.3", verified: true, reason: null, connections: 1 },
  "CA-signed, wrong name": { peer: { certificate: "wrong-name" }, tls: true, version: "TLSv1.3", verified: false, reason: "ERR_TLS_CERT_ALTNAME_INVALID", connections: 1, requiredDefer: "4.7.5" },
  expired: { peer: { certificate: "expired" }, tls: true, version: "TLSv1.3", verified: false, reason: "CERT_HAS_EXPIRED", connections: 1, requiredDefer: "4.7.5" },
  "signed by an unknown CA": { peer: { certificate: "untrusted-ca" }, tls: true, version: "TLSv1.3", verified: false, reason: "UNABLE_TO_VERIFY_LEAF_SIGNATURE", connections: 1, requiredDefer: "4.7.5" },
  "TLS 1.2 only": { peer: { maxTlsVersion: "TLSv1.2" }, tls: true, version: "TLSv1.2", verified: true, reason: null, connections: 1 },
};

const leadingCode = (s: string | null) => (s === null ? null : s.split(":")[0]);

describe("opportunistic (Postfix may) delivers to every peer", { concurrency: true }, () => {
  for (const [name, want] of Object.entries(MATRIX)) {
    test(name, async (t) => {
      const p = await peer(t, want.peer);
      const r = await deliver(p, "opportunistic");

      assert.deepEqual(r.recipients.map((x) => [x.address, x.outcome, x.replyCode]), [["rcpt@example.test", "delivered", 250]]);
      assert.equal(r.tryNextHost, false);
      const ev = r.evidence;
      assert.deepEqual(
        [ev.tls, ev.tlsVersion, ev.verified, leadingCode(ev.verifyError)],
        [want.tls, want.version ?? null, want.verified, want.reason],
      );
      assert.deepEqual([ev.mxHost, ev.ip, ev.port, ev.policy], [TEST_MX_HOST, p.host, p.port, "opportunistic"]);
      assert.ok(ev.durationMs >= 0 && ev.startedAt instanceof Date);
      if (want.tls) {
        assert.match(ev.cipher ?? "", want.version === "TLSv1.3" ? /^TLS_(AES|CHACHA20)/ : /^ECDHE-/);
        const pem = peerCertificate(typeof want.peer.certificate === "string" ? want.peer.certificate : "ca-signed");
        const x509 = new X509Certificate(pem.cert);
        assert.equal(ev.certFingerprint, x509.fingerprint256);
        assert.equal(ev.certNotAfter?.getTime(), new Date(x509.validTo).getTime());
        assert.match(ev.certSubject ?? "", /^CN=/);
        assert.ok(ev.certIssuer);
      } else {
        assert.deepEqual([ev.cipher, ev.certSubject, ev.certFingerprint], [null, null, null]);
      }

      // What the peer actually got: one message, over TLS exactly when the evidence says so.
      assert.equal(p.received.length, 1);
      const got = p.received[0]!;
      assert.equal(got.secure, want.tls);
      assert.equal(got.tlsProtocol, want.version);
      assert.deepEqual([got.from, got.to], ["bounces@sender.test", ["rcpt@example.test"]]);
      assert.equal(got.data.toString(), MESSAGE.toString());
      assert.equal(p.sessions.length, want.connections);
      if (want.tls) assert.equal(p.sessions[0]!.servername, TEST_MX_HOST, "SNI names the MX host");
    });
  }

  test("the refusal and the handshake failure keep their details", async (t) => {
    const refusing = await peer(t, { starttls: "refuse" });
    const broken = await peer(t, { starttls: "broken" });
    const [r1, r2] = await Promise.all([deliver(refusing, "opportunistic"), deliver(broken, "opportunistic")]);
    assert.match(r1.evidence.verifyError ?? "", /^STARTTLS_REFUSED: 454 4\.7\.0 /);
    // Node's own OpenSSL code, not nodemailer's generic ESOCKET/ETLS.
    assert.match(r2.evidence.verifyError ?? "", /^TLS_HANDSHAKE_FAILED: ERR_SSL_/);
  });
});

describe("required (Postfix verify) delivers only over verified TLS", { concurrency: true }, () => {
  for (const [name, want] of Object.entries(MATRIX)) {
    test(name, async (t) => {
      const p = await peer(t, want.peer);
      const r = await deliver(p, "required", { envelope: { from: "bounces@sender.test", to: ["a@example.test", "b@example.test"] } });
      assert.equal(r.evidence.policy, "required");

      if (!want.requiredDefer) {
        assert.deepEqual(r.recipients.map((x) => x.outcome), ["delivered", "delivered"]);
        assert.deepEqual([r.evidence.tls, r.evidence.verified, r.evidence.tlsVersion], [true, true, want.version]);
        assert.deepEqual(p.received.map((m) => [m.secure, m.tlsProtocol]), [[true, want.version]]);
        return;
      }
      for (const x of r.recipients) {
        assert.equal(x.outcome, "deferred");
        assert.equal(x.enhancedCode, want.requiredDefer);
        assert.equal(x.replyCode, null);
        assert.match(x.replyText ?? "", /^TLS is required/);
      }
      assert.equal(r.tryNextHost, true);
      assert.equal(r.evidence.verified, want.tls ? false : null);
      assert.equal(leadingCode(r.evidence.verifyError), want.reason);
      // Not one byte of the envelope or the message went out, and no cleartext retry.
      assertNothingSent(p);
      assert.equal(p.sessions.length, 1);
      if (want.tls) assert.ok(r.evidence.certFingerprint, "the refused certificate is still recorded");
    });
  }
});

describe("replies decide each recipient", { concurrency: true }, () => {
  const twoRecipients = { envelope: { from: "bounces@sender.test", to: ["ok@example.test", "nobody@example.test"] } };

  test("550 at RCPT bounces that recipient while the other is delivered", async (t) => {
    const p = await peer(t, { rcpt: { "nobody@example.test": { code: 550, message: "No such user" } } });
    const r = await deliver(p, "required", twoRecipients);
    assert.deepEqual(r.recipients, [
      { address: "ok@example.test", outcome: "delivered", replyCode: 250, enhancedCode: "2.6.0", replyText: "OK: message queued" },
      { address: "nobody@example.test", outcome: "bounced", replyCode: 550, enhancedCode: "5.1.1", replyText: "No such user" },
    ]);
    assert.equal(r.tryNextHost, false);
    assert.deepEqual(p.received.map((m) => m.to), [["ok@example.test"]]);
  });

  test("451 at RCPT defers, and no DATA is sent without recipients", async (t) => {
    const p = await peer(t, { rcpt: { "nobody@example.test": { code: 451, message: "Greylisted, try later" } } });
    const r = await deliver(p, "opportunistic", twoRecipients);
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.replyCode, x.enhancedCode]), [["delivered", 250, "2.6.0"], ["deferred", 451, "4.3.0"]]);
    assert.equal(r.tryNextHost, false);

    const all = await peer(t, { rcpt: { "ok@example.test": { code: 451, message: "Greylisted" }, "nobody@example.test": { code: 451, message: "Greylisted" } } });
    const r2 = await deliver(all, "opportunistic", twoRecipients);
    assert.deepEqual(r2.recipients.map((x) => x.outcome), ["deferred", "deferred"]);
    assert.equal(r2.tryNextHost, false);
    assert.equal(all.received.length, 0);
  });

  test("552 after DATA bounces every accepted recipient; a RCPT-refused one keeps its own reply", async (t) => {
    const p = await peer(t, { data: { code: 552, message: "Message too big" }, rcpt: { "nobody@example.test": { code: 451, message: "Later" } } });
    const r = await deliver(p, "opportunistic", twoRecipients);
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.replyCode, x.enhancedCode]), [["bounced", 552, "5.2.2"], ["deferred", 451, "4.3.0"]]);
    assert.equal(r.tryNextHost, false);
  });

  test("451 after DATA defers", async (t) => {
    const p = await peer(t, { data: { code: 451, message: "Local error" } });
    const r = await deliver(p, "opportunistic");
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.replyCode]), [["deferred", 451]]);
  });

  test("421 at the greeting defers and moves on to the next host", async (t) => {
    const p = await peer(t, { greeting: { code: 421, message: "Too busy, try later" } });
    const r = await deliver(p, "opportunistic");
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.replyCode, x.enhancedCode]), [["deferred", 421, "4.0.0"]]);
    assert.equal(r.tryNextHost, true);
    assertNothingSent(p);
  });

  test("a connection dropped after the final dot defers (a duplicate beats a loss)", async (t) => {
    const p = await peer(t, { data: "drop" });
    const r = await deliver(p, "opportunistic");
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.replyCode, x.enhancedCode]), [["deferred", null, "4.4.2"]]);
    // The server may have the message: retry later, not at another MX right now.
    assert.equal(r.tryNextHost, false);
    assert.deepEqual(p.received.map((m) => m.reply), [null]);
  });

  test("a message over the SIZE the server announced bounces without being sent", async (t) => {
    const p = await peer(t, { size: 64 });
    const r = await deliver(p, "opportunistic");
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.replyCode, x.enhancedCode]), [["bounced", null, "5.3.4"]]);
    assert.equal(r.tryNextHost, false);
    assertNothingSent(p);
  });

  test("nothing listening: deferred, try the next host", async (t) => {
    const p = await peer(t);
    const { port, host } = p;
    await p.close();
    const r = await attemptDelivery({ ...optionsFor(p, "opportunistic"), target: { host: TEST_MX_HOST, ip: host, port } });
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.replyCode, x.enhancedCode]), [["deferred", null, "4.4.1"]]);
    assert.match(r.recipients[0]!.replyText ?? "", /ECONNREFUSED/);
    assert.equal(r.tryNextHost, true);
  });
});

describe("relay AUTH only over verified TLS", { concurrency: true }, () => {
  test("a relay without STARTTLS never sees the credentials, even one that would take them", async (t) => {
    const p = await peer(t, { starttls: "none", auth: RELAY_AUTH, allowInsecureAuth: true });
    const r = await deliver(p, "opportunistic", { auth: RELAY_AUTH });
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.enhancedCode]), [["deferred", "4.7.4"]]);
    assert.match(r.recipients[0]!.replyText ?? "", /relay AUTH needs verified TLS/);
    assert.equal(r.tryNextHost, true);
    assertNothingSent(p);
  });

  test("nor does one with an unverifiable certificate", async (t) => {
    const p = await peer(t, { certificate: "self-signed", auth: RELAY_AUTH });
    const r = await deliver(p, "opportunistic", { auth: RELAY_AUTH });
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.enhancedCode]), [["deferred", "4.7.5"]]);
    assertNothingSent(p);
  });

  test("a verified relay gets AUTH and the message, over STARTTLS or implicit TLS", async (t) => {
    const starttls = await peer(t, { auth: RELAY_AUTH });
    const implicit = await peer(t, { auth: RELAY_AUTH, implicitTls: true });
    const r1 = await deliver(starttls, "opportunistic", { auth: RELAY_AUTH });
    const r2 = await deliver(implicit, "opportunistic", { auth: RELAY_AUTH, implicitTls: true });
    for (const [r, p] of [[r1, starttls], [r2, implicit]] as const) {
      assert.deepEqual(r.recipients.map((x) => x.outcome), ["delivered"]);
      assert.deepEqual([r.evidence.tls, r.evidence.verified], [true, true]);
      assert.deepEqual(p.sessions.map((s) => [s.authAttempts, s.cleartextCommands]), [[1, []]]);
      assert.equal(p.received[0]?.secure, true);
    }
  });

  test("wrong credentials defer with the server's reply", async (t) => {
    const p = await peer(t, { auth: RELAY_AUTH });
    const r = await deliver(p, "required", { auth: { user: RELAY_AUTH.user, pass: "wrong" } });
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.replyCode, x.enhancedCode]), [["deferred", 535, "5.7.8"]]);
    assert.equal(r.tryNextHost, true);
    assert.equal(p.received.length, 0);
  });
});

describe("implicit TLS and session reuse", { concurrency: true }, () => {
  test("smtps: an unverified certificate is used under opportunistic, refused under required", async (t) => {
    const p = await peer(t, { implicitTls: true, certificate: "self-signed" });
    const may = await deliver(p, "opportunistic", { implicitTls: true });
    assert.deepEqual([may.recipients[0]!.outcome, may.evidence.tls, may.evidence.verified], ["delivered", true, false]);
    const verify = await deliver(p, "required", { implicitTls: true });
    assert.deepEqual([verify.recipients[0]!.outcome, verify.recipients[0]!.enhancedCode, verify.tryNextHost], ["deferred", "4.7.5", true]);
    assert.equal(p.received.length, 1);
  });

  test("one verified session carries several messages", async (t) => {
    const p = await peer(t, { rcpt: { "nobody@example.test": { code: 550, message: "No such user" } } });
    const opened = await openSession(optionsFor(p, "required"));
    assert.ok("session" in opened);
    const { session } = opened;
    const first = await session.send({ from: "a@sender.test", to: ["nobody@example.test"] }, MESSAGE);
    const second = await session.send({ from: "a@sender.test", to: ["ok@example.test"] }, MESSAGE);
    assert.deepEqual([first.recipients[0]!.outcome, second.recipients[0]!.outcome], ["bounced", "delivered"]);
    assert.equal(session.usable, true);
    await session.close();
    assert.equal(session.usable, false);
    await p.waitForIdle();
    assert.equal(p.sessions.length, 1);
    assert.equal(p.received.length, 1);
  });
});
