import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, statSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { ConfigError, loadConfig } from "../../src/config.ts";
import { resolveCertificates } from "../../src/api/server.ts";
import { DataKeyError, loadDataKeys, parseDataKeys } from "../../src/security/data-keys.ts";
import { createOnce } from "../../src/files.ts";

const quiet = { warn() {} };

test("defaults are typed values, not strings", () => {
  const c = loadConfig({});
  assert.equal(c.PORT, 8443);
  assert.equal(c.SMTP_TLS_POLICY, "opportunistic");
  assert.equal(c.SMTP_MAX_RETRY, 3 * 86_400_000);
  assert.equal(c.RETENTION_DAYS, 30);
  assert.ok(Object.isFrozen(c));
});

test("a bad value names the variable", () => {
  assert.throws(() => loadConfig({ PORT: "eighty" }), (e: Error) => e instanceof ConfigError && /PORT: must be a whole number/.test(e.message));
  assert.throws(() => loadConfig({ SMTP_TLS_POLICY: "none" }), /SMTP_TLS_POLICY/);
  assert.throws(() => loadConfig({ SMTP_MAX_RETRY: "3 days" }), /SMTP_MAX_RETRY: must be a duration/);
  assert.throws(() => loadConfig({ DNS_SERVERS: "dns.google" }), /DNS_SERVERS/);
  assert.throws(() => loadConfig({ DATABASE_URL: "mysql://x" }), /DATABASE_URL/);
  assert.throws(() => loadConfig({ TLS_CERT_FILE: "/a.crt" }), /TLS_CERT_FILE and TLS_KEY_FILE must be set together/);
});

test("production needs a database URL everywhere, and certificates only where the API runs", () => {
  assert.throws(() => loadConfig({ NODE_ENV: "production", TLS_CERT_FILE: "/a", TLS_KEY_FILE: "/b" }), /DATABASE_URL is required/);
  // A worker holds no TLS key: its configuration is complete without one.
  const worker = loadConfig({ NODE_ENV: "production", DATABASE_URL: "postgresql://x/y" });
  const quietLog = { info() {}, warn() {} };
  assert.throws(() => resolveCertificates(worker, quietLog), (e: Error) => e instanceof ConfigError && /TLS_CERT_FILE and TLS_KEY_FILE are required when NODE_ENV=production/.test(e.message));
  const api = loadConfig({ NODE_ENV: "production", TLS_CERT_FILE: "/a", TLS_KEY_FILE: "/b", DATABASE_URL: "postgresql://x/y" });
  assert.deepEqual(resolveCertificates(api, quietLog), { certFile: "/a", keyFile: "/b" });
});

test("durations and lists parse", () => {
  const c = loadConfig({ SMTP_MAX_RETRY: "90s", SMTP_RETRY_MIN: "500ms", SMTP_RETRY_MAX: "2h", DNS_SERVERS: "127.0.0.1:5353, 10.0.0.1" });
  assert.equal(c.SMTP_MAX_RETRY, 90_000);
  assert.equal(c.SMTP_RETRY_MIN, 500);
  assert.deepEqual(c.DNS_SERVERS, ["127.0.0.1:5353", "10.0.0.1"]);
  assert.throws(() => loadConfig({ SMTP_RETRY_MIN: "2h", SMTP_RETRY_MAX: "1h" }), /SMTP_RETRY_MIN must not exceed/);
});

test("leases: the claim lease and the renewal interval follow the lease, and a renewal slower than a third of a lease is refused", () => {
  const d = loadConfig({});
  assert.deepEqual([d.WORKER_LEASE_MS, d.WORKER_CLAIM_LEASE_MS, d.WORKER_LEASE_RENEW_MS], [300_000, 15_000, 5000]);
  const short = loadConfig({ WORKER_LEASE_MS: "2000" });
  assert.deepEqual([short.WORKER_CLAIM_LEASE_MS, short.WORKER_LEASE_RENEW_MS], [1000, 333]);
  const set = loadConfig({ WORKER_LEASE_MS: "60000", WORKER_CLAIM_LEASE_MS: "9000", WORKER_LEASE_RENEW_MS: "3000" });
  assert.deepEqual([set.WORKER_CLAIM_LEASE_MS, set.WORKER_LEASE_RENEW_MS], [9000, 3000]);
  const oneLine = (re: RegExp) => (e: Error) => e instanceof ConfigError && e.message.split("\n").length === 2 && re.test(e.message);
  assert.throws(() => loadConfig({ WORKER_LEASE_MS: "10000", WORKER_CLAIM_LEASE_MS: "20000" }), oneLine(/WORKER_CLAIM_LEASE_MS: must not exceed WORKER_LEASE_MS/));
  assert.throws(() => loadConfig({ WORKER_LEASE_RENEW_MS: "5001" }), oneLine(/WORKER_LEASE_RENEW_MS: must be at most a third of WORKER_CLAIM_LEASE_MS/));
  assert.throws(() => loadConfig({ WORKER_LEASE_MS: "3000", WORKER_LEASE_RENEW_MS: "400" }), oneLine(/WORKER_LEASE_RENEW_MS/));
  assert.deepEqual(loadConfig({ WORKER_LEASE_MS: "45000" }).WORKER_CLAIM_LEASE_MS, 15_000);
});

test("data keys: one key, several with ids, and bad ones", () => {
  const k = randomBytes(32).toString("base64");
  assert.deepEqual(parseDataKeys(k).map((x) => x.id), ["k1"]);
  const k2 = randomBytes(32).toString("base64");
  assert.deepEqual(parseDataKeys(`new:${k2},old:${k}`).map((x) => x.id), ["new", "old"]);
  assert.throws(() => parseDataKeys(randomBytes(16).toString("base64")), (e: Error) => e instanceof DataKeyError && /16 bytes; it must be 32/.test(e.message));
  assert.throws(() => parseDataKeys(`a:${k},a:${k2}`), /unique/);
});

test("data key: production without SEALPOST_DATA_KEY is an error; development creates a 0600 key file once", () => {
  const dir = mkdtempSync(join(tmpdir(), "sp-key-"));
  assert.throws(() => loadDataKeys({ production: true, dataDir: dir }, quiet), /SEALPOST_DATA_KEY is required/);
  const warnings: string[] = [];
  const first = loadDataKeys({ production: false, dataDir: dir }, { warn: (_o, m) => warnings.push(m) });
  assert.equal(warnings.length, 1);
  assert.equal(statSync(join(dir, "data-key")).mode & 0o777, 0o600);
  const again = loadDataKeys({ production: false, dataDir: dir }, { warn: (_o, m) => warnings.push(m) });
  assert.equal(warnings.length, 1, "no second warning: the file is reused");
  assert.deepEqual(again[0]!.key, first[0]!.key);
  assert.match(readFileSync(join(dir, "data-key"), "utf8"), /^k1:[A-Za-z0-9+/=]{44}\n$/);
});

test("data key: a key file another process created in the meantime is never replaced", () => {
  // API and worker starting together both see no key file; the second must not swap its
  // own key in under the first, which may already be encrypting with it.
  const file = join(mkdtempSync(join(tmpdir(), "sp-key-race-")), "data-key");
  assert.equal(createOnce(file, "k1:first\n"), true);
  assert.equal(createOnce(file, "k1:second\n"), false);
  assert.equal(readFileSync(file, "utf8"), "k1:first\n");
  assert.equal(statSync(file).mode & 0o777, 0o600);
});

test("SMTP_RELAY_URL is parsed into the relay: host, port, implicit TLS and decoded credentials", () => {
  assert.deepEqual(loadConfig({ SMTP_RELAY_URL: "smtp://mailer:s3cret%2Fpass@relay.example.net:2525" }).SMTP_RELAY_URL, {
    host: "relay.example.net",
    port: 2525,
    implicitTls: false,
    auth: { user: "mailer", pass: "s3cret/pass" },
  });
  assert.deepEqual(loadConfig({ SMTP_RELAY_URL: "smtps://relay.example.net" }).SMTP_RELAY_URL, { host: "relay.example.net", port: 465, implicitTls: true });
  assert.deepEqual(loadConfig({ SMTP_RELAY_URL: "smtp://[::1]" }).SMTP_RELAY_URL, { host: "::1", port: 587, implicitTls: false });
  assert.equal(loadConfig({}).SMTP_RELAY_URL, undefined);
});

test("a bad SMTP_RELAY_URL is one configuration line naming the variable, never quoting the password", () => {
  const bad = ["smtp://mailer:hunter2@", "smtp://mailer:hunter2@relay.example.net:99999", "smtp://mailer:hunter2%zz@relay.example.net", "http://mailer:hunter2@relay.example.net"];
  for (const url of bad) {
    assert.throws(
      () => loadConfig({ SMTP_RELAY_URL: url }),
      (e: Error) => e instanceof ConfigError && /^ {2}SMTP_RELAY_URL: (must be an smtp|is not a valid URL|has no host|has a malformed %-escape)/m.test(e.message) && !e.message.includes("hunter2") && e.message.split("\n").length === 2,
      url,
    );
  }
});

test("only verified sender domains by default in production without a relay; any behind a relay, in development, or when asked", () => {
  const prod = { NODE_ENV: "production", DATABASE_URL: "postgresql://x/y" };
  assert.equal(loadConfig(prod).SENDER_DOMAINS, "verified");
  assert.equal(loadConfig({ ...prod, SMTP_RELAY_URL: "smtp://relay.example:587" }).SENDER_DOMAINS, "any");
  assert.equal(loadConfig({ ...prod, SENDER_DOMAINS: "any" }).SENDER_DOMAINS, "any");
  assert.equal(loadConfig({}).SENDER_DOMAINS, "any");
  assert.equal(loadConfig({ SENDER_DOMAINS: "verified" }).SENDER_DOMAINS, "verified");
  assert.throws(() => loadConfig({ SENDER_DOMAINS: "some" }), /SENDER_DOMAINS/);
});
