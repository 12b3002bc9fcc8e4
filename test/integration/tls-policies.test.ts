// The TLS policy map through the API (issue 15, item 3): an operator's admin key lists,
// adds and removes rules; a tenant's admin key (limited to some sender domains) may only
// read them; bad input is a 422 naming the field; config rules are listed read-only.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";

let app: TestApp;
let operator: string;
let tenant: string;

before(async () => {
  app = await startTestApp({ SMTP_TLS_POLICY_MAP: ".partner.example required" });
  operator = (await app.createKey({ name: "operator", scopes: ["admin"] })).key;
  tenant = (await app.createKey({ name: "tenant", scopes: ["admin"], domains: ["shop.example"] })).key;
});
after(() => app?.close());

test("an operator adds, lists and removes a rule; the config's rules are listed beside it", async () => {
  const fp = "ab".repeat(32);
  const r = await app.call("POST", "/tls-policies", { key: operator, body: { pattern: "Bank.Example.", mx: ["MX1.bank.example", "*.mail.bank.example"], fingerprints: [fp] } });
  assert.equal(r.status, 201, r.body);
  const rule = r.json() as { id: string; pattern: string; mx: string[]; fingerprints: string[]; origin: string };
  assert.equal(rule.pattern, "bank.example");
  assert.deepEqual(rule.mx, ["mx1.bank.example", "*.mail.bank.example"]);
  assert.deepEqual(rule.fingerprints, [fp.toUpperCase().match(/../g)!.join(":")]);

  const list = (await app.call("GET", "/tls-policies", { key: tenant })).json() as { data: Array<{ pattern: string; origin: string; id: string | null }> };
  assert.deepEqual(list.data.map((x) => [x.pattern, x.origin]), [[".partner.example", "config"], ["bank.example", "api"]]);

  const again = await app.call("POST", "/tls-policies", { key: operator, body: { pattern: "bank.example" } });
  assert.equal(again.status, 409, again.body);
  const config = await app.call("POST", "/tls-policies", { key: operator, body: { pattern: ".partner.example" } });
  assert.equal(config.status, 409, config.body);
  assert.match(config.body, /SMTP_TLS_POLICY_MAP has a rule for \.partner\.example/);

  const del = await app.call("DELETE", `/tls-policies/${rule.id}`, { key: operator });
  assert.equal(del.status, 200, del.body);
  assert.equal((await app.call("DELETE", `/tls-policies/${rule.id}`, { key: operator })).status, 404);
});

test("a tenant's admin key may read the map but not change it", async () => {
  const r = await app.call("POST", "/tls-policies", { key: tenant, body: { pattern: "gmail.com", mx: ["evil.example"] } });
  assert.equal(r.status, 403, r.body);
  assert.match(r.body, /only an admin key not limited to some sender domains may change it/);
  const added = (await app.call("POST", "/tls-policies", { key: operator, body: { pattern: "tenant-test.example" } })).json() as { id: string };
  assert.equal((await app.call("DELETE", `/tls-policies/${added.id}`, { key: tenant })).status, 403);
  const rows = await app.tdb.db.pool.query("SELECT pattern FROM tls_policies WHERE pattern = 'gmail.com'");
  assert.equal(rows.rowCount, 0, "nothing written");
});

test("bad input is a 422 that names the field and what is expected, and changes nothing", async () => {
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ pattern: "not a domain" }, "pattern", /a domain \("example\.com"\) or a leading dot/],
    [{ pattern: "ok.example", mx: ["**.example"] }, "mx[0]", /host names such as "mail\.example\.com"/],
    [{ pattern: "ok.example", fingerprints: ["abc"] }, "fingerprints[0]", /SHA-256 certificate fingerprints: 64 hex digits/],
    [{ pattern: "ok.example", policy: "opportunistic" }, "policy", /required/],
  ];
  for (const [body, path, message] of cases) {
    const r = await app.call("POST", "/tls-policies", { key: operator, body });
    assert.equal(r.status, 422, r.body);
    const problem = r.json() as { errors: Array<{ path: string; message: string }> };
    const e = problem.errors.find((x) => x.path === path);
    assert.ok(e, `${path} named in ${r.body}`);
    assert.match(e.message, message);
  }
  const rows = await app.tdb.db.pool.query("SELECT 1 FROM tls_policies WHERE pattern = 'ok.example'");
  assert.equal(rows.rowCount, 0);
});
