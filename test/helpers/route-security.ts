// Security checks every authenticated route must pass, written once and applied to
// each route (the pattern of unkey's runCommonRouteTests): missing, malformed, wrong,
// revoked and under-scoped keys, keys in the URL, and another key's message. Every
// refusal must be an RFC 9457 problem+json whose request_id matches X-Request-Id.
import { describe, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { ErrorCode } from "../../src/domain/errors.ts";
import { revokeApiKey, SCOPES, type Scope } from "../../src/services/api-keys.ts";
import { validSend, type TestApp } from "./app.ts";
import type { Response } from "./https-client.ts";
import type { ProblemView, SendResponseView } from "../../src/api/schemas.ts";

const PROBLEM_FIELDS = ["type", "title", "status", "detail", "code", "request_id"] as const;

/**
 * Asserts an RFC 9457 problem response with the given status and code and returns
 * its body. `note` is added to assertion messages (e.g. the case name).
 */
export function assertProblem(res: Response, status: number, code: ErrorCode, note = ""): ProblemView {
  const where = `${note ? `${note}: ` : ""}HTTP ${res.status} ${res.body.slice(0, 300)}`;
  assert.equal(res.status, status, where);
  assert.match(String(res.headers["content-type"]), /^application\/problem\+json\b/, where);
  const body = res.json() as ProblemView;
  for (const f of PROBLEM_FIELDS) assert.ok(f in body, `${where}: problem body lacks "${f}"`);
  assert.equal(typeof body.type, "string", where);
  assert.equal(typeof body.title, "string", where);
  assert.equal(typeof body.detail, "string", where);
  assert.equal(body.status, status, where);
  assert.equal(body.code, code, where);
  assert.equal(typeof body.request_id, "string", where);
  assert.equal(res.headers["x-request-id"], body.request_id, `${where}: X-Request-Id must equal request_id`);
  // RFC 6750 section 3: a 401 names the scheme the client must use.
  if (status === 401) assert.match(String(res.headers["www-authenticate"]), /^Bearer\b/, `${where}: 401 without WWW-Authenticate: Bearer`);
  return body;
}

export interface CommonRouteCase {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  /** Builds the request path; `resourceId` names a message, domain or webhook endpoint of the owning key (ignored by routes without an id). */
  path: (resourceId: string) => string;
  /** The scope the route requires. */
  scope: Scope;
  /** A valid body for the route, built fresh for each request. */
  body?: () => unknown;
  /** What the path's id names, if anything: also check that another key's one is 404. */
  resource: "message" | "domain" | "webhook" | "suppression" | "tls-policy" | null;
  /** Status of a successful call with a proper key (the positive control). */
  okStatus: number;
}

/** Swaps the secret of a well-formed key for another well-formed secret. */
function withWrongSecret(key: string): string {
  const m = /^(sp_[0-9a-f]{16}_)([a-z2-7]{52})$/.exec(key);
  assert.ok(m, `unexpected key format ${key.slice(0, 20)}...`);
  const wrong = m[2]!.startsWith("a") ? "b".repeat(52) : "a".repeat(52);
  return m[1]! + wrong;
}

/**
 * Registers a `describe` block with the common security tests of one route.
 * `getApp` is read when the tests run, so the app may be started in the file's `before`.
 */
export function runCommonRouteTests(getApp: () => TestApp, route: CommonRouteCase): void {
  const label = `${route.method} ${route.path(":id")} (scope ${route.scope})`;
  describe(`route security: ${label}`, () => {
    let owner: { key: string; id: string };
    let resourceId = "00000000-0000-4000-8000-000000000000";
    const path = () => route.path(resourceId);
    const call = (opts: { key?: string; headers?: Record<string, string>; query?: string } = {}) =>
      getApp().call(route.method, path() + (opts.query ?? ""), {
        ...(opts.key ? { key: opts.key } : {}),
        ...(opts.headers ? { headers: opts.headers } : {}),
        ...(route.body ? { body: route.body() } : {}),
      });

    before(async () => {
      const t = getApp();
      owner = await t.createKey({ name: `owner of ${label}`, scopes: [...SCOPES] });
      // The message or domain exists and belongs to `owner`, so any refusal below is about the key alone.
      if (route.resource === "message") {
        const r = await t.call("POST", "/send", { key: owner.key, body: validSend() });
        assert.equal(r.status, 202, r.body);
        resourceId = (r.json() as SendResponseView).id;
      } else if (route.resource === "webhook") {
        const r = await t.call("POST", "/webhooks", { key: owner.key, body: { url: "https://hooks.shop.example/sealpost" } });
        assert.equal(r.status, 201, r.body);
        resourceId = (r.json() as { id: string }).id;
      } else if (route.resource === "domain") {
        const r = await t.call("POST", "/domains", { key: owner.key, body: { name: `d${randomBytes(6).toString("hex")}.example` } });
        assert.equal(r.status, 201, r.body);
        resourceId = (r.json() as { id: string }).id;
      } else if (route.resource === "tls-policy") {
        const r = await t.call("POST", "/tls-policies", { key: owner.key, body: { pattern: `t${randomBytes(6).toString("hex")}.example` } });
        assert.equal(r.status, 201, r.body);
        resourceId = (r.json() as { id: string }).id;
      } else if (route.resource === "suppression") {
        // An address on the list of a domain only the owner may send from; its "id" is the address.
        owner = await t.createKey({ name: `owner of ${label}`, scopes: [...SCOPES], domains: ["owner.example"] });
        const address = `gone${randomBytes(4).toString("hex")}@example.com`;
        const r = await t.call("POST", "/suppressions", { key: owner.key, body: { address } });
        assert.equal(r.status, 201, r.body);
        resourceId = address;
      }
    });

    test("no Authorization header is 401 with WWW-Authenticate: Bearer", async () => {
      assertProblem(await call(), 401, "unauthorized");
    });

    test("malformed keys and other schemes are 401", async () => {
      const bad = [
        "Bearer not-a-key",
        "Bearer sp_123_abc",
        `Bearer ${owner.key.toUpperCase()}`,
        `Bearer ${owner.key}x`,
        `Basic ${Buffer.from(`user:${owner.key}`).toString("base64")}`,
        `${owner.key}`, // no scheme at all
        "Bearer",
      ];
      for (const authorization of bad) assertProblem(await call({ headers: { authorization } }), 401, "unauthorized", authorization.slice(0, 30));
    });

    test("a well-formed key with a wrong secret, or an unknown id, is 401", async () => {
      assertProblem(await call({ key: withWrongSecret(owner.key) }), 401, "unauthorized", "wrong secret");
      const unknownId = owner.key.replace(/^sp_[0-9a-f]{16}_/, "sp_0000000000000000_");
      assertProblem(await call({ key: unknownId }), 401, "unauthorized", "unknown id");
    });

    test("a revoked key is 401", async () => {
      const t = getApp();
      const k = await t.createKey({ name: "revoked" });
      assert.equal(await revokeApiKey(t.tdb.db.prisma, k.id), true);
      assertProblem(await call({ key: k.key }), 401, "unauthorized");
    });

    test(`a key without the "${route.scope}" scope is 403 forbidden`, async () => {
      const others = SCOPES.filter((s) => s !== route.scope);
      const k = await getApp().createKey({ name: "wrong scope", scopes: others });
      assertProblem(await call({ key: k.key }), 403, "forbidden");
    });

    test("a key in the query string is refused, even next to a valid header", async () => {
      for (const name of ["api_key", "access_token"]) {
        const query = `?${name}=${encodeURIComponent(owner.key)}`;
        assertProblem(await call({ query }), 401, "unauthorized", `${name} alone`);
        assertProblem(await call({ key: owner.key, query }), 401, "unauthorized", `${name} with header`);
      }
    });

    // A TLS policy rule is the installation's, not a key's: any operator key may remove it
    // (test/integration/tls-policies.test.ts checks that a tenant's key may not).
    if (route.resource !== null && route.resource !== "tls-policy") {
      test(`another key's ${route.resource} is 404 not_found (never 403: its existence is not revealed)`, async () => {
        // The other key holds every scope: the refusal is about ownership, not permissions.
        // Domains are the installation's; a key sees those it may send from (--domains).
        const other = await getApp().createKey({ name: "other tenant", scopes: [...SCOPES], ...(route.resource === "domain" || route.resource === "suppression" ? { domains: ["elsewhere.example"] } : {}) });
        assertProblem(await call({ key: other.key }), 404, "not_found");
      });
    }

    test(`the owner's key succeeds with ${route.okStatus} (positive control)`, async () => {
      const r = await call({ key: owner.key });
      assert.equal(r.status, route.okStatus, r.body);
      assert.match(String(r.headers["content-type"]), /^application\/json\b/);
      assert.ok(r.headers["x-request-id"], "every response carries X-Request-Id");
    });
  });
}
