// The TLS plan of an SMTP attempt: every policy × AUTH × implicit-TLS combination and
// what it decides. The integration matrix (smtp-attempt.test.ts) shows the plan carried
// out against real peers; this table is the decision itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import { TLS_POLICIES } from "../../src/domain/tls-policy.ts";
import { meetsMinVersion, tlsPlan, type TlsPlan } from "../../src/worker/tls-plan.ts";

const STRICT = { strict: true, minVersion: "TLSv1.2", cleartextAfterFailedHandshake: false, cleartextWithoutStarttls: false } as const;

const TABLE: Array<[policy: (typeof TLS_POLICIES)[number], auth: boolean, implicitTls: boolean, plan: TlsPlan]> = [
  ["opportunistic", false, false, { strict: false, minVersion: undefined, cleartextAfterFailedHandshake: true, cleartextWithoutStarttls: true, authenticate: false, requirement: null }],
  ["opportunistic", false, true, { strict: false, minVersion: undefined, cleartextAfterFailedHandshake: false, cleartextWithoutStarttls: true, authenticate: false, requirement: null }],
  ["opportunistic", true, false, { ...STRICT, authenticate: true, requirement: "relay AUTH needs verified TLS" }],
  ["opportunistic", true, true, { ...STRICT, authenticate: true, requirement: "relay AUTH needs verified TLS" }],
  ["required", false, false, { ...STRICT, authenticate: false, requirement: "TLS is required" }],
  ["required", false, true, { ...STRICT, authenticate: false, requirement: "TLS is required" }],
  ["required", true, false, { ...STRICT, authenticate: true, requirement: "TLS is required" }],
  ["required", true, true, { ...STRICT, authenticate: true, requirement: "TLS is required" }],
];

test("the table covers every policy × AUTH × implicit TLS", () => {
  const seen = new Set(TABLE.map(([p, a, i]) => `${p}/${a}/${i}`));
  assert.equal(seen.size, TLS_POLICIES.length * 2 * 2);
});

for (const [policy, auth, implicitTls, expected] of TABLE) {
  test(`${policy}, ${auth ? "AUTH" : "no AUTH"}, ${implicitTls ? "implicit TLS" : "STARTTLS"}`, () => {
    assert.deepEqual(tlsPlan(policy, { auth, implicitTls }), expected);
  });
}

test("AUTH is only ever planned on a strict plan, and a strict plan never falls back to cleartext", () => {
  for (const [policy, auth, implicitTls] of TABLE) {
    const plan = tlsPlan(policy, { auth, implicitTls });
    if (plan.authenticate) assert.equal(plan.strict, true);
    if (plan.strict) assert.deepEqual([plan.cleartextAfterFailedHandshake, plan.cleartextWithoutStarttls, plan.requirement !== null], [false, false, true]);
  }
});

test("the minimum version accepts TLS 1.2 and 1.3 only; no minimum accepts anything", () => {
  assert.deepEqual(
    ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "unknown", null].map((v) => meetsMinVersion(v, "TLSv1.2")),
    [false, false, true, true, false, false],
  );
  assert.equal(meetsMinVersion("TLSv1", undefined), true);
});
