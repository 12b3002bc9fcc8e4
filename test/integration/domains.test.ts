// Sender domains (issue 11, part 1 and 2): an admin key adds a domain and gets the DNS
// records to publish; each domain gets an RSA-2048 and an Ed25519 key pair whose private
// halves are stored encrypted and bound to their row; bad input is a problem naming the
// field, and writes nothing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey } from "node:crypto";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { assertProblem } from "../helpers/route-security.ts";
import { ContentDecryptError } from "../../src/security/content-cipher.ts";
import { dkimKeyAad } from "../../src/security/dkim-keys.ts";
import { findKeyIdsInUse } from "../../src/db/content.ts";
import { createTxtResolver } from "../../src/worker/mx.ts";
import { startFakeDns, type FakeDns, type FakeZone } from "../helpers/fake-dns.ts";

let t: TestApp;
let admin: string;
let dns: FakeDns;

before(async () => {
  dns = await startFakeDns({});
  // The resolver the worker uses, pointed at the fake DNS, with a short timeout so a
  // dropped query turns pending quickly.
  t = await startTestApp({ BOUNCE_MX_HOST: "bounce-in.sealpost.test", SMTP_SOURCE_IPS: "192.0.2.25" }, { dns: createTxtResolver({ servers: [dns.address], timeoutMs: 300, tries: 1 }) });
  admin = (await t.createKey({ name: "admin", scopes: ["admin"] })).key;
});
after(async () => {
  await t.close();
  await dns.close();
});

const rows = async () =>
  (await t.tdb.db.pool.query(`SELECT (SELECT count(*)::int FROM sender_domains) AS domains, (SELECT count(*)::int FROM dkim_keys) AS keys`)).rows[0] as {
    domains: number;
    keys: number;
  };

interface DomainBody {
  id: string;
  name: string;
  status: string;
  bounce_domain: string | null;
  bounce_status: string | null;
  dkim: Array<{ selector: string; algorithm: string }>;
  records: Array<{ purpose: string; type: string; name: string; value: string; state: string; found: string | null }>;
}

test("adding a domain makes two key pairs under dated selectors and answers the records to publish", async () => {
  const r = await t.call("POST", "/domains", { key: admin, body: { name: "Shop.Example", bounce_domain: "bounces.shop.example" } });
  assert.equal(r.status, 201, r.body);
  assert.doesNotMatch(r.body, /PRIVATE KEY|private/i, "no private key in the answer");
  const d = r.json() as DomainBody;
  assert.equal(d.name, "shop.example");
  assert.equal(d.status, "pending");
  const now = new Date();
  const month = `${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
  assert.deepEqual(d.dkim.map((k) => [k.selector, k.algorithm]), [[`sp${month}e`, "ed25519-sha256"], [`sp${month}r`, "rsa-sha256"]]);
  assert.deepEqual(d.records.map((x) => [x.purpose, x.type, x.name]), [
    ["dkim", "TXT", `sp${month}e._domainkey.shop.example`],
    ["dkim", "TXT", `sp${month}r._domainkey.shop.example`],
    ["spf", "TXT", "bounces.shop.example"],
    ["dmarc", "TXT", "_dmarc.shop.example"],
    ["bounce_mx", "MX", "bounces.shop.example"],
  ]);
  assert.equal(d.records[4]!.value, "10 bounce-in.sealpost.test");
  assert.equal(d.bounce_status, "pending");
  assert.match(d.records[2]!.value, /^v=spf1 /);
  assert.match(d.records[3]!.value, /^v=DMARC1; p=/);

  // The published public key is the public half of the stored private key, for each algorithm.
  const stored = (await t.tdb.db.pool.query(`SELECT id, selector, algorithm, private_key FROM dkim_keys ORDER BY selector`)).rows as Array<{
    id: string; selector: string; algorithm: string; private_key: Buffer;
  }>;
  assert.equal(stored.length, 2);
  for (const k of stored) {
    assert.doesNotMatch(k.private_key.toString("latin1"), /PRIVATE KEY/, "the private key is stored encrypted");
    const pem = t.cipher.decrypt(k.private_key, dkimKeyAad(k.id)).toString("utf8");
    const priv = createPrivateKey(pem);
    const spki = createPublicKey(priv).export({ format: "der", type: "spki" });
    const record = d.records.find((x) => x.name.startsWith(`${k.selector}.`))!;
    if (k.algorithm === "rsa-sha256") {
      assert.equal(priv.asymmetricKeyType, "rsa");
      assert.equal(priv.asymmetricKeyDetails?.modulusLength, 2048);
      assert.equal(record.value, `v=DKIM1; k=rsa; p=${spki.toString("base64")}`);
    } else {
      assert.equal(priv.asymmetricKeyType, "ed25519");
      // RFC 8463 section 4.2: the bare 32-byte key, 44 characters of base64.
      assert.equal(record.value, `v=DKIM1; k=ed25519; p=${spki.subarray(-32).toString("base64")}`);
      assert.equal(record.value.split("p=")[1]!.length, 44);
    }
  }
  // Bound to its row: the other row's ciphertext does not decrypt under this row's id.
  assert.throws(() => t.cipher.decrypt(stored[0]!.private_key, dkimKeyAad(stored[1]!.id)), ContentDecryptError);

  // Data-key rotation must not retire the key the private keys are under (no message uses it here).
  assert.deepEqual(await findKeyIdsInUse(t.tdb.db.prisma), [t.cipher.currentKeyId]);

  const shown = await t.call("GET", `/domains/${d.id}`, { key: admin });
  assert.deepEqual(shown.json(), d);
  const list = await t.call("GET", "/domains", { key: admin });
  assert.deepEqual((list.json() as { data: DomainBody[] }).data.map((x) => x.name), ["shop.example"]);
});

test("bad input is a problem naming the field, and writes nothing", async () => {
  await t.call("POST", "/domains", { key: admin, body: { name: "taken.example" } });
  const limited = (await t.createKey({ name: "limited", scopes: ["admin"], domains: ["mine.example"] })).key;
  const before = await rows();
  const cases: Array<[string, unknown, number, string, string]> = [
    ["invalid name", { name: "not a domain" }, 422, "invalid_request", "name"],
    ["single label", { name: "localhost" }, 422, "invalid_request", "name"],
    ["IP literal", { name: "[192.0.2.1]" }, 422, "invalid_request", "name"],
    ["bare IPv4", { name: "192.0.2.1" }, 422, "invalid_request", "name"],
    ["missing name", {}, 422, "invalid_request", "name"],
    ["unknown field", { name: "ok.example", dkim: "mine" }, 422, "invalid_request", ""],
    ["bounce domain elsewhere", { name: "ok.example", bounce_domain: "bounces.other.example" }, 422, "invalid_request", "bounce_domain"],
    ["bounce domain is the domain", { name: "ok.example", bounce_domain: "ok.example" }, 422, "invalid_request", "bounce_domain"],
    ["duplicate", { name: "TAKEN.example" }, 409, "conflict", "name"],
  ];
  for (const [what, body, status, code, field] of cases) {
    const p = assertProblem(await t.call("POST", "/domains", { key: admin, body }), status, code as "invalid_request", what);
    if (field) assert.ok(p.errors?.some((e) => e.path === field), `${what}: errors name ${field}: ${JSON.stringify(p.errors)}`);
  }
  // A key whose --domains do not cover the name may not add it (and learns nothing about it).
  const p = assertProblem(await t.call("POST", "/domains", { key: limited, body: { name: "taken.example" } }), 403, "forbidden", "another key's domain");
  assert.match(p.detail, /may not send from taken\.example/);
  assertProblem(await t.call("POST", "/domains", { key: limited, body: { name: "other.example" } }), 403, "forbidden", "uncovered new domain");
  assert.deepEqual(await rows(), before, "nothing was written");
});

test("a key limited by --domains sees and removes only its own domains", async () => {
  const limited = (await t.createKey({ name: "mine only", scopes: ["admin"], domains: ["mine.example"] })).key;
  const mine = (await t.call("POST", "/domains", { key: limited, body: { name: "mine.example" } })).json() as DomainBody;
  const theirs = (await t.call("POST", "/domains", { key: admin, body: { name: "theirs.example" } })).json() as DomainBody;
  assert.deepEqual(((await t.call("GET", "/domains", { key: limited })).json() as { data: DomainBody[] }).data.map((d) => d.name), ["mine.example"]);
  assertProblem(await t.call("GET", `/domains/${theirs.id}`, { key: limited }), 404, "not_found");
  assertProblem(await t.call("DELETE", `/domains/${theirs.id}`, { key: limited }), 404, "not_found");
  assert.equal((await t.call("GET", `/domains/${theirs.id}`, { key: admin })).status, 200, "still there");

  const del = await t.call("DELETE", `/domains/${mine.id}`, { key: limited });
  assert.equal(del.status, 200, del.body);
  assert.deepEqual(del.json(), { id: mine.id, deleted: true });
  assertProblem(await t.call("GET", `/domains/${mine.id}`, { key: limited }), 404, "not_found");
  assertProblem(await t.call("DELETE", `/domains/${mine.id}`, { key: limited }), 404, "not_found");
  const left = (await t.tdb.db.pool.query(`SELECT count(*)::int AS n FROM dkim_keys WHERE domain_id = $1`, [mine.id])).rows[0].n;
  assert.equal(left, 0, "its keys went with it");
});

test("a send-and-read key has no admin scope unless asked: /domains is 403", async () => {
  const plain = (await t.createKey({ name: "default scopes" })).key;
  assertProblem(await t.call("GET", "/domains", { key: plain }), 403, "forbidden");
});

/** A TXT value as a zone file holds a long one: 255-byte character-strings. */
const split = (value: string) => value.match(/.{1,255}/g)!;

interface VerifyBody {
  status: string;
  bounce_status: string | null;
  checks: Array<{ purpose: string; name: string; state: string; found: string | null; expected: string; detail: string; policy?: string }>;
  domain: { status: string; verified_at: string | null; checked_at: string | null };
}

test("verify: each record's state from DNS; missing, wrong and a timeout are told apart", async () => {
  const d = (await t.call("POST", "/domains", { key: admin, body: { name: "verify.example", bounce_domain: "mail.verify.example" } })).json() as DomainBody;
  const rec = (purpose: string, i = 0) => d.records.filter((r) => r.purpose === purpose)[i]!;
  const [ed, rsa] = [rec("dkim", 0), rec("dkim", 1)];
  const good: FakeZone = {
    [ed.name]: { TXT: [ed.value] },
    [rsa.name]: { TXT: [split(rsa.value)] },
    "mail.verify.example": { TXT: ["v=spf1 ip4:192.0.2.25 -all", "google-site-verification=abc"], MX: [{ preference: 10, exchange: "bounce-in.sealpost.test" }] },
    "_dmarc.verify.example": { TXT: ["v=DMARC1; p=quarantine; rua=mailto:d@verify.example"] },
  };
  const verify = async () => {
    const r = await t.call("POST", `/domains/${d.id}/verify`, { key: admin });
    assert.equal(r.status, 200, r.body);
    return r.json() as VerifyBody;
  };
  // By name, and the bounce domain's MX apart from its SPF record at the same name.
  const states = (v: VerifyBody) => Object.fromEntries(v.checks.map((c) => [c.purpose === "bounce_mx" ? `MX ${c.name}` : c.name, c.state]));

  // Nothing published yet: every record missing, the domain not verified.
  dns.setZone({});
  let v = await verify();
  assert.equal(v.status, "failed");
  assert.deepEqual(Object.values(states(v)), ["missing", "missing", "missing", "missing", "missing"]);
  assert.equal(v.bounce_status, "failed");
  assert.equal(v.domain.status, "pending");

  dns.setZone(good);
  v = await verify();
  assert.equal(v.status, "verified", JSON.stringify(v.checks));
  assert.deepEqual(Object.values(states(v)), ["ok", "ok", "ok", "ok", "ok"]);
  assert.equal(v.bounce_status, "verified");
  assert.equal(v.checks.find((c) => c.purpose === "dmarc")!.policy, "quarantine");
  assert.equal(v.checks.find((c) => c.purpose === "dkim" && c.name === rsa.name)!.found, rsa.value, "the split record is joined");
  assert.equal(v.domain.status, "verified");
  const verifiedAt = v.domain.verified_at;
  assert.ok(verifiedAt);
  const shown = (await t.call("GET", `/domains/${d.id}`, { key: admin })).json() as DomainBody;
  assert.equal(shown.status, "verified");
  // The view keeps what the last verify found for each record.
  assert.deepEqual(shown.records.map((r) => r.state), ["ok", "ok", "ok", "ok", "ok"]);
  assert.equal(shown.records.find((r) => r.purpose === "dmarc")!.found, "v=DMARC1; p=quarantine; rua=mailto:d@verify.example");
  assert.ok(d.records.every((r) => r.state === "unchecked"), "before any verify, every record is unchecked");

  // Each DKIM record missing, then wrong: failed, naming what was found and what is expected.
  for (const r of [ed, rsa]) {
    dns.setZone({ ...good, [r.name]: { TXT: ["unrelated"] } });
    v = await verify();
    assert.equal(v.status, "failed");
    assert.equal(states(v)[r.name], "missing", r.name);
    const other = r === ed ? "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" : "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAold";
    dns.setZone({ ...good, [r.name]: { TXT: [other] } });
    v = await verify();
    const c = v.checks.find((x) => x.name === r.name)!;
    assert.equal(c.state, "mismatch");
    assert.equal(c.found, other);
    assert.equal(c.expected, r.value);
    assert.equal(v.domain.status, "pending", "a wrong DKIM record un-verifies the domain");
  }
  // SPF missing or doubled, DMARC missing: reported, but DKIM alone decides verification.
  dns.setZone({ ...good, "mail.verify.example": { ...good["mail.verify.example"], TXT: ["v=spf1 -all", "v=spf1 mx -all"] }, "_dmarc.verify.example": { rcode: "NXDOMAIN" } });
  v = await verify();
  assert.equal(v.status, "verified");
  assert.equal(states(v)["mail.verify.example"], "invalid");
  assert.equal(v.bounce_status, "failed", "the bounce domain needs its SPF record");
  assert.equal(states(v)["_dmarc.verify.example"], "missing");
  dns.setZone({ ...good, "mail.verify.example": { ...good["mail.verify.example"], TXT: ["not spf"] } });
  assert.equal(states(await verify())["mail.verify.example"], "missing");
  // SPF evaluated by mailauth for the configured source address (SMTP_SOURCE_IPS), includes followed.
  dns.setZone({ ...good, "mail.verify.example": { ...good["mail.verify.example"], TXT: ["v=spf1 ip4:198.51.100.7 -all"] } });
  v = await verify();
  const spf = v.checks.find((c) => c.purpose === "spf")!;
  assert.equal(spf.state, "mismatch");
  assert.match(spf.detail, /does not permit 192\.0\.2\.25 \(fail\): add ip4:192\.0\.2\.25/);
  assert.equal(v.bounce_status, "failed", "the bounce domain needs an SPF record that permits the sending address");
  dns.setZone({ ...good, "mail.verify.example": { ...good["mail.verify.example"], TXT: ["v=spf1 include:_spf.relay.example -all"] },
    "_spf.relay.example": { TXT: ["v=spf1 ip4:192.0.2.0/24 -all"] } });
  v = await verify();
  assert.equal(v.checks.find((c) => c.purpose === "spf")!.state, "ok", "permitted through an include");
  assert.equal(v.bounce_status, "verified");
  // The bounce domain's MX: missing, or naming another host.
  dns.setZone({ ...good, "mail.verify.example": { TXT: good["mail.verify.example"]!.TXT } });
  v = await verify();
  assert.equal(states(v)["MX mail.verify.example"], "missing");
  assert.equal(v.bounce_status, "failed");
  assert.equal(v.status, "verified", "DKIM alone decides the domain's verification");
  dns.setZone({ ...good, "mail.verify.example": { ...good["mail.verify.example"], MX: [{ preference: 5, exchange: "mx.elsewhere.example" }] } });
  v = await verify();
  const mx = v.checks.find((c) => c.purpose === "bounce_mx")!;
  assert.deepEqual([mx.state, mx.found, mx.expected], ["mismatch", "mx.elsewhere.example", "10 bounce-in.sealpost.test"]);

  // DMARC as receivers find it (mailauth's policy discovery): a record above the domain applies to it.
  dns.setZone({ ...good, "_dmarc.verify.example": { rcode: "NXDOMAIN" }, "_dmarc.example": { TXT: ["v=DMARC1; p=reject; adkim=s"] } });
  const inherited = (await verify()).checks.find((c) => c.purpose === "dmarc")!;
  assert.equal(inherited.state, "ok", JSON.stringify(inherited));
  assert.equal(inherited.policy, "reject");
  assert.match(inherited.detail, /DKIM alignment strict, SPF alignment relaxed, inherited from _dmarc\.example/);

  // A DNS timeout is pending, not failed, and leaves the verification as it was.
  dns.setZone({ ...good, [rsa.name]: { drop: true } });
  v = await verify();
  assert.equal(v.status, "pending");
  assert.equal(states(v)[rsa.name], "pending");
  assert.equal(v.domain.status, "verified");
  dns.setZone({ ...good, [ed.name]: { rcode: "SERVFAIL" } });
  assert.equal((await verify()).status, "pending");
  assert.ok(v.domain.checked_at);
});
