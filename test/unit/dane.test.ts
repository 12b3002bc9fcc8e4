// DANE certificate matching (worker/dane.ts matchTlsa, RFC 7672 section 3.1 and RFC 7671)
// against real certificates made here, and DANE_RESOLVER's loopback rule.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { createCa, issueCertificate } from "../../src/tls/certificates.ts";
import { matchTlsa, type TlsaRecord } from "../../src/worker/dane.ts";
import { loadConfig } from "../../src/config.ts";

const HOST = "mx.dane.test";
const ca = createCa("DANE test CA");
const leaf = issueCertificate({ names: [HOST], ca });
const otherName = issueCertificate({ names: ["other.dane.test"], ca });
const day = 86_400_000;
const expired = issueCertificate({ names: [HOST], notBefore: new Date(Date.now() - 30 * day), notAfter: new Date(Date.now() - day) });
const der = (pem: string) => new X509Certificate(pem).raw;
const spki = (pem: string) => Buffer.from(new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" }));
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest();
const sha512 = (b: Buffer) => createHash("sha512").update(b).digest();
const rec = (usage: number, selector: number, matchingType: number, data: Buffer): TlsaRecord => ({ usage, selector, matchingType, data });
const matched = (r: ReturnType<typeof matchTlsa>) => ("matched" in r ? `${r.matched.usage} ${r.matched.selector} ${r.matched.matchingType}` : r.error);

test("DANE-EE(3): the leaf's SPKI by SHA-256, or the whole certificate by SHA-512, whatever CA or name", () => {
  assert.equal(matched(matchTlsa([rec(3, 1, 1, sha256(spki(leaf.cert)))], [der(leaf.cert)], HOST)), "3 1 1");
  assert.equal(matched(matchTlsa([rec(3, 0, 2, sha512(der(leaf.cert)))], [der(leaf.cert)], "any.other.name")), "3 0 2", "no name check under DANE-EE");
  assert.equal(matched(matchTlsa([rec(3, 1, 0, spki(leaf.cert))], [der(leaf.cert)], HOST)), "3 1 0", "exact SPKI");
});

test("DANE-EE(3) ignores expiry (RFC 7672 section 3.1.1)", () => {
  assert.equal(matched(matchTlsa([rec(3, 1, 1, sha256(spki(expired.cert)))], [der(expired.cert)], HOST)), "3 1 1");
});

test("a record for another key does not match, and the error says so", () => {
  assert.match(matched(matchTlsa([rec(3, 1, 1, sha256(spki(otherName.cert)))], [der(leaf.cert)], HOST)), /^DANE_NO_MATCH: no usable TLSA record of mx\.dane\.test/);
});

test("DANE-TA(2): a CA in the presented chain that issued the leaf, and the leaf names the MX host", () => {
  const ta = rec(2, 0, 1, sha256(der(ca.cert)));
  assert.equal(matched(matchTlsa([ta], [der(leaf.cert), der(ca.cert)], HOST)), "2 0 1");
  assert.match(matched(matchTlsa([ta], [der(otherName.cert), der(ca.cert)], HOST)), /^DANE_NO_MATCH/, "the leaf must name the host");
  assert.match(matched(matchTlsa([ta], [der(leaf.cert)], HOST)), /^DANE_NO_MATCH/, "the trust anchor must be presented");
  const impostor = createCa("DANE test CA");
  assert.match(matched(matchTlsa([rec(2, 1, 1, sha256(spki(impostor.cert)))], [der(leaf.cert), der(impostor.cert)], HOST)), /^DANE_NO_MATCH/, "a CA of the same name that did not sign the leaf");
});

test("PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP, even when they would match", () => {
  assert.match(matched(matchTlsa([rec(1, 1, 1, sha256(spki(leaf.cert))), rec(0, 0, 1, sha256(der(ca.cert)))], [der(leaf.cert), der(ca.cert)], HOST)), /^DANE_NO_MATCH/);
  assert.match(matched(matchTlsa([rec(3, 2, 1, sha256(spki(leaf.cert)))], [der(leaf.cert)], HOST)), /^DANE_NO_MATCH/, "an unknown selector");
});

test("DANE_RESOLVER must be a validating resolver on loopback", () => {
  assert.deepEqual(loadConfig({ DANE_RESOLVER: "127.0.0.1:5353" }).DANE_RESOLVER, { host: "127.0.0.1", port: 5353 });
  assert.deepEqual(loadConfig({ DANE_RESOLVER: "[::1]" }).DANE_RESOLVER, { host: "::1", port: 53 });
  assert.throws(() => loadConfig({ DANE_RESOLVER: "8.8.8.8:53" }), /DANE_RESOLVER: must be on loopback/);
  assert.throws(() => loadConfig({ DANE_RESOLVER: "resolver.local" }), /DANE_RESOLVER: must be the address of a DNSSEC-validating resolver/);
});
