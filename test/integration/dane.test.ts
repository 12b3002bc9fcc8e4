// DANE (RFC 7672; issue 15, item 2) against real SMTP peers, with a fake DNS that plays the
// DNSSEC-validating resolver DANE_RESOLVER names (it sets the AD flag where the zone says
// the data validated; SERVFAIL is what a validating resolver answers for bogus data).
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { issueCertificate } from "../../src/tls/certificates.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns, type FakeZone } from "../helpers/fake-dns.ts";
import { sendMessage, waitForMessage, type MessageView } from "../helpers/messages.ts";
import { startPeer, testCa, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";

let app: TestApp;
let key: string;
let dns: FakeDns;
let selfSigned: SmtpPeer; // 127.0.16.2: a self-signed certificate; DANE-EE vouches for its key
let caSigned: SmtpPeer; // 127.0.16.3: a CA-signed leaf presented with its CA (DANE-TA)
const logs: string[] = [];
const DOMAINS = ["ee.test", "mismatch.test", "noad.test", "servfail.test", "ta.test", "unusable.test", "relaxed.test"];

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest();
const spkiOf = (pem: string) => Buffer.from(new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" }));
const selfSignedPem = issueCertificate({ names: DOMAINS.map((d) => `mx.${d}`) });
const leafPem = issueCertificate({ names: DOMAINS.map((d) => `mx.${d}`), ca: testCa() });
const eeRecord = { usage: 3, selector: 1, matchingType: 1, certificate: sha256(spkiOf(selfSignedPem.cert)) };

function zone(): FakeZone {
  const z: FakeZone = {};
  for (const d of DOMAINS) {
    z[d] = { MX: [{ preference: 10, exchange: `mx.${d}` }] };
    z[`mx.${d}`] = { A: [d === "ta.test" ? "127.0.16.3" : "127.0.16.2"] };
  }
  z["_25._tcp.mx.ee.test"] = { TLSA: [eeRecord], ad: true };
  z["_25._tcp.mx.relaxed.test"] = { TLSA: [{ ...eeRecord, certificate: Buffer.alloc(32, 1) }], ad: true };
  z["_25._tcp.mx.mismatch.test"] = { TLSA: [{ ...eeRecord, certificate: Buffer.alloc(32, 1) }], ad: true };
  z["_25._tcp.mx.noad.test"] = { TLSA: [{ ...eeRecord, certificate: Buffer.alloc(32, 1) }] };
  z["_25._tcp.mx.servfail.test"] = { rcode: "SERVFAIL" };
  z["_25._tcp.mx.ta.test"] = { TLSA: [{ usage: 2, selector: 0, matchingType: 1, certificate: sha256(new X509Certificate(testCa().cert).raw) }], ad: true };
  z["_25._tcp.mx.unusable.test"] = { TLSA: [{ usage: 1, selector: 1, matchingType: 1, certificate: sha256(spkiOf(selfSignedPem.cert)) }], ad: true };
  return z;
}

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  selfSigned = await startPeer({ ip: "127.0.16.2", certificate: selfSignedPem });
  caSigned = await startPeer({ ip: "127.0.16.3", port: selfSigned.port, certificate: { key: leafPem.key, cert: leafPem.cert + testCa().cert } });
  dns = await startFakeDns(zone());
});

after(async () => {
  await Promise.all([selfSigned, caSigned].map((p) => p?.close()));
  await dns?.close();
  await app?.close();
});

function useWorker(t: TestContext) {
  const w = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, DANE_RESOLVER: dns.address, SMTP_MX_PORT: String(selfSigned.port), MTA_STS: "off" }, logs);
  t.after(() => w.stop(5000));
  return w;
}

const lastAttempt = (m: MessageView) => m.recipients[0]!.delivery_attempts.at(-1)!;
const receivedFor = (peer: SmtpPeer, to: string) => peer.received.filter((r) => r.to.includes(to)).length;

test("DANE-EE match: a self-signed certificate whose key the signed TLSA record names is verified, and the delivery is required", async (t) => {
  useWorker(t);
  const id = await sendMessage(app, key, { to: "alice@ee.test" });
  const a = lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs }));
  assert.equal(a.policy, "required");
  assert.equal(a.policy_source, "dane");
  assert.equal(a.tls.verified, true);
  assert.equal(a.policy_detail?.verified_by, "dane");
  const record = `3 1 1 ${eeRecord.certificate.toString("hex")}`;
  assert.equal(a.policy_detail?.matched, record);
  assert.deepEqual(a.policy_detail?.dane, { state: "secure", record });
  assert.equal(a.policy_detail?.mx_name_check, "match");
});

test("DANE mismatch: deferred, and nothing is sent", async (t) => {
  useWorker(t);
  const id = await sendMessage(app, key, { to: "bob@mismatch.test" });
  const a = lastAttempt(await waitForMessage(app, key, id, ["deferred"], { logs }));
  assert.equal(a.policy_source, "dane");
  assert.equal(a.smtp.enhanced_code, "4.7.5");
  assert.match(a.tls.verify_error ?? "", /^DANE_NO_MATCH/);
  assert.equal(receivedFor(selfSigned, "bob@mismatch.test"), 0);
  assert.ok(selfSigned.sessions.every((s) => !s.rcptTo.includes("bob@mismatch.test")), "no RCPT was sent");
});

test("TLSA records without the AD flag are not DANE", async (t) => {
  useWorker(t);
  const id = await sendMessage(app, key, { to: "carol@noad.test" });
  const a = lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs }));
  assert.equal(a.policy, "opportunistic");
  assert.equal(a.policy_source, "default");
  assert.equal(a.policy_detail?.dane.state, "none");
  assert.match(a.policy_detail?.dane.reason ?? "", /is not DNSSEC-signed \(no AD flag/);
});

test("TLSA SERVFAIL (bogus): the host is not tried, the delivery is deferred", async (t) => {
  useWorker(t);
  const id = await sendMessage(app, key, { to: "dave@servfail.test" });
  const a = lastAttempt(await waitForMessage(app, key, id, ["deferred"], { logs }));
  assert.equal(a.mx_host, null);
  assert.equal(a.policy_source, "dane");
  assert.match(a.smtp.text ?? "", /TLSA lookup for _25\._tcp\.mx\.servfail\.test failed \(SERVFAIL/);
  assert.equal(a.policy_detail?.dane.state, "lookup_failed");
  assert.equal(receivedFor(selfSigned, "dave@servfail.test"), 0);
});

test("DANE-TA: a trust anchor the server presents, which issued a leaf naming the MX host", async (t) => {
  useWorker(t);
  const id = await sendMessage(app, key, { to: "erin@ta.test" });
  const a = lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs }));
  assert.equal(a.policy_source, "dane");
  assert.match(a.policy_detail?.matched ?? "", /^2 0 1 /);
});

test("only unusable records: TLS is required but the certificate is not checked", async (t) => {
  useWorker(t);
  const id = await sendMessage(app, key, { to: "frank@unusable.test" });
  const a = lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs }));
  assert.equal(a.policy, "required");
  assert.equal(a.tls.used, true);
  assert.equal(a.tls.verified, false);
  assert.equal(a.policy_detail?.dane.state, "unusable");
});

test("TLS-Required: No sets DANE aside: a mismatching record does not hold the message back", async (t) => {
  useWorker(t);
  const id = await sendMessage(app, key, { to: "gina@relaxed.test", headers: { "TLS-Required": "No" } });
  const a = lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs }));
  assert.equal(a.policy, "opportunistic");
  assert.deepEqual(a.policy_detail?.dane, { state: "relaxed", reason: "the message says TLS-Required: No" });
});

test("TLS reports name DANE's hosts under the tlsa policy: matched, mismatched, and lookups that failed", async () => {
  const operator = (await app.createKey({ name: "reports", scopes: ["admin"] })).key;
  const today = new Date().toISOString().slice(0, 10);
  const r = await app.call("GET", `/tls-reports?date=${today}`, { key: operator });
  assert.equal(r.status, 200, r.body);
  type Policy = { policy: Record<string, unknown>; summary: Record<string, number>; "failure-details": Array<Record<string, unknown>> };
  const reports = (r.json() as { reports: Array<{ "report-id": string; policies: Policy[] }> }).reports;
  const tlsaOf = (domain: string) => reports.find((x) => x["report-id"].startsWith(`${today}.${domain}@`))!.policies.find((p) => p.policy["policy-type"] === "tlsa")!;

  const ee = tlsaOf("ee.test");
  assert.deepEqual([ee.policy["policy-string"], ee.policy["mx-host"]], [[`3 1 1 ${eeRecord.certificate.toString("hex")}`], ["mx.ee.test"]]);
  assert.equal(ee.summary["total-failure-session-count"], 0);
  assert.ok(ee.summary["total-successful-session-count"]! >= 1);

  const mismatch = tlsaOf("mismatch.test");
  assert.equal(mismatch.summary["total-successful-session-count"], 0);
  assert.deepEqual([mismatch["failure-details"][0]!["result-type"], mismatch["failure-details"][0]!["failure-reason-code"]], ["validation-failure", "DANE_NO_MATCH"]);

  const servfail = tlsaOf("servfail.test");
  assert.equal(servfail["failure-details"][0]!["result-type"], "dnssec-invalid");
});
