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
