// Connection reuse: several messages to one destination ride one verified session, and
// each message's attempt still carries that session's TLS evidence.
import type { TlsPolicy } from "../../src/domain/tls-policy.ts";
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { SmtpSessionPool } from "../../src/worker/smtp-pool.ts";
import { attemptOptionsFor, startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";

const peers: SmtpPeer[] = [];
after(async () => {
  await Promise.all(peers.map((p) => p.close()));
});

const options = (peer: SmtpPeer, to: string, policy: TlsPolicy = "required") =>
  attemptOptionsFor(peer, policy, {
    envelope: { from: "noreply@shop.example", to: [to] },
    message: Buffer.from(`From: noreply@shop.example\r\nTo: ${to}\r\nSubject: pooled\r\n\r\nhello\r\n`),
  });

test("five messages in a row use one TLS session, each with the session's evidence", async () => {
  const peer = await startPeer({ ip: "127.0.0.5" });
  peers.push(peer);
  const pool = new SmtpSessionPool();
  try {
    for (let i = 0; i < 5; i++) {
      const r = await pool.attempt(options(peer, `user${i}@example.test`));
      assert.equal(r.recipients[0]!.outcome, "delivered");
      assert.equal(r.evidence.tls, true);
      assert.equal(r.evidence.verified, true);
      assert.equal(r.evidence.tlsVersion, "TLSv1.3");
    }
    assert.equal(peer.received.length, 5);
    assert.equal(peer.sessions.length, 1, "one connection carried all five messages");
    assert.equal(pool.idleCount, 1);
  } finally {
    await pool.close();
  }
  await peer.waitForIdle();
  assert.equal(peer.openConnections(), 0, "close() quits idle sessions");
});

test("a session dropped by the server while idle is replaced, not used", async () => {
  const peer = await startPeer({ ip: "127.0.0.6" });
  peers.push(peer);
  const pool = new SmtpSessionPool();
  try {
    assert.equal((await pool.attempt(options(peer, "a@example.test"))).recipients[0]!.outcome, "delivered");
    // Restart the peer on the same address: the pooled connection is gone.
    const port = peer.port;
    await peer.close();
    const again = await startPeer({ ip: "127.0.0.6", port });
    peers.push(again);
    const r = await pool.attempt(options(again, "b@example.test"));
    assert.equal(r.recipients[0]!.outcome, "delivered");
    assert.equal(again.received.length, 1);
  } finally {
    await pool.close();
  }
});

test("sessions are not shared across policies", async () => {
  const peer = await startPeer({ ip: "127.0.0.7" });
  peers.push(peer);
  const pool = new SmtpSessionPool();
  try {
    await pool.attempt(options(peer, "a@example.test", "required"));
    await pool.attempt(options(peer, "b@example.test", "opportunistic"));
    assert.equal(peer.sessions.length, 2);
  } finally {
    await pool.close();
  }
});

test("a session is reused up to the message limit and the age limit, then replaced (Postfix's reuse count and time limits)", async () => {
  const peer = await startPeer({ ip: "127.0.0.8" });
  peers.push(peer);
  const byCount = new SmtpSessionPool({ maxMessagesPerConnection: 2 });
  try {
    for (let i = 0; i < 5; i++) assert.equal((await byCount.attempt(options(peer, `c${i}@example.test`))).recipients[0]!.outcome, "delivered");
    assert.equal(peer.sessions.length, 3, "five messages at two per connection take three connections");
  } finally {
    await byCount.close();
  }
  const byAge = new SmtpSessionPool({ maxSessionAgeMs: 0 });
  try {
    for (let i = 0; i < 2; i++) assert.equal((await byAge.attempt(options(peer, `a${i}@example.test`))).recipients[0]!.outcome, "delivered");
    assert.equal(peer.sessions.length, 5, "a session past its age is not reused");
    assert.equal(byAge.idleCount, 0);
  } finally {
    await byAge.close();
  }
});

test("after a transaction refused half way the session is RSET before its next message; after a whole one it carries on", async () => {
  const peer = await startPeer({ ip: "127.0.0.9", rcpt: { "gone@example.test": { code: 550, message: "5.1.1 no such user" } } });
  peers.push(peer);
  const pool = new SmtpSessionPool();
  try {
    const outcomes = [];
    for (const to of ["a@example.test", "gone@example.test", "b@example.test", "c@example.test"])
      outcomes.push((await pool.attempt(options(peer, to))).recipients[0]!.outcome);
    // Without the RSET the server would answer the next MAIL with 503 (nested MAIL command).
    assert.deepEqual(outcomes, ["delivered", "bounced", "delivered", "delivered"]);
    assert.equal(peer.sessions.length, 1, "one connection carried all four transactions");
    assert.deepEqual(peer.received.map((m) => m.to[0]), ["a@example.test", "b@example.test", "c@example.test"]);
  } finally {
    await pool.close();
  }
});
