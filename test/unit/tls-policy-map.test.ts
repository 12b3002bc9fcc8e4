// The operator's TLS policy map (domain/tls-policy-map.ts, SMTP_TLS_POLICY_MAP), the layer
// naming of the strictest-of rule (domain/tls-policy.ts), and the MTA-STS max_age clamp.
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadConfig } from "../../src/config.ts";
import { ruleFor, type TlsMapRule } from "../../src/domain/tls-policy-map.ts";
import { strictestLayer } from "../../src/domain/tls-policy.ts";
import { effectiveMaxAge, policyHostGuard } from "../../src/worker/mta-sts.ts";
import { webhookTargetPolicy } from "../../src/security/webhook-targets.ts";

const FP = "AB:".repeat(31) + "AB";

test("SMTP_TLS_POLICY_MAP parses domains, subdomain rules, pinned MX names and fingerprints", () => {
  const c = loadConfig({ SMTP_TLS_POLICY_MAP: ` Bank.Example required mx=MX1.bank.example|*.mail.bank.example , .partner.example required fingerprint=${"ab".repeat(32)}` });
  assert.deepEqual(c.SMTP_TLS_POLICY_MAP, [
    { pattern: "bank.example", mx: ["mx1.bank.example", "*.mail.bank.example"], fingerprints: [], origin: "config" },
    { pattern: ".partner.example", mx: [], fingerprints: [FP], origin: "config" },
  ]);
});

test("a bad SMTP_TLS_POLICY_MAP rule is one line naming the variable, the rule and what is expected", () => {
  const bad: Array<[string, RegExp]> = [
    ["bank.example", /the policy after bank\.example must be "required"/],
    ["bank.example opportunistic", /must be "required" \(a rule can only make delivery stricter\)/],
    ["*.bank.example required", /is not a domain \("example\.com"\) or a leading dot/],
    ["bank.example required mx=**.x", /mx "\*\*\.x" is not one of host names/],
    ["bank.example required fingerprint=12:34", /fingerprint "12:34" is not one of SHA-256 certificate fingerprints/],
    ["bank.example required pin=1", /"pin=1" is not mx=<hosts> or fingerprint=<sha256s>/],
    ["bank.example required, bank.example required", /bank\.example has two rules; keep one/],
  ];
  for (const [value, why] of bad) {
    assert.throws(() => loadConfig({ SMTP_TLS_POLICY_MAP: value }), (err: Error) => {
      assert.match(err.message, /SMTP_TLS_POLICY_MAP/);
      assert.match(err.message, why);
      return true;
    }, value);
  }
});

test("the most specific rule wins: an exact name over a leading dot, a longer pattern over a shorter", () => {
  const r = (pattern: string, origin: "config" | "api" = "config"): TlsMapRule => ({ pattern, mx: [], fingerprints: [], origin });
  const rules = [r(".example"), r(".bank.example"), r("bank.example", "api"), r("bank.example")];
  assert.equal(ruleFor(rules, "bank.example"), rules[3], "exact, and config before api on a tie");
  assert.equal(ruleFor(rules, "eu.bank.example"), rules[1]);
  assert.equal(ruleFor(rules, "shop.example"), rules[0]);
  assert.equal(ruleFor(rules, "example"), null, "a leading dot does not cover the name itself");
  assert.equal(ruleFor(rules, "notbank.example"), rules[0], "a suffix without a dot boundary is not the domain");
});

test("the strictest layer names the first layer that holds it; all opportunistic is `default`", () => {
  assert.deepEqual(strictestLayer([{ policy: "opportunistic", source: "server" }, { policy: null, source: "key" }, { policy: "opportunistic", source: "message" }]), { policy: "opportunistic", source: "default" });
  assert.deepEqual(strictestLayer([{ policy: "opportunistic", source: "server" }, { policy: "required", source: "key" }, { policy: "required", source: "message" }]), { policy: "required", source: "key" });
  assert.deepEqual(strictestLayer([{ policy: "opportunistic", source: "message" }, { policy: "required", source: "mta-sts" }]), { policy: "required", source: "mta-sts" });
});

test("MTA-STS max_age is used within [1 hour, 1 year); outside it a policy lasts one day", () => {
  assert.equal(effectiveMaxAge(604800), 604800);
  assert.equal(effectiveMaxAge(3600), 3600);
  assert.equal(effectiveMaxAge(3599), 86400);
  assert.equal(effectiveMaxAge(0), 86400);
  assert.equal(effectiveMaxAge(31_557_600), 86400);
});

test("in production an MTA-STS policy host's private addresses are left out, as if it had none; outside production all stay", async () => {
  const dns = async (_name: string, type: string) => (type === "A" ? ["10.0.0.5", "192.0.2.10", "169.254.169.254"] : type === "TXT" ? [["v=STSv1; id=1"]] : []);
  const prod = policyHostGuard(dns, webhookTargetPolicy({ NODE_ENV: "production", WEBHOOK_ALLOWED_NETWORKS: undefined }));
  assert.deepEqual(await prod("mta-sts.example.com", "A"), ["192.0.2.10"]);
  assert.deepEqual(await prod("_mta-sts.example.com", "TXT"), [["v=STSv1; id=1"]], "other records pass");
  const dev = policyHostGuard(dns, webhookTargetPolicy({ NODE_ENV: "development", WEBHOOK_ALLOWED_NETWORKS: undefined }));
  assert.deepEqual(await dev("mta-sts.example.com", "A"), ["10.0.0.5", "192.0.2.10", "169.254.169.254"]);
});
