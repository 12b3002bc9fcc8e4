// MTA-STS (RFC 8461), the operator's TLS policy map, REQUIRETLS and TLS-Required: No
// (RFC 8689) (issue 15, items 1, 3, 4 and 5), against
// real peers: a fake DNS, an HTTPS policy server on 127.0.15.1:443 with a certificate from
// the test CA, and SMTP peers on 127.0.15.x, one of them the "attacker's" MX that holds a
// valid certificate for its own name. Every delivery's evidence says which layer made the
// policy what it was.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { issueCertificate } from "../../src/tls/certificates.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns, type FakeZone } from "../helpers/fake-dns.ts";
import { sendMessage, waitForMessage, type MessageView } from "../helpers/messages.ts";
import { peerCertificate, startPeer, testCa, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker, testCaFile } from "../helpers/worker.ts";
import { gunzipSync } from "node:zlib";
import pino from "pino";
import { loadConfig } from "../../src/config.ts";
import { sendTlsReports } from "../../src/worker/tls-report-sender.ts";
import { simpleParser } from "mailparser";
import { testCipher } from "../helpers/app.ts";
import { tlsReportSenderOptions } from "../../src/worker/worker.ts";

const POLICY_IP = "127.0.15.1";
const DOMAINS = ["pooled.test", "reports.test", "relaxed.test", "norequiretls.test", "apirule.test", "enforce.test", "attacked.test", "testing.test", "cached.test", "idchange.test", "redirect.test", "html.test", "big.test", "wild.test", "mapped.test", "pinned.test"];

let app: TestApp;
let key: string;
let dns: FakeDns;
let policyServer: Server;
let good: SmtpPeer; // 127.0.15.2: a CA-signed certificate naming every mx.<domain>; advertises REQUIRETLS
let attacker: SmtpPeer; // 127.0.15.3: a CA-signed certificate for its own name only
let selfSigned: SmtpPeer; // 127.0.15.4: a self-signed certificate, pinned by the map
let noRequireTls: SmtpPeer; // 127.0.15.5: like `good`, without REQUIRETLS in its EHLO
const logs: string[] = [];
/** What the policy server answers, per policy host; a request for another host gets 404. */
const policies = new Map<string, (res: ServerResponse) => void>();
const fetches: string[] = [];
/** TLS reports POSTed to the policy server's /tlsrpt (a domain's rua). */
const reportsPosted: Array<{ host: string; contentType: string; body: Buffer }> = [];

const plain = (body: string) => (res: ServerResponse) => res.writeHead(200, { "content-type": "text/plain" }).end(body);
const policy = (mode: string, mx: string[], maxAge = 86400) => plain(`version: STSv1\r\nmode: ${mode}\r\n${mx.map((m) => `mx: ${m}\r\n`).join("")}max_age: ${maxAge}\r\n`);

function zone(over: FakeZone = {}): FakeZone {
  const z: FakeZone = {};
  for (const d of DOMAINS) {
    z[d] = { MX: [{ preference: 10, exchange: `mx.${d}` }] };
    z[`mx.${d}`] = { A: [d === "pinned.test" ? "127.0.15.4" : d === "norequiretls.test" ? "127.0.15.5" : "127.0.15.2"] };
    z[`mta-sts.${d}`] = { A: [POLICY_IP] };
    z[`_mta-sts.${d}`] = { TXT: ["v=STSv1; id=20261205a;"] };
  }
  z["evil.attacker.test"] = { A: ["127.0.15.3"] };
  z["a.b.wild.test"] = { A: ["127.0.15.2"] };
  for (const d of ["mapped.test", "pinned.test", "apirule.test", "norequiretls.test", "reports.test", "pooled.test"]) delete z[`_mta-sts.${d}`];
  return { ...z, ...over };
}

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  const mxNames = [...DOMAINS.map((d) => `mx.${d}`), "a.b.wild.test"];
  good = await startPeer({ ip: "127.0.15.2", certificate: issueCertificate({ names: mxNames, ca: testCa() }), requireTls: true });
  attacker = await startPeer({ ip: "127.0.15.3", port: good.port, certificate: peerCertificate("ca-signed", "evil.attacker.test") });
  selfSigned = await startPeer({ ip: "127.0.15.4", port: good.port, certificate: "self-signed" });
  noRequireTls = await startPeer({ ip: "127.0.15.5", port: good.port, certificate: issueCertificate({ names: mxNames, ca: testCa() }) });
  const leaf = issueCertificate({ names: DOMAINS.map((d) => `mta-sts.${d}`), ca: testCa() });
  policyServer = createServer({ key: leaf.key, cert: leaf.cert }, (req: IncomingMessage, res: ServerResponse) => {
    const host = (req.headers.host ?? "").toLowerCase();
    if (req.method === "POST" && req.url === "/tlsrpt") {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        reportsPosted.push({ host, contentType: String(req.headers["content-type"]), body: Buffer.concat(chunks) });
        res.writeHead(201).end();
      });
      return;
    }
    fetches.push(`${host}${req.url}`);
    const answer = req.url === "/.well-known/mta-sts.txt" ? policies.get(host) : undefined;
    if (answer) answer(res);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => policyServer.once("error", reject).listen(443, POLICY_IP, resolve));
  dns = await startFakeDns(zone());
});

after(async () => {
  await Promise.all([good, attacker, selfSigned, noRequireTls].map((p) => p?.close()));
  await new Promise<void>((resolve) => (policyServer ? policyServer.close(() => resolve()) : resolve()));
  policyServer?.closeAllConnections();
  await dns?.close();
  await app?.close();
});

function useWorker(t: TestContext, env: Record<string, string> = {}) {
  // DNS_CACHE_TTL=0ms: each delivery asks DNS (and the _mta-sts TXT record) afresh, as a new id must be seen at once here.
  const w = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(good.port), DNS_CACHE_TTL: "0ms", MTA_STS_TIMEOUT: "3s", ...env }, logs);
  t.after(() => w.stop(5000));
  return w;
}

const lastAttempt = (m: MessageView) => m.recipients[0]!.delivery_attempts.at(-1)!;

test("enforce with a matching MX: delivered under `required`, and the evidence says MTA-STS made it so", async (t) => {
  useWorker(t);
  policies.set("mta-sts.enforce.test", policy("enforce", ["mx.enforce.test"]));
  const id = await sendMessage(app, key, { to: "alice@enforce.test" });
  const m = await waitForMessage(app, key, id, ["delivered"], { logs });
  const a = lastAttempt(m);
  assert.equal(m.tls_policy, "opportunistic", "the message itself asked for nothing");
  assert.equal(a.policy, "required");
  assert.equal(a.policy_source, "mta-sts");
  assert.deepEqual(a.policy_detail?.mta_sts, {
    state: "policy", mode: "enforce", id: "20261205a", mx: ["mx.enforce.test"], mx_match: true,
    expires_at: (a.policy_detail?.mta_sts as { expires_at: string }).expires_at,
  });
  assert.equal(a.policy_detail?.accepted, "default");
  assert.equal(a.policy_detail?.mx_name_check, "match");
  assert.equal(a.policy_detail?.verified_by, "pkix");
  assert.equal(a.tls.verified, true);
  const row = await app.tdb.db.pool.query("SELECT mode, policy_id, mx, max_age FROM mta_sts_policies WHERE domain = 'enforce.test'");
  assert.deepEqual(row.rows, [{ mode: "enforce", policy_id: "20261205a", mx: ["mx.enforce.test"], max_age: 86400 }], "cached in Postgres for every worker");
});

test("a policy in the last tenth of its life is fetched again under the same id, and stays in force if that fails", async (t) => {
  useWorker(t);
  policies.set("mta-sts.enforce.test", policy("enforce", ["mx.enforce.test"], 172800));
  await app.tdb.db.pool.query("UPDATE mta_sts_policies SET expires_at = now() + interval '1 hour' WHERE domain = 'enforce.test'");
  const before = fetches.filter((f) => f.startsWith("mta-sts.enforce.test")).length;
  const id = await sendMessage(app, key, { to: "ahead@enforce.test" });
  assert.equal(lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs })).policy_source, "mta-sts");
  assert.equal(fetches.filter((f) => f.startsWith("mta-sts.enforce.test")).length, before + 1, "fetched again, the TXT id unchanged");
  const row = (await app.tdb.db.pool.query("SELECT max_age, expires_at > now() + interval '47 hours' AS renewed FROM mta_sts_policies WHERE domain = 'enforce.test'")).rows[0];
  assert.deepEqual(row, { max_age: 172800, renewed: true });

  // The same, with the policy host failing: the cached policy (still valid) holds.
  await app.tdb.db.pool.query("UPDATE mta_sts_policies SET expires_at = now() + interval '1 hour' WHERE domain = 'enforce.test'");
  policies.set("mta-sts.enforce.test", (res) => res.writeHead(503).end());
  t.after(() => policies.set("mta-sts.enforce.test", policy("enforce", ["mx.enforce.test"])));
  const id2 = await sendMessage(app, key, { to: "ahead2@enforce.test" });
  const a = lastAttempt(await waitForMessage(app, key, id2, ["delivered"], { logs }));
  assert.equal(a.policy_source, "mta-sts");
  assert.match((a.policy_detail?.mta_sts as { stale_error?: string }).stale_error ?? "", /503/);
});

test("enforce with the attacker's MX in DNS: never connected to, deferred with the reason", async (t) => {
  useWorker(t);
  policies.set("mta-sts.attacked.test", policy("enforce", ["mx.attacked.test"]));
  dns.setZone(zone({ "attacked.test": { MX: [{ preference: 10, exchange: "evil.attacker.test" }] } }));
  t.after(() => dns.setZone(zone()));
  const id = await sendMessage(app, key, { to: "alice@attacked.test" });
  const m = await waitForMessage(app, key, id, ["deferred"], { logs });
  const a = lastAttempt(m);
  assert.equal(a.mx_host, null, "no host was tried");
  assert.equal(a.policy, "required");
  assert.equal(a.policy_source, "mta-sts");
  assert.equal(a.smtp.enhanced_code, "4.7.5");
  assert.match(a.smtp.text ?? "", /evil\.attacker\.test does not match the MTA-STS policy of attacked\.test \(mode enforce, id 20261205a, mx mx\.attacked\.test\)/);
  assert.equal(attacker.sessions.length, 0, "the attacker's MX saw no connection");
});

test("testing: delivered under the other policies, with what enforce would have refused", async (t) => {
  useWorker(t);
  policies.set("mta-sts.testing.test", policy("testing", ["mx.other.test"]));
  const id = await sendMessage(app, key, { to: "alice@testing.test" });
  const m = await waitForMessage(app, key, id, ["delivered"], { logs });
  const a = lastAttempt(m);
  assert.equal(a.policy, "opportunistic");
  assert.equal(a.policy_source, "default");
  const sts = a.policy_detail?.mta_sts as { mode: string; mx_match: boolean; would_fail?: string };
  assert.equal(sts.mode, "testing");
  assert.equal(sts.mx_match, false);
  assert.equal(sts.would_fail, "mx.testing.test does not match the policy's mx (mx.other.test)");
});

test("a cached enforce policy holds while the policy host is down and DNS names the attacker", async (t) => {
  useWorker(t);
  policies.set("mta-sts.cached.test", policy("enforce", ["mx.cached.test"]));
  const first = await sendMessage(app, key, { to: "alice@cached.test" });
  assert.equal(lastAttempt(await waitForMessage(app, key, first, ["delivered"], { logs })).policy_source, "mta-sts");

  // A new id (so the policy must be fetched again), the policy host answering 500, the MX now the attacker's.
  policies.set("mta-sts.cached.test", (res) => res.writeHead(500).end());
  dns.setZone(zone({ "_mta-sts.cached.test": { TXT: ["v=STSv1; id=20261205b;"] }, "cached.test": { MX: [{ preference: 10, exchange: "evil.attacker.test" }] } }));
  t.after(() => dns.setZone(zone()));
  const second = await sendMessage(app, key, { to: "bob@cached.test" });
  const a = lastAttempt(await waitForMessage(app, key, second, ["deferred"], { logs }));
  const sts = a.policy_detail;
  assert.equal(a.policy_source, "mta-sts");
  assert.match(a.smtp.text ?? "", /does not match the MTA-STS policy of cached\.test \(mode enforce, id 20261205a/);
  assert.equal(attacker.sessions.length, 0);
  assert.deepEqual([sts?.mta_sts.state, (sts?.mta_sts as { id: string }).id, (sts?.mta_sts as { mx_match: boolean }).mx_match], ["policy", "20261205a", false]);
  assert.match((sts?.mta_sts as { stale_error?: string }).stale_error ?? "", /500/, "the evidence says the refresh failed and the cached policy held");
  const row = await app.tdb.db.pool.query("SELECT policy_id, last_error FROM mta_sts_policies WHERE domain = 'cached.test'");
  assert.equal(row.rows[0].policy_id, "20261205a", "the cached policy stays");
  assert.match(row.rows[0].last_error, /500/, "and the failed refresh is recorded");
});

test("a new TXT id makes the worker fetch the policy again", async (t) => {
  useWorker(t);
  policies.set("mta-sts.idchange.test", policy("testing", ["mx.idchange.test"]));
  const first = await sendMessage(app, key, { to: "alice@idchange.test" });
  assert.equal((lastAttempt(await waitForMessage(app, key, first, ["delivered"], { logs })).policy_detail?.mta_sts as { mode: string }).mode, "testing");
  const before = fetches.filter((f) => f.startsWith("mta-sts.idchange.test")).length;

  policies.set("mta-sts.idchange.test", policy("enforce", ["mx.idchange.test"]));
  dns.setZone(zone({ "_mta-sts.idchange.test": { TXT: ["v=STSv1; id=2;"] } }));
  t.after(() => dns.setZone(zone()));
  const second = await sendMessage(app, key, { to: "bob@idchange.test" });
  const a = lastAttempt(await waitForMessage(app, key, second, ["delivered"], { logs }));
  assert.equal(a.policy_source, "mta-sts");
  assert.deepEqual([(a.policy_detail?.mta_sts as { id: string }).id, (a.policy_detail?.mta_sts as { mode: string }).mode], ["2", "enforce"]);
  assert.equal(fetches.filter((f) => f.startsWith("mta-sts.idchange.test")).length, before + 1, "fetched once more");
});

test("a redirect, text/html or a policy over 64 KiB is no policy at all", async (t) => {
  useWorker(t);
  policies.set("mta-sts.redirect.test", (res) => res.writeHead(302, { location: "https://mta-sts.enforce.test/.well-known/mta-sts.txt" }).end());
  policies.set("mta-sts.html.test", (res) => res.writeHead(200, { "content-type": "text/html" }).end("version: STSv1\r\nmode: enforce\r\nmx: mx.html.test\r\nmax_age: 86400\r\n"));
  policies.set("mta-sts.big.test", plain(`version: STSv1\r\nmode: enforce\r\nmx: mx.big.test\r\nmax_age: 86400\r\n${"x: y\r\n".repeat(14_000)}`));
  const cases = { "redirect.test": /Invalid response code 302/, "html.test": /Invalid Content-Type/, "big.test": /larger than 65536 bytes/ };
  for (const [domain, why] of Object.entries(cases)) {
    const id = await sendMessage(app, key, { to: `alice@${domain}` });
    const a = lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs }));
    assert.equal(a.policy_source, "default", domain);
    const sts = a.policy_detail?.mta_sts as { state: string; reason: string };
    assert.equal(sts.state, "none", domain);
    assert.match(sts.reason, why, domain);
  }
  const rows = await app.tdb.db.pool.query("SELECT domain FROM mta_sts_policies WHERE domain IN ('redirect.test', 'html.test', 'big.test')");
  assert.equal(rows.rowCount, 0, "nothing refused is cached");
});

test("a wildcard covers one label only: a.b.wild.test does not match *.wild.test", async (t) => {
  useWorker(t);
  policies.set("mta-sts.wild.test", policy("enforce", ["*.wild.test"]));
  dns.setZone(zone({ "wild.test": { MX: [{ preference: 10, exchange: "a.b.wild.test" }] } }));
  t.after(() => dns.setZone(zone()));
  const id = await sendMessage(app, key, { to: "alice@wild.test" });
  const a = lastAttempt(await waitForMessage(app, key, id, ["deferred"], { logs }));
  assert.match(a.smtp.text ?? "", /a\.b\.wild\.test does not match the MTA-STS policy of wild\.test/);
});

test("the policy map: `required` from the map, MX names pinned, and a pinned certificate that no CA vouches for", async (t) => {
  const fingerprint = (await import("node:crypto")).createHash("sha256")
    .update(Buffer.from(peerCertificate("self-signed").cert.replace(/-----[^-]+-----|\s/g, ""), "base64")).digest("hex");
  useWorker(t, { SMTP_TLS_POLICY_MAP: `mapped.test required mx=mx.mapped.test, pinned.test required fingerprint=${fingerprint}` });
  const mapped = await sendMessage(app, key, { to: "alice@mapped.test" });
  const pinned = await sendMessage(app, key, { to: "alice@pinned.test" });
  const a = lastAttempt(await waitForMessage(app, key, mapped, ["delivered"], { logs }));
  assert.equal(a.policy, "required");
  assert.equal(a.policy_source, "map");
  assert.deepEqual(a.policy_detail?.map, { pattern: "mapped.test", origin: "config", mx: ["mx.mapped.test"], fingerprints: [] });
  assert.equal((a.policy_detail?.mta_sts as { state: string }).state, "none");

  const p = lastAttempt(await waitForMessage(app, key, pinned, ["delivered"], { logs }));
  assert.equal(p.policy_source, "map");
  assert.equal(p.tls.verified, true);
  assert.equal(p.policy_detail?.verified_by, "fingerprint");
  assert.equal(p.policy_detail?.matched, p.tls.certificate?.fingerprint_sha256);

  // The same map with the MX moved to the attacker: the map's MX names keep it from being tried.
  dns.setZone(zone({ "mapped.test": { MX: [{ preference: 10, exchange: "evil.attacker.test" }] } }));
  t.after(() => dns.setZone(zone()));
  const moved = await sendMessage(app, key, { to: "bob@mapped.test" });
  const d = lastAttempt(await waitForMessage(app, key, moved, ["deferred"], { logs }));
  assert.equal(d.policy_source, "map");
  assert.match(d.smtp.text ?? "", /evil\.attacker\.test is not among the MX hosts the TLS policy map allows for mapped\.test/);
  assert.equal(attacker.sessions.length, 0);
});

test("a rule added with POST /tls-policies is applied by the worker", async (t) => {
  const operator = (await app.createKey({ name: "operator", scopes: ["admin"] })).key;
  const r = await app.call("POST", "/tls-policies", { key: operator, body: { pattern: "apirule.test", mx: ["mx.apirule.test"] } });
  assert.equal(r.status, 201, r.body);
  useWorker(t);
  const id = await sendMessage(app, key, { to: "alice@apirule.test" });
  const a = lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs }));
  assert.equal(a.policy, "required");
  assert.equal(a.policy_source, "map");
  assert.deepEqual(a.policy_detail?.map, { pattern: "apirule.test", origin: "api", mx: ["mx.apirule.test"], fingerprints: [] });
});

test("REQUIRETLS: a `required` message asks the next hop for it when advertised, and goes without it otherwise", async (t) => {
  useWorker(t);
  policies.set("mta-sts.enforce.test", policy("enforce", ["mx.enforce.test"]));
  const strict = await sendMessage(app, key, { to: "requiretls@enforce.test", tls: "required" });
  const loose = await sendMessage(app, key, { to: "loose@enforce.test" });
  const plainHop = await sendMessage(app, key, { to: "carol@norequiretls.test", tls: "required" });
  const [s, l, p] = await Promise.all([strict, loose, plainHop].map((id) => waitForMessage(app, key, id, ["delivered"], { logs })));
  assert.equal(lastAttempt(s!).policy_source, "message", "the message asked first; MTA-STS agrees");
  assert.equal(lastAttempt(s!).policy_detail?.requiretls, true);
  assert.equal(good.received.find((r) => r.to.includes("requiretls@enforce.test"))?.requireTls, true, "MAIL FROM carried REQUIRETLS");
  assert.equal(lastAttempt(l!).policy_detail?.requiretls, false, "MTA-STS makes this hop required, not the message's later ones");
  assert.equal(good.received.find((r) => r.to.includes("loose@enforce.test"))?.requireTls, false);
  assert.equal(lastAttempt(p!).policy_detail?.requiretls, false);
  assert.equal(noRequireTls.received.find((r) => r.to.includes("carol@norequiretls.test"))?.requireTls, false, "not advertised: sent without it");
});

test("TLS-Required: No relaxes MTA-STS only: never the map, nor the message's own `required`", async (t) => {
  useWorker(t, { SMTP_TLS_POLICY_MAP: "mapped.test required mx=mx.mapped.test" });
  policies.set("mta-sts.relaxed.test", policy("enforce", ["mx.relaxed.test"]));
  dns.setZone(zone({
    "relaxed.test": { MX: [{ preference: 10, exchange: "evil.attacker.test" }] },
    "mapped.test": { MX: [{ preference: 10, exchange: "evil.attacker.test" }] },
  }));
  t.after(() => dns.setZone(zone()));
  const headers = { "TLS-Required": "No" };
  const relaxed = await sendMessage(app, key, { to: "alice@relaxed.test", headers });
  const mapped = await sendMessage(app, key, { to: "alice@mapped.test", headers });
  const own = await sendMessage(app, key, { to: "bob@pinned.test", headers, tls: "required" });

  const r = lastAttempt(await waitForMessage(app, key, relaxed, ["delivered"], { logs }));
  assert.equal(r.mx_host, "evil.attacker.test", "the sender chose delivery over the recipient's policy");
  assert.equal(r.policy, "opportunistic");
  assert.deepEqual([r.policy_detail?.tls_required_no, r.policy_detail?.mta_sts.state], [true, "relaxed"]);
  assert.equal(r.policy_detail?.requiretls, false);

  const m = lastAttempt(await waitForMessage(app, key, mapped, ["deferred"], { logs }));
  assert.equal(m.policy_source, "map");
  assert.match(m.smtp.text ?? "", /is not among the MX hosts the TLS policy map allows/);

  // pinned.test's MX has a self-signed certificate and no map rule here: the message's own `required` refuses it.
  const o = lastAttempt(await waitForMessage(app, key, own, ["deferred"], { logs }));
  assert.equal(o.policy_source, "message");
  assert.equal(o.smtp.enhanced_code, "4.7.5");
  assert.equal(selfSigned.received.filter((x) => x.to.includes("bob@pinned.test")).length, 0);

  // Nor the key's `required`.
  const strictKey = (await app.createKey({ name: "strict", tlsPolicy: "required" })).key;
  const keyed = await sendMessage(app, strictKey, { to: "carl@pinned.test", headers });
  const k = lastAttempt(await waitForMessage(app, strictKey, keyed, ["deferred"], { logs }));
  assert.deepEqual([k.policy, k.policy_source, k.policy_detail?.tls_required_no], ["required", "key", true]);
  assert.equal(selfSigned.received.filter((x) => x.to.includes("carl@pinned.test")).length, 0);
});

test("TLS-Required takes only the value No", async () => {
  const r = await app.call("POST", "/send", { key, body: { from: "shop@shop.example", to: "a@enforce.test", subject: "s", text: "t", headers: { "TLS-Required": "Yes" } } });
  assert.equal(r.status, 422, r.body);
  const problem = r.json() as { errors: Array<{ path: string; message: string }> };
  assert.deepEqual(problem.errors.map((e) => e.path), ['headers["TLS-Required"]']);
  assert.match(problem.errors[0]!.message, /^TLS-Required takes only the value "No" \(RFC 8689\)/);
});

test("a report counts sessions, not messages: three messages over one pooled connection are one session", async (t) => {
  useWorker(t, { WORKER_CONCURRENCY: "1" });
  const ids = [];
  for (const n of [1, 2, 3]) ids.push(await sendMessage(app, key, { to: `p${n}@pooled.test` }));
  const sessions = new Set<string | undefined>();
  for (const id of ids) sessions.add(lastAttempt(await waitForMessage(app, key, id, ["delivered"], { logs })).policy_detail?.session);
  assert.equal(sessions.size, 1, "one connection carried all three");
  assert.match([...sessions][0] ?? "", /^[0-9a-f-]{36}$/);
  const operator = (await app.createKey({ name: "pooled reports", scopes: ["admin"] })).key;
  const today = new Date().toISOString().slice(0, 10);
  const r = (await app.call("GET", `/tls-reports?date=${today}&domain=pooled.test`, { key: operator })).json() as { reports: Array<{ policies: Array<{ summary: Record<string, number> }> }> };
  assert.deepEqual(r.reports[0]!.policies[0]!.summary, { "total-successful-session-count": 1, "total-failure-session-count": 0 });
});

test("GET /tls-reports: today's sessions per recipient domain in RFC 8460's format, failures by kind", async () => {
  const operator = (await app.createKey({ name: "reports", scopes: ["admin"] })).key;
  const today = new Date().toISOString().slice(0, 10);
  const r = await app.call("GET", `/tls-reports?date=${today}`, { key: operator });
  assert.equal(r.status, 200, r.body);
  const body = r.json() as { date: string; reports: Array<{ "report-id": string; policies: Array<{ policy: Record<string, unknown>; summary: Record<string, number>; "failure-details": Array<Record<string, unknown>> }> }> };
  assert.equal(body.date, today);
  const of = (domain: string) => body.reports.find((x) => x["report-id"].startsWith(`${today}.${domain}@`));

  const enforce = of("enforce.test")!;
  const sts = enforce.policies.find((p) => p.policy["policy-type"] === "sts")!;
  assert.deepEqual(sts.policy["policy-string"], ["version: STSv1", "mode: enforce", "mx: mx.enforce.test", "max_age: 86400"]);
  assert.ok(sts.summary["total-successful-session-count"]! >= 3, JSON.stringify(sts.summary));
  assert.equal(sts.summary["total-failure-session-count"], 0);

  const attacked = of("attacked.test")!.policies[0]!;
  assert.ok(attacked.summary["total-failure-session-count"]! >= 1);
  assert.equal(attacked["failure-details"][0]!["result-type"], "validation-failure");
  assert.equal(attacked["failure-details"][0]!["failure-reason-code"], "mx-not-in-policy");

  const testing = of("testing.test")!.policies[0]!;
  assert.equal(testing.summary["total-failure-session-count"], 1, "testing mode delivered to an MX outside the policy: a failure of it");
  assert.equal(testing["failure-details"][0]!["receiving-mx-hostname"], "mx.testing.test");

  const none = of("redirect.test")!.policies[0]!;
  assert.deepEqual([none.policy["policy-type"], none.summary["total-successful-session-count"]], ["no-policy-found", 1]);

  const tenant = (await app.createKey({ name: "tenant reports", scopes: ["admin"], domains: ["shop.example"] })).key;
  assert.equal((await app.call("GET", "/tls-reports", { key: tenant })).status, 403);
});

test("TLS_REPORTS_SEND: the day's report goes gzipped to the https and the mailto rua a domain publishes, once each", async (t) => {
  dns.setZone(zone({ "_smtp._tls.enforce.test": { TXT: ["v=TLSRPTv1; rua=https://mta-sts.enforce.test/tlsrpt,mailto:tlsrpt@reports.test"] } }));
  t.after(() => dns.setZone(zone()));
  const config = loadConfig({
    NODE_ENV: "test", DNS_SERVERS: dns.address, SMTP_CA_FILE: testCaFile(), SMTP_HELO_NAME: "sealpost.test", TLS_REPORTS_SEND: "on",
    SMTP_MX_PORT: String(good.port), TLS_REPORT_FROM: "tlsrpt@sealpost.test",
  });
  const o = tlsReportSenderOptions({ config, db: app.tdb.db, logger: pino({ level: "silent" }), cipher: testCipher() });
  const today = new Date().toISOString().slice(0, 10);
  const first = await sendTlsReports(o, today);
  assert.deepEqual(first.map((s) => [s.domain, s.rua, s.state]), [
    ["enforce.test", "https://mta-sts.enforce.test/tlsrpt", "sent"],
    ["enforce.test", "mailto:tlsrpt@reports.test", "sent"],
  ]);
  // The mailed report, as RFC 8460 section 3 describes it, read with mailparser.
  const mailed = good.received.find((r) => r.to.includes("tlsrpt@reports.test"))!;
  assert.equal(mailed.from, "tlsrpt@sealpost.test");
  const parsed = await simpleParser(mailed.data);
  assert.equal(parsed.subject, `Report Domain: enforce.test Submitter: sealpost.test Report-ID: <${today}.enforce.test@sealpost.test>`);
  assert.equal(parsed.headers.get("tls-report-domain"), "enforce.test");
  assert.equal(parsed.headers.get("tls-report-submitter"), "sealpost.test");
  const ct = parsed.headers.get("content-type") as { value: string; params: Record<string, string> };
  assert.deepEqual([ct.value, ct.params["report-type"]], ["multipart/report", "tlsrpt"]);
  const gz = parsed.attachments.find((a) => a.contentType === "application/tlsrpt+gzip")!;
  assert.match(gz.filename ?? "", /^sealpost\.test!enforce\.test!\d+!\d+\.json\.gz$/);
  assert.equal(JSON.parse(gunzipSync(gz.content).toString("utf8"))["report-id"], `${today}.enforce.test@sealpost.test`);
  assert.equal(reportsPosted.length, 1);
  const posted = reportsPosted[0]!;
  assert.equal(posted.host, "mta-sts.enforce.test");
  assert.equal(posted.contentType, "application/tlsrpt+gzip");
  const report = JSON.parse(gunzipSync(posted.body).toString("utf8"));
  assert.equal(report["report-id"], `${today}.enforce.test@sealpost.test`);
  assert.equal(report["organization-name"], "sealpost.test");
  assert.equal(report.policies[0].policy["policy-type"], "sts");
  assert.ok(report.policies[0].summary["total-successful-session-count"] >= 3);

  assert.deepEqual(await sendTlsReports(o, today), [], "another run (or worker) sends nothing again");
  assert.equal(reportsPosted.length, 1);
  const rows = await app.tdb.db.pool.query("SELECT rua, state, last_status FROM tls_report_submissions ORDER BY rua");
  assert.deepEqual(rows.rows, [
    { rua: "https://mta-sts.enforce.test/tlsrpt", state: "sent", last_status: 201 },
    { rua: "mailto:tlsrpt@reports.test", state: "sent", last_status: 250 },
  ]);
  assert.equal(good.received.filter((r) => r.to.includes("tlsrpt@reports.test")).length, 1);
});
