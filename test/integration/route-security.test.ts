// Applies the common security tests to every route of ROUTES that needs a key. The
// list is read from the code, so a new route is covered (or this file fails, asking
// for a fixture) without anyone remembering to add it here.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { ROUTES } from "../../src/api/routes/index.ts";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { runCommonRouteTests } from "../helpers/route-security.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";

let t: TestApp;
let dns: FakeDns;
before(async () => {
  // POST /domains/:id/verify asks DNS: an empty fake zone answers NXDOMAIN at once.
  dns = await startFakeDns({});
  t = await startTestApp({ DNS_SERVERS: dns.address });
});
after(async () => {
  await t.close();
  await dns.close();
});

/** What each scoped route needs to be called successfully, by operationId. */
const FIXTURES: Record<string, { body?: () => unknown; okStatus: number }> = {
  sendMessage: { body: () => validSend(), okStatus: 202 },
  sendMessageBatch: { body: () => ({ messages: [validSend()] }), okStatus: 200 },
  listMessages: { okStatus: 200 },
  getMessage: { okStatus: 200 },
  getMessageEvents: { okStatus: 200 },
  cancelMessage: { okStatus: 200 },
  listEvents: { okStatus: 200 },
  createWebhook: { body: () => ({ url: "https://hooks.shop.example/sealpost" }), okStatus: 201 },
  listWebhooks: { okStatus: 200 },
  getWebhook: { okStatus: 200 },
  updateWebhook: { body: () => ({ description: "orders" }), okStatus: 200 },
  deleteWebhook: { okStatus: 200 },
  rotateWebhookSecret: { okStatus: 200 },
  testWebhook: { okStatus: 202 },
  listWebhookDeliveries: { okStatus: 200 },
  retryWebhookDeliveries: { body: () => ({}), okStatus: 200 },
  createDomain: { body: () => ({ name: `d${randomBytes(6).toString("hex")}.example` }), okStatus: 201 },
  listDomains: { okStatus: 200 },
  listTlsPolicies: { okStatus: 200 },
  listTlsReports: { okStatus: 200 },
  createTlsPolicy: { body: () => ({ pattern: `p${randomBytes(6).toString("hex")}.example` }), okStatus: 201 },
  deleteTlsPolicy: { okStatus: 200 },
  getDomain: { okStatus: 200 },
  deleteDomain: { okStatus: 200 },
  getMessageReceipt: { okStatus: 200 },
  listSuppressions: { okStatus: 200 },
  createSuppression: { body: () => ({ address: `s${randomBytes(4).toString("hex")}@example.com`, domain: "shop.example" }), okStatus: 201 },
  deleteSuppression: { okStatus: 200 },
  verifyDomain: { okStatus: 200 },
  rotateDkim: { okStatus: 200 },
};

const scoped = ROUTES.filter((r) => r.scope !== null);

for (const route of scoped) {
  const fixture = FIXTURES[route.operationId];
  if (!fixture) {
    test(`route ${route.operationId} has a route-security fixture`, () => {
      assert.fail(`${route.method} ${route.url} requires a key but has no entry in FIXTURES of ${import.meta.url}`);
    });
    continue;
  }
  runCommonRouteTests(() => t, {
    method: route.method,
    path: (id) => route.url.replace(":id", id).replace(":address", id),
    scope: route.scope!,
    ...(fixture.body ? { body: fixture.body } : {}),
    resource: route.url.includes(":address") ? "suppression" : !route.url.includes(":id") ? null : route.url.startsWith("/domains") ? "domain" : route.url.startsWith("/webhooks") ? "webhook" : route.url.startsWith("/tls-policies") ? "tls-policy" : "message",
    okStatus: fixture.okStatus,
  });
}

test("every fixture names a route that exists and needs a key (no stale entries)", () => {
  const ids = new Set(scoped.map((r) => r.operationId));
  for (const name of Object.keys(FIXTURES)) assert.ok(ids.has(name), `FIXTURES.${name} matches no scoped route`);
  assert.ok(scoped.length >= 5, "the API has at least five key-protected routes");
});

test("routes without a scope answer without a key", async () => {
  for (const route of ROUTES.filter((r) => r.scope === null)) {
    const r = await t.call(route.method, route.url);
    assert.equal(r.status, 200, `${route.method} ${route.url}: ${r.body}`);
  }
});
