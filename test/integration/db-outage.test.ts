// The database goes away while the API serves. Requests that need it must answer a
// retryable 503 problem (RFC 9457) quickly instead of hanging or crashing, requests
// that do not need it keep working, and the service recovers on its own when the
// database comes back. The outage is simulated by a TCP proxy in front of Postgres.
// Two apps share the proxied pool: one without a key cache (authentication itself meets
// the outage) and one with it, as in production (the first seconds of every outage:
// the request gets past authentication and meets the outage in the message writer).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { openDatabase, QUERY_TIMEOUT_SLACK_MS } from "../../src/db/client.ts";
import { SERVICE_UNAVAILABLE_RETRY_AFTER_S } from "../../src/api/problem.ts";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.ts";
import type { Response } from "../helpers/https-client.ts";
import { assertAcceptedOrUnavailable, sendConcurrently, summary } from "../helpers/outage.ts";

const CONNECT_TIMEOUT_MS = 1000;
const STATEMENT_TIMEOUT_MS = 2000;
// node-postgres gives up on an unanswered query a little after the statement timeout
// (query_timeout in src/db/client.ts): the server-side statement_timeout cannot fire
// when the server never receives the query.
const CLIENT_QUERY_TIMEOUT_MS = STATEMENT_TIMEOUT_MS + QUERY_TIMEOUT_SLACK_MS;

let real: TestDatabase;
let proxy: TcpProxy;
let proxied: TestDatabase;
let t: TestApp;
let cached: TestApp;
let key: string;

before(async () => {
  real = await createTestDatabase();
  const target = new URL(real.url);
  proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  const url = proxy.urlFor(real.url);
  const db = openDatabase({ url, poolMax: 5, statementTimeoutMs: STATEMENT_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS });
  proxied = { name: real.name, url, db, drop: () => db.close() };
  t = await startTestApp(
    {
      DATABASE_URL: url,
      DATABASE_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
      DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
      // No key cache: authentication itself must hit the database during the outage,
      // and a lookup that fails must read as 503, never as 401.
      API_KEY_CACHE_TTL_MS: "0",
    },
    { tdb: proxied },
  );
  cached = await startTestApp(
    {
      DATABASE_URL: url,
      DATABASE_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
      DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
      API_KEY_CACHE_TTL_MS: "600000",
    },
    { tdb: proxied },
  );
  key = (await t.createKey()).key;
});

after(async () => {
  await t?.close();
  await cached?.close();
  await proxied?.drop();
  await proxy?.close();
  await real?.drop();
});

async function timed(p: Promise<Response>): Promise<{ r: Response; ms: number }> {
  const started = Date.now();
  const r = await p;
  return { r, ms: Date.now() - started };
}

function assertUnavailable(r: Response, what: string): void {
  assert.equal(r.status, 503, `${what}: ${r.body}`);
  assert.match(String(r.headers["content-type"]), /^application\/problem\+json/, what);
  const body = r.json();
  assert.equal(body.code, "service_unavailable", what);
  assert.equal(body.status, 503, what);
  assert.ok(body.request_id, what);
  assert.equal(r.headers["retry-after"], String(SERVICE_UNAVAILABLE_RETRY_AFTER_S), `${what}: a 503 tells the client when to retry`);
}

const messageCount = () => real.db.prisma.message.count();

async function waitReady(deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const r = await t.call("GET", "/readyz");
    if (r.status === 200) return;
    assert.ok(Date.now() < deadline, `/readyz still ${r.status} after the database came back: ${r.body}`);
    await new Promise((res) => setTimeout(res, 100)); // poll interval until the pool reconnects
  }
}

async function sendAndRead(subject: string): Promise<void> {
  const sent = await t.call("POST", "/send", { key, body: validSend({ subject }) });
  assert.equal(sent.status, 202, sent.body);
  const got = await t.call("GET", `/messages/${sent.json().id}`, { key });
  assert.equal(got.status, 200, got.body);
  assert.equal(got.json().subject, subject);
}

test("through the proxy, everything works", async () => {
  assert.equal((await t.call("GET", "/readyz")).status, 200);
  await sendAndRead("before the outage");
  assert.ok(proxy.connections > 0, "the app's pool really goes through the proxy");
});

test("database stopped: 503 within 3 s on every database route, liveness stays up, then it recovers", async () => {
  const before = await messageCount();
  const known = await t.call("POST", "/send", { key, body: validSend({ subject: "sent before the cut" }) });
  assert.equal(known.status, 202);
  await proxy.cut();

  const calls: Array<[string, () => Promise<Response>]> = [
    ["POST /send", () => t.call("POST", "/send", { key, body: validSend({ subject: "during the outage" }) })],
    ["GET /readyz", () => t.call("GET", "/readyz")],
    ["GET /messages/{id}", () => t.call("GET", `/messages/${known.json().id}`, { key })],
    ["GET /messages", () => t.call("GET", "/messages", { key })],
    ["POST /send again", () => t.call("POST", "/send", { key, body: validSend({ subject: "during the outage" }) })],
    ["POST /send/batch", () => t.call("POST", "/send/batch", { key, body: { messages: [validSend(), validSend()] } })],
  ];
  for (const [what, call] of calls) {
    const { r, ms } = await timed(call());
    assertUnavailable(r, what);
    // A bound on "never hangs" (connect timeout 1 s), not a benchmark.
    assert.ok(ms < 3000, `${what} took ${ms} ms`);
  }
  // Several at once must not pile up behind each other in the pool either.
  const burst = await Promise.all(Array.from({ length: 8 }, () => timed(t.call("POST", "/send", { key, body: validSend() }))));
  for (const { r, ms } of burst) {
    assertUnavailable(r, "concurrent POST /send");
    assert.ok(ms < 3000, `concurrent POST /send took ${ms} ms`);
  }

  const live = await t.call("GET", "/healthz");
  assert.equal(live.status, 200, "liveness does not depend on the database");
  assert.ok(t.app.server.listening, "the process keeps serving");
  assert.equal(await messageCount(), before + 1, "nothing was accepted during the outage");

  await proxy.restore();
  await waitReady(10_000);
  await sendAndRead("after the outage");
  const old = await t.call("GET", `/messages/${known.json().id}`, { key });
  assert.equal(old.status, 200);
  assert.equal(old.json().subject, "sent before the cut");
});

test("database unreachable but silent (black hole): 503 once the client timeouts fire, then it recovers", async () => {
  await sendAndRead("before the black hole"); // leaves open connections in the pool to stall
  await proxy.blackHole();
  // Pooled connections stall until query_timeout; new ones until connectionTimeoutMillis.
  const bound = CLIENT_QUERY_TIMEOUT_MS + 1500;
  for (const [what, call] of [
    ["GET /readyz", () => t.call("GET", "/readyz")],
    ["POST /send", () => t.call("POST", "/send", { key, body: validSend({ subject: "into the void" }) })],
    ["GET /messages", () => t.call("GET", "/messages", { key })],
  ] as Array<[string, () => Promise<Response>]>) {
    const { r, ms } = await timed(call());
    assertUnavailable(r, what);
    assert.ok(ms < bound, `${what} took ${ms} ms (bound ${bound} ms)`);
  }
  assert.equal((await t.call("GET", "/healthz")).status, 200);

  await proxy.restore();
  await waitReady(10_000);
  await sendAndRead("after the black hole");
});

test("database stopped while the API key is cached: the message writer meets the outage, and answers 503, not 500", async () => {
  const warm = await cached.call("POST", "/send", { key, body: validSend({ subject: "caches the key" }) });
  assert.equal(warm.status, 202, warm.body);
  const before = await messageCount();
  await proxy.cut();
  try {
    for (const [what, call] of [
      ["POST /send", () => cached.call("POST", "/send", { key, body: validSend({ subject: "during the outage" }) })],
      ["POST /send/batch", () => cached.call("POST", "/send/batch", { key, body: { messages: [validSend(), validSend()] } })],
    ] as Array<[string, () => Promise<Response>]>) {
      const { r, ms } = await timed(call());
      assertUnavailable(r, `${what} with a cached key`);
      assert.ok(ms < 3000, `${what} took ${ms} ms`);
    }
    const burst = await Promise.all(Array.from({ length: 8 }, () => cached.call("POST", "/send", { key, body: validSend() })));
    for (const r of burst) assertUnavailable(r, "concurrent POST /send with a cached key");
  } finally {
    await proxy.restore();
  }
  assert.equal(await messageCount(), before, "nothing was accepted during the outage");
  await waitReady(10_000);
  const after = await cached.call("POST", "/send", { key, body: validSend({ subject: "after the outage" }) });
  assert.equal(after.status, 202, after.body);
});

test("black hole under 20 concurrent senders with a cached key: every answer a 503 within the statement timeout + 1.5 s", async (ctx) => {
  // Open connections in the pool for the writer's statements to get stuck on.
  const warm = await sendConcurrently(cached, key, { senders: 6, tag: "warm" });
  assert.ok(warm.every((a) => a.status === 202), summary(warm));
  const before = await messageCount();
  await proxy.blackHole();
  let answers;
  try {
    answers = await sendConcurrently(cached, key, { senders: 20, batches: 2, tag: "black-hole" });
  } finally {
    await proxy.restore();
  }
  assertAcceptedOrUnavailable(answers, "black hole");
  assert.ok(answers.every((a) => a.status === 503), summary(answers));
  const slowest = Math.max(...answers.map((a) => a.ms));
  ctx.diagnostic(`black hole: ${summary(answers)}, statement timeout ${STATEMENT_TIMEOUT_MS} ms`);
  // The statements that hold the writer's two slots wait out query_timeout (statement
  // timeout + slack); the messages queued behind them are answered unsent after the
  // queue wait, instead of waiting for those statements and then for their own.
  assert.ok(slowest <= STATEMENT_TIMEOUT_MS + 1500, `slowest answer in the black hole: ${slowest} ms (${summary(answers)})`);
  // The proxy swallowed every byte, so nothing reached the database. (A database that
  // freezes after receiving a statement may still commit it when it resumes: a 503 does
  // not promise "not stored", which is why retries carry an Idempotency-Key.)
  assert.equal(await messageCount(), before);
  await waitReady(10_000);
  const after = await cached.call("POST", "/send", { key, body: validSend({ subject: "after the black hole" }) });
  assert.equal(after.status, 202, after.body);
});
