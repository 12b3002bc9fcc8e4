// Reading messages back (GET /messages/{id}, GET /messages), cancelling, and the
// operational routes: health, the OpenAPI document, unknown routes and the security
// headers every response carries.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { assertProblem } from "../helpers/route-security.ts";

let t: TestApp;
let key: string;
before(async () => {
  t = await startTestApp();
  key = (await t.createKey({ name: "reader" })).key;
});
after(() => t.close());

async function send(body: unknown, k = key): Promise<{ id: string; created_at: string; status: string }> {
  const r = await t.call("POST", "/send", { key: k, body });
  assert.equal(r.status, 202, r.body);
  return r.json();
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

test("GET /messages/{id}: the message, its recipients and their statuses", async () => {
  const s = await send(validSend({
    from: { name: "Shop", address: "noreply@shop.example" },
    to: ["Alice <alice@example.com>"], cc: "carol@other.example", bcc: "audit@shop.example",
    reply_to: "help@shop.example", tags: ["reset"], metadata: { user_id: "42" }, tls: "required",
  }));
  const r = await t.call("GET", `/messages/${s.id}`, { key });
  assert.equal(r.status, 200, r.body);
  const m = r.json();
  assert.equal(m.id, s.id);
  assert.equal(m.status, "queued");
  assert.equal(m.tls_policy, "required");
  assert.deepEqual(m.from, { address: "noreply@shop.example", name: "Shop" });
  assert.equal(m.subject, "Reset your password");
  assert.deepEqual(m.tags, ["reset"]);
  assert.deepEqual(m.metadata, { user_id: "42" });
  assert.deepEqual(m.reply_to, [{ address: "help@shop.example", name: null }]);
  assert.equal(m.created_at, s.created_at);
  assert.equal(m.send_at, null);
  assert.equal(m.content_purged, false);
  // RFC 5322 section 3.6.4: msg-id is "<" id-left "@" id-right ">".
  assert.match(m.message_id, new RegExp(`^<${s.id}@shop\\.example>$`));
  assert.deepEqual(
    m.recipients.map((x: Record<string, unknown>) => [x.kind, x.address, x.name, x.status, x.attempts, x.last_response, x.delivery_attempts]),
    [
      ["to", "alice@example.com", "Alice", "queued", 0, null, []],
      ["cc", "carol@other.example", null, "queued", 0, null, []],
      ["bcc", "audit@shop.example", null, "queued", 0, null, []],
    ],
  );
  assert.equal("text" in m || "html" in m, false, "bodies are not echoed by the read API");
});

test("GET /messages/{id}: a malformed id is 422, an unknown one 404", async () => {
  for (const bad of ["not-a-uuid", "1", "00000000-0000-0000-0000-00000000000g"]) {
    const p = assertProblem(await t.call("GET", `/messages/${bad}`, { key }), 422, "invalid_request", bad);
    assert.match(JSON.stringify(p.errors), /params\.id/);
  }
  assertProblem(await t.call("GET", "/messages/5f0c1e5e-8c1b-4d3a-9c55-0d6f0d3a1b2c", { key }), 404, "not_found");
});

test("GET /messages: cursor pagination, newest first, no duplicates and no gaps", async () => {
  const k = (await t.createKey({ name: "pager" })).key;
  const created: string[] = [];
  for (let i = 0; i < 25; i++) created.push((await send(validSend({ subject: `Receipt ${i}` }), k)).id);

  const seen: Array<{ id: string; created_at: string }> = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const q: string = cursor ? `?limit=10&cursor=${encodeURIComponent(cursor)}` : "?limit=10";
    const r = await t.call("GET", `/messages${q}`, { key: k });
    assert.equal(r.status, 200, r.body);
    const page = r.json();
    assert.ok(page.data.length <= 10);
    seen.push(...page.data);
    cursor = page.next_cursor;
    pages++;
    assert.ok(pages <= 5, "pagination terminates");
  } while (cursor);

  assert.equal(pages, 3);
  assert.equal(seen.length, 25);
  assert.equal(new Set(seen.map((m) => m.id)).size, 25, "no duplicates");
  assert.deepEqual(new Set(seen.map((m) => m.id)), new Set(created), "no gaps, and only this key's messages");
  // Newest first; equal timestamps are ordered by id, descending, so the order is total.
  for (let i = 1; i < seen.length; i++) {
    const [a, b] = [seen[i - 1]!, seen[i]!];
    assert.ok(a.created_at > b.created_at || (a.created_at === b.created_at && a.id > b.id), `order at ${i}`);
  }
  assert.equal(seen[0]!.id, created[24], "the last sent comes first");
});

test("GET /messages: filters by status, tag and created range", async () => {
  const k = (await t.createKey({ name: "filters" })).key;
  const a = await send(validSend({ tags: ["invoice"] }), k);
  const b = await send(validSend({ tags: ["invoice", "eu"] }), k);
  const c = await send(validSend({ tags: ["reset"] }), k);
  const d = await send(validSend({ tags: ["reset"], send_at: new Date(Date.now() + 3_600_000).toISOString() }), k);
  const cancel = await t.call("POST", `/messages/${c.id}/cancel`, { key: k });
  assert.equal(cancel.status, 200, cancel.body);

  const ids = async (q: string) => {
    const r = await t.call("GET", `/messages?${q}`, { key: k });
    assert.equal(r.status, 200, `${q}: ${r.body}`);
    return r.json().data.map((m: { id: string }) => m.id).sort();
  };
  const sorted = (...xs: Array<{ id: string }>) => xs.map((x) => x.id).sort();
  assert.deepEqual(await ids("tag=invoice"), sorted(a, b));
  assert.deepEqual(await ids("tag=eu"), sorted(b));
  assert.deepEqual(await ids("status=cancelled"), sorted(c));
  assert.deepEqual(await ids("status=scheduled"), sorted(d));
  assert.deepEqual(await ids("status=queued&tag=invoice"), sorted(a, b));
  assert.deepEqual(await ids("status=delivered"), []);

  // created_after is inclusive, created_before exclusive: together they tile time.
  const at = encodeURIComponent(b.created_at);
  const afterB = await ids(`created_after=${at}`);
  const beforeB = await ids(`created_before=${at}`);
  assert.ok(afterB.includes(b.id) && !beforeB.includes(b.id));
  assert.deepEqual([...afterB, ...beforeB].sort(), sorted(a, b, c, d));
  assert.ok(beforeB.includes(a.id) || a.created_at === b.created_at);
  assert.deepEqual(await ids(`created_after=${encodeURIComponent("2000-01-01T00:00:00Z")}&created_before=${encodeURIComponent("2000-01-02T00:00:00+01:00")}`), []);
});

test("GET /messages: bad cursors and bad filters are 422", async () => {
  const forged = Buffer.from("2026-01-01T00:00:00.000Z|not-an-id", "utf8").toString("base64url");
  for (const q of ["cursor=nonsense", `cursor=${forged}`, "limit=0", "limit=101", "status=lost", "tag=a%20b", "created_after=yesterday", "unknown=1"]) {
    assertProblem(await t.call("GET", `/messages?${q}`, { key }), 422, "invalid_request", q);
  }
});

test("POST /messages/{id}/cancel: queued -> cancelled, and a second cancel is idempotent", async () => {
  const s = await send(validSend({ to: ["alice@example.com", "bob@other.example"] }));
  const first = await t.call("POST", `/messages/${s.id}/cancel`, { key });
  assert.equal(first.status, 200, first.body);
  assert.deepEqual(first.json(), { id: s.id, status: "cancelled" });
  const second = await t.call("POST", `/messages/${s.id}/cancel`, { key });
  assert.equal(second.status, 200, second.body);
  assert.deepEqual(second.json(), first.json());

  const m = (await t.call("GET", `/messages/${s.id}`, { key })).json();
  assert.equal(m.status, "cancelled");
  assert.deepEqual(m.recipients.map((r: { status: string }) => r.status), ["cancelled", "cancelled"]);
  const states = await t.tdb.db.prisma.delivery.findMany({ where: { messageId: s.id }, select: { state: true } });
  assert.deepEqual(states.map((x) => x.state), ["cancelled", "cancelled"], "no worker will pick it up");
});

test("POST /messages/{id}/cancel: a scheduled message can be cancelled", async () => {
  const s = await send(validSend({ send_at: new Date(Date.now() + 86_400_000).toISOString() }));
  assert.equal(s.status, "scheduled");
  const r = await t.call("POST", `/messages/${s.id}/cancel`, { key });
  assert.equal(r.status, 200, r.body);
});

test("POST /messages/{id}/cancel: once a delivery was attempted it is 409 conflict and nothing changes", async () => {
  const s = await send(validSend({ to: ["alice@example.com", "bob@other.example"] }));
  // A worker made one attempt for one domain (the message as a whole still reads queued).
  await t.tdb.db.prisma.$executeRawUnsafe(
    `UPDATE deliveries SET attempts = 1 WHERE id = (SELECT min(id) FROM deliveries WHERE message_id = $1::uuid)`, s.id);
  assertProblem(await t.call("POST", `/messages/${s.id}/cancel`, { key }), 409, "conflict");
  const rows = await t.tdb.db.prisma.delivery.findMany({ where: { messageId: s.id }, select: { state: true } });
  assert.deepEqual(rows.map((x) => x.state), ["pending", "pending"], "the refused cancel was rolled back");
  const m = await t.tdb.db.prisma.message.findUniqueOrThrow({ where: { id: s.id } });
  assert.equal(m.status, "queued");
});

test("POST /messages/{id}/cancel: a message past queued (sending) is 409 conflict", async () => {
  const s = await send(validSend());
  await t.tdb.db.prisma.message.update({ where: { id: s.id }, data: { status: "sending" } });
  assertProblem(await t.call("POST", `/messages/${s.id}/cancel`, { key }), 409, "conflict");
});

test("GET /healthz and /readyz answer 200 without a key", async () => {
  const health = await t.call("GET", "/healthz");
  assert.equal(health.status, 200, health.body);
  assert.deepEqual(health.json(), { status: "ok" });
  const ready = await t.call("GET", "/readyz");
  assert.equal(ready.status, 200, ready.body);
  assert.deepEqual(ready.json(), { status: "ok", rate_limits: "local" }, "no REDIS_URL: limits counted in this process");
});

test("an unknown route is 404 problem+json", async () => {
  const p = assertProblem(await t.call("GET", "/v2/nothing-here?x=1", { key }), 404, "not_found");
  assert.doesNotMatch(String(p.detail), /x=1/, "the query string is not echoed");
  assertProblem(await t.call("DELETE", "/send", { key }), 404, "not_found");
});

test("GET /openapi.yaml serves the contract", async () => {
  const r = await t.call("GET", "/openapi.yaml");
  assert.equal(r.status, 200);
  assert.match(String(r.headers["content-type"]), /^application\/yaml/);
  const doc = parseYaml(r.body);
  assert.match(doc.openapi, /^3\.1\./);
  for (const p of ["/send", "/messages", "/messages/{id}", "/messages/{id}/cancel", "/healthz", "/readyz"]) assert.ok(doc.paths[p], `documents ${p}`);
});

test("security headers on success, problem and document responses", async () => {
  const s = await send(validSend());
  const responses = {
    "GET /messages/{id}": await t.call("GET", `/messages/${s.id}`, { key }),
    "401 problem": await t.call("GET", "/messages"),
    "404 problem": await t.call("GET", "/nowhere"),
    "GET /openapi.yaml": await t.call("GET", "/openapi.yaml"),
    "GET /healthz": await t.call("GET", "/healthz"),
  };
  for (const [name, r] of Object.entries(responses)) {
    // RFC 6797: HSTS, long-lived.
    const hsts = String(r.headers["strict-transport-security"]);
    assert.match(hsts, /max-age=(\d+)/, name);
    assert.ok(Number(/max-age=(\d+)/.exec(hsts)![1]) >= 31_536_000, `${name}: HSTS for at least a year`);
    assert.match(String(r.headers["content-security-policy"]), /frame-ancestors 'none'/, name);
    assert.match(String(r.headers["content-security-policy"]), /default-src 'none'/, name);
    assert.equal(r.headers["cache-control"], "no-store", name);
    assert.equal(r.headers["x-content-type-options"], "nosniff", name);
    assert.ok(r.headers["x-request-id"], name);
    assert.equal(r.headers["x-powered-by"], undefined, name);
  }
});

test("X-Request-Id: a sane client id is kept, anything else replaced", async () => {
  const kept = await t.call("GET", "/messages/nope", { key, headers: { "x-request-id": "client-req-12345" } });
  assert.equal(kept.headers["x-request-id"], "client-req-12345");
  assert.equal(kept.json().request_id, "client-req-12345");
  const replaced = await t.call("GET", "/healthz", { headers: { "x-request-id": "<script>" } });
  assert.match(String(replaced.headers["x-request-id"]), UUID);
});
