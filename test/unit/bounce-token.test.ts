// Bounce addresses (VERP): bounce+<token>@<bounce domain> names a recipient, and only a
// token made under one of our data keys names one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { ContentCipher } from "../../src/security/content-cipher.ts";
import { BounceTokens } from "../../src/security/bounce-token.ts";

const key = (id: string) => ({ id, key: randomBytes(32) });
const k1 = key("k1");
const k2 = key("k2");
const localPart = (address: string) => address.slice(0, address.lastIndexOf("@"));

test("an address names its recipient, whatever the case it comes back in, and fits a local part", () => {
  const tokens = new BounceTokens(new ContentCipher([k1]));
  fc.assert(
    fc.property(fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }), (id) => {
      const address = tokens.address(id, "bounces.shop.example");
      assert.match(address, /^bounce\+[a-z2-7]+@bounces\.shop\.example$/);
      assert.ok(localPart(address).length <= 64, "RFC 5321 4.5.3.1.1: a local part is at most 64 octets");
      assert.equal(tokens.recipientOf(localPart(address)), id);
      assert.equal(tokens.recipientOf(localPart(address).toUpperCase()), id);
    }),
  );
});

test("a changed character, a token from another key, a truncated or padded token and other local parts name no one", () => {
  const tokens = new BounceTokens(new ContentCipher([k1]));
  const lp = localPart(tokens.address(42n, "b.example"));
  for (let i = "bounce+".length; i < lp.length; i++) {
    const changed = lp.slice(0, i) + (lp[i] === "a" ? "b" : "a") + lp.slice(i + 1);
    assert.equal(tokens.recipientOf(changed), null, `character ${i} changed`);
  }
  const other = localPart(new BounceTokens(new ContentCipher([k2])).address(42n, "b.example"));
  assert.equal(tokens.recipientOf(other), null, "made under a key we do not hold");
  for (const bad of [lp.slice(0, -1), `${lp}a`, "bounce+", "postmaster", "noreply", `x${lp}`, "bounce+!!!"]) assert.equal(tokens.recipientOf(bad), null, bad);
});

test("after a data key rotation, tokens made under the old key still name their recipient while it is held", () => {
  const before = localPart(new BounceTokens(new ContentCipher([k1])).address(7n, "b.example"));
  const rotated = new BounceTokens(new ContentCipher([k2, k1]));
  assert.equal(rotated.recipientOf(before), 7n);
  assert.notEqual(localPart(rotated.address(7n, "b.example")), before, "new tokens are made under the new key");
  assert.equal(new BounceTokens(new ContentCipher([k2])).recipientOf(before), null, "and not once the old key is retired");
});
