import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseAddress, parseMailbox } from "../../src/domain/address.ts";
import { deriveMessageStatus } from "../../src/domain/message.ts";
import { isAddressFailure } from "../../src/domain/suppression.ts";
import { strictest } from "../../src/domain/tls-policy.ts";
import { dkimKeyStates, dkimRotationStep, zoneFileLine } from "../../src/domain/sender-domain.ts";
import { nextRetryDelay } from "../../src/worker/backoff.ts";
import { ContentCipher, contentAad } from "../../src/security/content-cipher.ts";
import { randomBytes } from "node:crypto";

test("strictest policy wins whatever the order", () => {
  assert.equal(strictest("opportunistic", null, undefined), "opportunistic");
  assert.equal(strictest("required", "opportunistic", "opportunistic"), "required");
  assert.equal(strictest("opportunistic", "required", null), "required");
  assert.equal(strictest("opportunistic", null, "required"), "required");
});

test("addresses: plain local@domain only", () => {
  assert.deepEqual(parseAddress("Alice.Smith+tag@Example.COM"), { ok: true, value: "Alice.Smith+tag@example.com" });
  for (const bad of ['"a b"@x.example', "a@[127.0.0.1]", "a@127.0.0.1", "a(c)@x.example", "a@b@x.example", "a..b@x.example", "a@localhost", "a@-x.example", "a\r\n@x.example"])
    assert.equal(parseAddress(bad).ok, false, bad);
  assert.deepEqual(parseMailbox('"Doe, Jane" <jane@x.example>'), { ok: true, value: { name: "Doe, Jane", address: "jane@x.example" } });
  for (const bad of ["Doe, Jane <jane@x.example>", "undisclosed:;", "a@x.example, b@x.example", "A <a@x.example> (comment)", "x <a@x.example>\r\nBcc: y@z.example"])
    assert.equal(parseMailbox(bad).ok, false, bad);
});

test("property: no accepted mailbox carries a line break or control character", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 80 }), (s) => {
      const r = parseMailbox(s);
      if (r.ok) assert.doesNotMatch(r.value.address + (r.value.name ?? ""), /[\u0000-\u001f\u007f]/);
    }),
    { numRuns: 2000 },
  );
});

test("message status is derived from recipients", () => {
  assert.equal(deriveMessageStatus(["queued", "queued"]), "queued");
  assert.equal(deriveMessageStatus(["scheduled"]), "scheduled");
  assert.equal(deriveMessageStatus(["delivered", "queued"]), "sending");
  assert.equal(deriveMessageStatus(["delivered", "deferred"]), "deferred");
  assert.equal(deriveMessageStatus(["delivered", "delivered"]), "delivered");
  assert.equal(deriveMessageStatus(["delivered", "bounced"]), "partially_delivered");
  assert.equal(deriveMessageStatus(["bounced", "bounced"]), "bounced");
  assert.equal(deriveMessageStatus(["bounced", "failed"]), "failed");
  assert.equal(deriveMessageStatus(["cancelled", "cancelled"]), "cancelled");
});

test("backoff grows exponentially, stays within bounds, and is jittered", () => {
  const d = [1, 2, 3, 4, 10].map((n) => nextRetryDelay(n, 60_000, 3_600_000, () => 0.5));
  assert.deepEqual(d, [60_000, 120_000, 240_000, 480_000, 3_600_000]);
  assert.equal(nextRetryDelay(1, 60_000, 3_600_000, () => 0), 48_000);
  assert.equal(nextRetryDelay(1, 60_000, 3_600_000, () => 1), 72_000);
  fc.assert(fc.property(fc.integer({ min: 1, max: 60 }), fc.double({ min: 0, max: 1, noNaN: true }), (n, r) => {
    const v = nextRetryDelay(n, 1000, 10_000, () => r);
    return v >= 800 && v <= 10_000;
  }));
});

test("content cipher: round trip, fresh nonce per value, bound to its row and column", () => {
  const c = new ContentCipher([{ id: "k1", key: randomBytes(32) }]);
  const a = c.encrypt("hello", contentAad("m1", "subject"));
  const b = c.encrypt("hello", contentAad("m1", "subject"));
  assert.notDeepEqual(a, b, "a fresh nonce each time");
  assert.equal(c.decrypt(a, contentAad("m1", "subject")).toString(), "hello");
  assert.throws(() => c.decrypt(a, contentAad("m2", "subject")), /failed authentication/);
  assert.throws(() => c.decrypt(a, contentAad("m1", "text_body")), /failed authentication/);
  const tampered = Buffer.from(a);
  tampered[tampered.length - 1]! ^= 1;
  assert.throws(() => c.decrypt(tampered, contentAad("m1", "subject")), /failed authentication/);
});

test("DKIM rotation: a new key signs once seen, the one it replaces retires after the grace, an unseen older one at once", () => {
  const now = new Date("2026-12-05T00:00:00Z");
  const day = 86_400_000;
  const key = (id: string, algorithm: "rsa-sha256" | "ed25519-sha256", createdDaysAgo: number, verified: boolean) => ({
    id, selector: `s-${id}`, algorithm, createdAt: new Date(now.getTime() - createdDaysAgo * day), verifiedAt: verified ? new Date(now.getTime() - createdDaysAgo * day) : null, retiredAt: null,
  });
  const oldRsa = key("old-r", "rsa-sha256", 200, true);
  const neverSeenRsa = key("lost-r", "rsa-sha256", 100, false);
  const newRsa = key("new-r", "rsa-sha256", 1, false);
  const oldEd = key("old-e", "ed25519-sha256", 200, true);
  const newEd = key("new-e", "ed25519-sha256", 1, false);
  const keys = [oldRsa, neverSeenRsa, newRsa, oldEd, newEd];
  assert.equal(dkimKeyStates(keys, now).get("s-old-r"), "active");

  // Only the new RSA key's record is published so far.
  const step = dkimRotationStep(keys, new Set(["s-new-r"]), now, 7 * day);
  assert.deepEqual(step.seenNow, ["new-r"]);
  assert.deepEqual([...step.deciding].sort(), ["s-new-r", "s-old-e"]);
  assert.deepEqual(step.retire, [{ id: "lost-r", at: now }, { id: "old-r", at: new Date(now.getTime() + 7 * day) }]);

  // Nothing seen on a fresh domain: every pending key decides, nothing retires.
  const fresh = [key("a", "rsa-sha256", 0, false), key("b", "ed25519-sha256", 0, false)];
  assert.deepEqual(dkimRotationStep(fresh, new Set(), now, day), { seenNow: [], deciding: new Set(["s-a", "s-b"]), retire: [] });
});

test("suppressed: a final status; a message of suppressed recipients only is suppressed, with others it reads like a bounce", () => {
  assert.equal(deriveMessageStatus(["suppressed", "suppressed"]), "suppressed");
  assert.equal(deriveMessageStatus(["suppressed", "delivered"]), "partially_delivered");
  assert.equal(deriveMessageStatus(["suppressed", "bounced"]), "bounced");
  assert.equal(deriveMessageStatus(["suppressed", "failed"]), "failed");
  assert.equal(deriveMessageStatus(["suppressed", "queued"]), "queued");
  assert.equal(deriveMessageStatus(["suppressed", "deferred"]), "deferred");
});

test("only a permanent reply naming the address as bad suppresses it, decided by the codes", () => {
  const v = (status: string, replyCode: number | null, enhancedCode: string | null) => isAddressFailure({ status, replyCode, enhancedCode });
  for (const code of ["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"]) assert.ok(v("bounced", 550, code), code);
  assert.ok(!v("bounced", 550, "5.7.1"), "a policy refusal");
  assert.ok(!v("bounced", 552, "5.2.2"), "a full mailbox may empty");
  assert.ok(!v("bounced", 553, "5.1.7"), "about our sender address");
  assert.ok(!v("bounced", 550, null), "no enhanced code: ambiguous");
  assert.ok(!v("deferred", 452, "4.2.2"));
  assert.ok(!v("bounced", null, "5.1.10"), "our own verdict (null MX) is not a receiver's reply");
});

test("zone-file lines (domains show --zone): TXT in quoted strings of at most 255 bytes that join to the value, MX absolute", () => {
  assert.equal(zoneFileLine({ name: "bounces.shop.example", type: "MX", value: "10 mail.shop.example" }), "bounces.shop.example. 3600 IN MX 10 mail.shop.example.");
  assert.equal(zoneFileLine({ name: "bounces.shop.example", type: "MX", value: "10 mail.shop.example." }), "bounces.shop.example. 3600 IN MX 10 mail.shop.example.");
  assert.equal(zoneFileLine({ name: "_dmarc.shop.example", type: "TXT", value: "v=DMARC1; p=none" }), '_dmarc.shop.example. 3600 IN TXT "v=DMARC1; p=none"');
  // A zone file's reading of the strings (RFC 1035 5.1): quoted, with \\ and \" escapes.
  const strings = (line: string) => [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!.replace(/\\(.)/g, "$1"));
  fc.assert(fc.property(fc.string({ unit: fc.constantFrom(..."ab=; /+\\\"".split("")), minLength: 1, maxLength: 1200 }), (value) => {
    const line = zoneFileLine({ name: "sp202612r._domainkey.shop.example", type: "TXT", value });
    assert.ok(line.startsWith("sp202612r._domainkey.shop.example. 3600 IN TXT \""));
    const parts = strings(line.slice(line.indexOf(" TXT ") + 5));
    assert.equal(parts.join(""), value);
    assert.ok(parts.every((p) => Buffer.byteLength(p) <= 255 && p.length > 0));
  }));
});
