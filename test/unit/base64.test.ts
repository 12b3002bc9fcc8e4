// The attachment base64 check: exactly the strings that are the canonical standard
// base64 of some bytes (the ones Buffer round-trips), in time linear in the input and
// without the regular-expression stack overflow that made large attachments a 500.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { base64Size, checkBase64 } from "../../src/domain/base64.ts";

test("property: accepted exactly when Buffer round-trips it, with the decoded size", () => {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n!";
  const nearBase64 = fc.string({ unit: fc.constantFrom(...alphabet), maxLength: 16 });
  fc.assert(
    fc.property(nearBase64, (s) => {
      const r = checkBase64(s);
      assert.equal(r.ok, Buffer.from(s, "base64").toString("base64") === s, JSON.stringify(s));
      if (r.ok) assert.equal(r.bytes, Buffer.from(s, "base64").length);
    }),
    { numRuns: 20_000 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const s = Buffer.from(bytes).toString("base64");
      assert.deepEqual(checkBase64(s), { ok: true, bytes: bytes.length });
      assert.equal(base64Size(s), bytes.length);
    }),
  );
});

test("each kind of mistake gets its own explanation", () => {
  const says = (s: string) => {
    const r = checkBase64(s);
    assert.equal(r.ok, false, s);
    return (r as { message: string }).message;
  };
  assert.match(says("QUJD\r\nQUJD"), /^has a line break at character 5; send the base64 on one line/);
  assert.match(says("QUJD QUJD"), /^has a space at character 5/);
  assert.match(says("QUJD\tQUJD"), /^has a tab at character 5/);
  assert.match(says("ab-_"), /^has "-" at character 3, from the URL-safe alphabet/);
  assert.match(says("QUJD\u00e9"), /^has the character U\+00E9 at character 5, which is not base64/);
  assert.match(says("QUJDQQ"), /^is 6 characters long, which is not a multiple of 4/);
  assert.match(says("QQ==QUJD"), /^has "=" at character 3; "=" may only appear at the very end/);
  assert.match(says("QUJDQ==="), /^has "=" at character 6/);
  assert.match(says("QR=="), /^is not canonical base64/);
  assert.match(says("QUJ="), /^is not canonical base64/);
});

test("8 MiB of base64 is checked without a stack overflow, a bad character at the very end found", () => {
  // The old group-by-group regular expression threw RangeError (V8's regex stack) from about 3 MiB.
  const large = Buffer.alloc(8 * 1024 * 1024, 7).toString("base64");
  assert.deepEqual(checkBase64(large), { ok: true, bytes: 8 * 1024 * 1024 });
  const r = checkBase64(`${large.slice(0, -4)}QU!D`);
  assert.equal(r.ok, false);
  assert.equal((r as { message: string }).message.startsWith(`has "!" at character ${large.length - 1},`), true);
});
