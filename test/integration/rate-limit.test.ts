// Two rate limits (README, "Configuration"): per client IP before authentication, so a flood
// of bad keys is throttled before any key lookup, and per API key after it, with a
// key's own rate_limit_per_minute overriding the default. 429 answers carry
// Retry-After (RFC 9110 section 10.2.3) and the RateLimit-* fields of the IETF
// httpapi ratelimit-headers draft.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { assertProblem } from "../helpers/route-security.ts";
import type { Response } from "../helpers/https-client.ts";
import { ApiKeyVerifier } from "../../src/services/api-keys.ts";
import { randomBytes } from "node:crypto";
import { waitFor } from "../helpers/wait.ts";

function assertRateLimited(res: Response, limit: number, note: string): void {
  assertProblem(res, 429, "rate_limited", note);
  const retryAfter = Number(res.headers["retry-after"]);
  assert.ok(Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= 60, `${note}: Retry-After ${res.headers["retry-after"]}`);
  assert.equal(res.headers["ratelimit-limit"], String(limit), `${note}: RateLimit-Limit`);
  assert.equal(res.headers["ratelimit-remaining"], "0", `${note}: RateLimit-Remaining`);
  const reset = Number(res.headers["ratelimit-reset"]);
  assert.ok(Number.isInteger(reset) && reset > 0 && reset <= 60, `${note}: RateLimit-Reset ${res.headers["ratelimit-reset"]}`);
}

describe("per client IP, before authentication", () => {
  let t: TestApp;
  before(async () => {
    t = await startTestApp({ RATE_LIMIT_IP_MAX: "5" });
  });
  after(() => t.close());

  test("a flood of bad keys gets 429 after the limit, then even a good key waits", async () => {
    const good = (await t.createKey()).key;
    const bad = "sp_0000000000000000_" + "a".repeat(52);
    const answers: Response[] = [];
    for (let i = 0; i < 8; i++) answers.push(await t.call("POST", "/send", { key: bad, body: validSend() }));
    answers.slice(0, 5).forEach((r, i) => {
      assertProblem(r, 401, "unauthorized", `attempt ${i + 1}`);
      assert.equal(r.headers["ratelimit-limit"], "5");
      assert.equal(r.headers["ratelimit-remaining"], String(4 - i));
    });
    answers.slice(5).forEach((r, i) => assertRateLimited(r, 5, `attempt ${i + 6}`));
    // The limit is on the address, not the key: it is counted before anyone knows the key.
    assertRateLimited(await t.call("POST", "/send", { key: good, body: validSend() }), 5, "good key from the same address");
    assert.equal(await t.tdb.db.prisma.message.count(), 0);
  });

  test("health checks are not rate limited, so orchestrators keep seeing the process", async () => {
    for (const path of ["/healthz", "/readyz"]) {
      const r = await t.call("GET", path);
      assert.equal(r.status, 200, `${path}: ${r.body}`);
    }
  });
});

describe("per API key, after authentication", () => {
  let t: TestApp;
  before(async () => {
    t = await startTestApp({ RATE_LIMIT_KEY_MAX: "3" });
  });
  after(() => t.close());

  const sendWith = (key: string) => t.call("POST", "/send", { key, body: validSend() });

  test("the 4th send of a key is 429 and writes nothing, while another key is still accepted", async () => {
    const a = await t.createKey({ name: "busy" });
    const b = await t.createKey({ name: "quiet" });
    for (let i = 0; i < 3; i++) {
      const r = await sendWith(a.key);
      assert.equal(r.status, 202, `send ${i + 1}: ${r.body}`);
      assert.equal(r.headers["ratelimit-limit"], "3");
    }
    const before = await t.tdb.db.prisma.message.count();
    assertRateLimited(await sendWith(a.key), 3, "4th send");
    assert.equal(await t.tdb.db.prisma.message.count(), before, "a limited request writes nothing");
    // Every route of the key shares its budget.
    assertRateLimited(await t.call("GET", "/messages", { key: a.key }), 3, "a read by the same key");
    const other = await sendWith(b.key);
    assert.equal(other.status, 202, other.body);
  });

  test("a key's own rate_limit_per_minute overrides the default, both ways", async () => {
    const strict = await t.createKey({ name: "strict", rateLimitPerMinute: 1 });
    assert.equal((await sendWith(strict.key)).status, 202);
    assertRateLimited(await sendWith(strict.key), 1, "strict key, 2nd send");

    const generous = await t.createKey({ name: "generous", rateLimitPerMinute: 5 });
    for (let i = 0; i < 5; i++) {
      const r = await sendWith(generous.key);
      assert.equal(r.status, 202, `generous send ${i + 1}: ${r.body}`);
    }
    assertRateLimited(await sendWith(generous.key), 5, "generous key, 6th send");
  });

  test("requests that fail authentication do not spend a key's budget", async () => {
    const k = await t.createKey({ name: "victim" });
    const forged = k.key.replace(/_[a-z2-7]{52}$/, "_" + "a".repeat(52));
    for (let i = 0; i < 5; i++) assertProblem(await sendWith(forged), 401, "unauthorized");
    assert.equal((await sendWith(k.key)).status, 202, "an attacker guessing secrets cannot lock the key's owner out");
  });
});

describe("failed authentications per client address (issue 14)", () => {
  let t: TestApp;
  before(async () => {
    t = await startTestApp({ RATE_LIMIT_AUTH_FAIL_MAX: "3", TRUST_PROXY: "true" });
  });
  after(() => t.close());
  const from = (client: string) => ({ "x-forwarded-for": client });

  test("after 3 failures a client meets 429 before its key is looked at, even with a good key; another client does not", async () => {
    const good = (await t.createKey()).key;
    for (let i = 0; i < 3; i++) {
      const made = `sp_${String(i).padStart(16, "0")}_${"a".repeat(52)}`;
      assertProblem(await t.call("POST", "/send", { key: made, body: validSend(), headers: from("203.0.113.7") }), 401, "unauthorized", `made-up key ${i + 1}`);
    }
    const refused = await t.call("POST", "/send", { key: good, body: validSend(), headers: from("203.0.113.7") });
    assertProblem(refused, 429, "rate_limited", "a good key from the flooding client");
    assert.match((refused.json() as { detail: string }).detail, /too many failed authentications/);
    const wait = Number(refused.headers["retry-after"]);
    assert.ok(wait > 0 && wait <= 60, `Retry-After ${refused.headers["retry-after"]}`);
    assert.equal(await t.tdb.db.prisma.message.count(), 0);
    const other = await t.call("POST", "/send", { key: good, body: validSend(), headers: from("203.0.113.8") });
    assert.equal(other.status, 202, other.body);
    // Routes without a key are not affected.
    assert.equal((await t.call("GET", "/healthz", { headers: from("203.0.113.7") })).status, 200);
  });

  test("an id that is no key is remembered as such, so repeating it needs no lookup", async () => {
    const real = await t.createKey({ name: "real" });
    const secret = real.key.split("_")[2]!;
    const row = await t.tdb.db.prisma.apiKey.findUniqueOrThrow({ where: { id: real.id } });
    let now = 1_000_000;
    const verifier = new ApiKeyVerifier(t.tdb.db.prisma, 60_000, () => now);
    const id = "00000000000000ff";
    await assert.rejects(verifier.verify(`sp_${id}_${secret}`), /not valid/);
    // The id becomes a key now; within the cache time the verifier still says "no key" without asking.
    await t.tdb.db.prisma.apiKey.create({ data: { id, name: "late", secretHash: row.secretHash, scopes: row.scopes, allowedDomains: row.allowedDomains } });
    await assert.rejects(verifier.verify(`sp_${id}_${secret}`), /not valid/);
    now += 60_000;
    assert.equal((await verifier.verify(`sp_${id}_${secret}`)).id, id);
  });
});

describe("shared by every API process through Redis (REDIS_URL, issue 14)", () => {
  const prefix = `sealpost-test:${randomBytes(6).toString("hex")}:`;
  const env = { REDIS_URL: "redis://127.0.0.1:6379", REDIS_KEY_PREFIX: prefix, RATE_LIMIT_KEY_MAX: "4", RATE_LIMIT_AUTH_FAIL_MAX: "3", TRUST_PROXY: "true" };
  let a: TestApp;
  let b: TestApp;
  before(async () => {
    a = await startTestApp(env);
    b = await startTestApp(env, { tdb: a.tdb });
    for (const app of [a, b])
      await waitFor(async () => ((await app.call("GET", "/readyz")).json() as { rate_limits: string }).rate_limits === "shared", { what: "Redis connected" });
  });
  after(async () => {
    await b?.close();
    await a?.close();
  });

  test("one key's limit holds across two API processes, and so does one client's failed-authentication count", async () => {
    const key = (await a.createKey({ name: "both" })).key;
    const answers = [];
    for (const app of [a, b, a, b, b]) answers.push((await app.call("POST", "/send", { key, body: validSend(), headers: { "x-forwarded-for": "198.51.100.1" } })).status);
    assert.deepEqual(answers, [202, 202, 202, 202, 429]);
    assert.equal((await a.call("POST", "/send", { key, body: validSend() })).status, 429, "the other process counts the same");

    const made = (i: number) => `sp_${String(i).padStart(16, "1")}_${"b".repeat(52)}`;
    const client = { "x-forwarded-for": "198.51.100.9" };
    for (const [i, app] of [a, b, a].entries()) assert.equal((await app.call("GET", "/messages", { key: made(i), headers: client })).status, 401);
    assertProblem(await b.call("GET", "/messages", { key, headers: client }), 429, "rate_limited", "the fourth try, on the other process");
  });
});

describe("Redis away: the API keeps serving with limits counted per process, and says so", () => {
  let t: TestApp;
  before(async () => {
    t = await startTestApp({ REDIS_URL: "redis://127.0.0.1:1", RATE_LIMIT_KEY_MAX: "2" });
  });
  after(() => t.close());

  test("sends are accepted up to the local limit; /readyz is 200 and names the local count; one log line", async () => {
    const ready = await t.call("GET", "/readyz");
    assert.equal(ready.status, 200, ready.body);
    assert.deepEqual(ready.json(), { status: "ok", rate_limits: "local: Redis unavailable" });
    const key = (await t.createKey()).key;
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push((await t.call("POST", "/send", { key, body: validSend() })).status);
    assert.deepEqual(answers, [202, 202, 429]);
    await waitFor(() => t.logs.some((l) => l.includes("Redis unavailable: rate limits are counted per process")), { what: "the log line" });
    assert.equal(t.logs.filter((l) => l.includes("Redis unavailable")).length, 1, "said once, not per request or per retry");
  });
});
