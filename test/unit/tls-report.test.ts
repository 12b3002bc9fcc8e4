// RFC 8460 result types from delivery evidence (domain/tls-report.ts), and how sessions count
// with and without a policy.
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildReport, resultType, type AttemptGroup } from "../../src/domain/tls-report.ts";

const g = (over: Partial<AttemptGroup>): AttemptGroup => ({
  domain: "example.com", sts: null, mxHost: "mx.example.com", ip: "192.0.2.1", tls: true, verified: true, verifyError: null, mxNameCheck: "match", replyText: null, count: 1, ...over,
});

test("each kind of failure gets its RFC 8460 result type", () => {
  assert.equal(resultType(g({})), null);
  assert.equal(resultType(g({ tls: false, verified: null, verifyError: "STARTTLS_NOT_OFFERED" }))?.type, "starttls-not-supported");
  assert.equal(resultType(g({ verified: false, verifyError: "ERR_TLS_CERT_ALTNAME_INVALID", mxNameCheck: "mismatch" }))?.type, "certificate-host-mismatch");
  assert.equal(resultType(g({ verified: false, verifyError: "CERT_HAS_EXPIRED" }))?.type, "certificate-expired");
  assert.equal(resultType(g({ verified: false, verifyError: "DEPTH_ZERO_SELF_SIGNED_CERT" }))?.type, "certificate-not-trusted");
  assert.equal(resultType(g({ verified: false, verifyError: "FINGERPRINT_MISMATCH: AB:CD" }))?.code, "FINGERPRINT_MISMATCH");
  assert.equal(resultType(g({ mxHost: null, ip: null, replyText: "not sent" }))?.type, "validation-failure");
});

test("without a policy an unverified certificate is a success (opportunistic TLS), no TLS is a failure; under a policy both fail", () => {
  const groups = [g({ verified: false, verifyError: "DEPTH_ZERO_SELF_SIGNED_CERT", count: 4 }), g({ tls: false, verified: null, verifyError: "STARTTLS_NOT_OFFERED", count: 2 }), g({ count: 10 })];
  const none = buildReport({ domain: "example.com", day: "2026-03-01", groups, organization: "o", contact: "c", reporter: "r" }).policies[0]!;
  assert.deepEqual(none.summary, { "total-successful-session-count": 14, "total-failure-session-count": 2 });
  const sts = { state: "policy", mode: "enforce", id: "1", mx: ["mx.example.com"], mx_match: true };
  const withPolicy = buildReport({ domain: "example.com", day: "2026-03-01", groups: groups.map((x) => ({ ...x, sts })), organization: "o", contact: "c", reporter: "r" }).policies[0]!;
  assert.deepEqual(withPolicy.summary, { "total-successful-session-count": 10, "total-failure-session-count": 6 });
  assert.deepEqual(withPolicy["failure-details"].map((f) => [f["result-type"], f["failed-session-count"]]), [["certificate-not-trusted", 4], ["starttls-not-supported", 2]]);
});

test("rua: only from exactly one v=TLSRPTv1 record, https: and mailto: only", async () => {
  const { ruaOf } = await import("../../src/worker/tls-report-sender.ts");
  assert.deepEqual(ruaOf(["v=TLSRPTv1; rua=mailto:a@example.com, https://r.example.com/v1"]), ["mailto:a@example.com", "https://r.example.com/v1"]);
  assert.deepEqual(ruaOf(["v=spf1 -all", "v=TLSRPTv1;rua=https://r.example.com"]), ["https://r.example.com"]);
  assert.deepEqual(ruaOf(["v=TLSRPTv1; rua=https://a.example", "v=TLSRPTv1; rua=https://b.example"]), [], "two records: none is used (RFC 8460 section 3)");
  assert.deepEqual(ruaOf(["v=TLSRPTv1; rua=http://plain.example/, ftp://x"]), []);
});
