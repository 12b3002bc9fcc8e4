// The event log (issue 12): every change of a recipient's status is an event written by the
// statement that makes the change, read back through GET /events in commit order, with the
// TLS evidence of the attempt behind it. End to end: POST /send, a real worker, smtp-server
// peers that accept, greylist once and refuse, behind a fake DNS.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { peerCertificate, startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { waitFor } from "../helpers/wait.ts";
import type { z } from "zod";
import type { EventListSchema } from "../../src/api/schemas.ts";

type EventList = z.output<typeof EventListSchema>;
type EventView = Exclude<EventList["data"][number], { type: "webhook.disabled" }>;

let app: TestApp;
let key: string;
let otherKey: string;
let dns: FakeDns;
const peers: SmtpPeer[] = [];
let port = 0;
const logs: string[] = [];

const PEERS = {
  "ok.test": { ip: "127.0.0.41" },
  "grey.test": { ip: "127.0.0.42", rcpt: { "grey@grey.test": { code: 451, message: "greylisted, try again later", times: 1 } } },
  "refuse.test": { ip: "127.0.0.43", rcpt: { "nobody@refuse.test": { code: 550, message: "no such user here" } } },
};

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  otherKey = (await app.createKey({ name: "other" })).key;
  for (const [domain, opts] of Object.entries(PEERS)) {
    const p = await startPeer({ ...opts, certificate: peerCertificate("ca-signed", `mx.${domain}`), ...(port ? { port } : {}) });
    port ||= p.port;
    peers.push(p);
  }
  dns = await startFakeDns(Object.fromEntries(Object.entries(PEERS).flatMap(([d, o]) => [
    [d, { MX: [{ preference: 10, exchange: `mx.${d}` }] }],
    [`mx.${d}`, { A: [o.ip] }],
  ])));
});

after(async () => {
  await Promise.all(peers.map((p) => p.close()));
  await dns?.close();
  await app?.close();
});

function useWorker(t: TestContext) {
  const w = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(port) }, logs);
  t.after(() => w.stop(5000));
}

async function events(query: string, k = key): Promise<EventList> {
  const r = await app.call("GET", `/events${query}`, { key: k });
  assert.equal(r.status, 200, r.body);
  return r.json() as EventList;
}

/** Every event of the key matching `query`, read a page of `limit` at a time. */
async function allEvents(query: string, limit: number): Promise<EventView[]> {
  const out: EventView[] = [];
  let cursor: string | null = null;
  for (;;) {
    const page = await events(`?limit=${limit}${query}${cursor ? `&cursor=${cursor}` : ""}`);
    out.push(...page.data.filter((e): e is EventView => e.type !== "webhook.disabled"));
    assert.ok(page.data.length <= limit);
    cursor = page.next_cursor;
    if (!page.has_more) return out;
  }
}

const typesOf = (evs: EventView[], messageId: string) => evs.filter((e) => e.data.message_id === messageId).map((e) => e.type);

/**
 * Polls `read` until `done` holds. An event is listed once every transaction in the
 * database cluster that began before it has ended, which other tests' transactions (other
 * databases, same cluster) can delay by a moment.
 */
const listed = <T>(read: () => Promise<T>, done: (v: T) => boolean, what: string) =>
  waitFor(async () => {
    const v = await read();
    return done(v) ? v : null;
  }, { what });

test("each status change is one event, in commit order, with the evidence of its attempt", async (t) => {
  useWorker(t);
  const meta = { tags: ["receipt"], metadata: { order: "1042" } };
  const delivered = await sendMessage(app, key, { to: "ann@ok.test", tls: "required", ...meta });
  const retried = await sendMessage(app, key, { to: "grey@grey.test" });
  const bounced = await sendMessage(app, key, { to: "nobody@refuse.test" });
  const scheduled = await sendMessage(app, key, { to: "later@ok.test", send_at: new Date(Date.now() + 3_600_000).toISOString() });
  assert.equal((await app.call("POST", `/messages/${scheduled}/cancel`, { key })).status, 200);
  await waitForMessage(app, key, delivered, ["delivered"], { logs });
  await waitForMessage(app, key, retried, ["delivered"], { logs });
  await waitForMessage(app, key, bounced, ["bounced"], { logs });

  const all = await listed(() => allEvents("", 1000), (a) => a.filter((e) => [delivered, retried, bounced, scheduled].includes(e.data.message_id)).length === 9, "the nine events listed");
  assert.deepEqual(typesOf(all, delivered), ["message.queued", "message.delivered"]);
  assert.deepEqual(typesOf(all, retried), ["message.queued", "message.deferred", "message.delivered"]);
  assert.deepEqual(typesOf(all, bounced), ["message.queued", "message.bounced"]);
  assert.deepEqual(typesOf(all, scheduled), ["message.scheduled", "message.cancelled"]);
  assert.equal(new Set(all.map((e) => e.id)).size, all.length, "event ids are unique");

  const ofDelivered = all.filter((e) => e.data.message_id === delivered);
  assert.deepEqual(ofDelivered[0]!.data, { message_id: delivered, recipient: { address: "ann@ok.test", kind: "to" }, tags: ["receipt"], metadata: { order: "1042" }, smtp: null, next_attempt_at: null, attempt: null });
  const d = ofDelivered[1]!;
  assert.equal(d.data.smtp?.code, 250);
  assert.equal(d.data.attempt?.outcome, "delivered");
  assert.equal(d.data.attempt?.mx_host, "mx.ok.test");
  assert.equal(d.data.attempt?.ip, PEERS["ok.test"].ip);
  assert.equal(d.data.attempt?.tls.used, true);
  assert.equal(d.data.attempt?.tls.verified, true);
  assert.match(d.data.attempt?.tls.version ?? "", /^TLSv1\.[23]$/);

  const [, deferred, second] = all.filter((e) => e.data.message_id === retried);
  assert.equal(deferred!.data.smtp?.code, 451);
  assert.equal(deferred!.data.attempt?.outcome, "deferred");
  assert.equal(deferred!.data.attempt?.attempt, 1);
  // Due after the attempt that deferred (the test worker's backoff is 50-200 ms).
  assert.ok(deferred!.data.next_attempt_at && Date.parse(deferred!.data.next_attempt_at) > Date.parse(deferred!.data.attempt!.started_at));
  assert.equal(second!.data.attempt?.attempt, 2);
  assert.equal(second!.data.next_attempt_at, null);

  const b = all.find((e) => e.type === "message.bounced" && e.data.message_id === bounced)!;
  assert.equal(b.data.smtp?.code, 550);
  assert.match(b.data.smtp?.text ?? "", /no such user/);
  assert.equal(b.data.attempt?.outcome, "bounced");

  // The same log a page of one at a time, and through each filter.
  assert.deepEqual(await allEvents("", 1), all);
  assert.deepEqual((await allEvents(`&message_id=${retried}`, 2)).map((e) => e.type), ["message.queued", "message.deferred", "message.delivered"]);
  const picked = await allEvents("&type=message.bounced,message.cancelled", 10);
  assert.deepEqual(picked.map((e) => `${e.type} ${e.data.message_id}`).sort(), [`message.bounced ${bounced}`, `message.cancelled ${scheduled}`].sort());
  assert.deepEqual(picked, all.filter((e) => e.type === "message.bounced" || e.type === "message.cancelled"), "in the log's order");
  assert.deepEqual((await events(`?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).data, []);
  // Another key sees none of them.
  assert.deepEqual((await events("", otherKey)).data, []);
});

test("at the end of the log, next_cursor asks for what comes later", async () => {
  const first = await sendMessage(app, key, { to: "cursor1@ok.test", send_at: new Date(Date.now() + 3_600_000).toISOString() });
  const end = await listed(() => events(`?message_id=${first}`), (p) => p.data.length > 0, "the scheduled event listed");
  assert.equal(end.has_more, false);
  assert.deepEqual(end.data.map((e) => e.type), ["message.scheduled"]);
  assert.ok(end.next_cursor);
  assert.deepEqual((await events(`?message_id=${first}&cursor=${end.next_cursor}`)).data, []);
  const again = await events(`?message_id=${first}&cursor=${end.next_cursor}`);
  assert.equal(again.next_cursor, end.next_cursor, "an empty page keeps the cursor");
  assert.equal((await app.call("POST", `/messages/${first}/cancel`, { key })).status, 200);
  const later = await listed(() => events(`?message_id=${first}&cursor=${end.next_cursor}`), (p) => p.data.length > 0, "the cancelled event listed");
  assert.deepEqual(later.data.map((e) => e.type), ["message.cancelled"]);
});

test("an event shows once every transaction that began before it has ended, so a cursor never skips one", async () => {
  // A transaction that holds an id (it wrote, or asked for one) and has not ended: an event
  // committed after it began may sit behind an event this transaction is yet to write.
  const open = new pg.Client({ connectionString: app.tdb.url });
  await open.connect();
  try {
    await open.query("BEGIN");
    await open.query("SELECT pg_current_xact_id()");
    const id = await sendMessage(app, key, { to: "held@ok.test", send_at: new Date(Date.now() + 3_600_000).toISOString() });
    assert.deepEqual((await events(`?message_id=${id}`)).data, []);
    await open.query("COMMIT");
    const shown = await listed(() => events(`?message_id=${id}`), (p) => p.data.length > 0, "the event listed once the transaction ended");
    assert.deepEqual(shown.data.map((e) => e.type), ["message.scheduled"]);
  } finally {
    await open.end();
  }
});

test("bad filters and cursors are 422 naming the parameter, and change nothing", async () => {
  const cases: Array<[string, string]> = [
    ["?type=message.opened", "query.type"],
    ["?type=message.delivered,", "query.type"],
    ["?cursor=bm90LWEtY3Vyc29y", "query.cursor"],
    ["?limit=0", "query.limit"],
    ["?limit=1001", "query.limit"],
    ["?message_id=42", "query.message_id"],
    ["?since=yesterday", "query.since"],
  ];
  for (const [q, path] of cases) {
    const r = await app.call("GET", `/events${q}`, { key });
    assert.equal(r.status, 422, `${q}: ${r.body}`);
    const body = r.json() as { errors?: Array<{ path: string }> };
    assert.ok(body.errors?.some((e) => e.path === path), `${q}: ${r.body}`);
  }
});

test("1,000 deliveries produce exactly their events", async (t) => {
  useWorker(t);
  const ids: string[] = [];
  for (let b = 0; b < 10; b++) {
    const r = await app.call("POST", "/send/batch", { key: otherKey, body: { messages: Array.from({ length: 100 }, (_, i) => ({
      from: "Shop <noreply@shop.example>", to: `n${b * 100 + i}@ok.test`, subject: "receipt", text: "thanks",
    })) } });
    assert.equal(r.status, 200, r.body);
    ids.push(...(r.json() as { data: Array<{ id: string }> }).data.map((x) => x.id));
  }
  assert.equal(ids.length, 1000);
  const pool = app.tdb.db.pool;
  await waitFor(async () => {
    const { rows } = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM recipients WHERE message_id = ANY($1::uuid[]) AND status = 'delivered'`, [ids]);
    return Number(rows[0]!.n) === 1000;
  }, { what: "1,000 recipients delivered", timeoutMs: 60_000 });
  const counts = (await pool.query<{ type: string; n: string; messages: string }>(
    `SELECT type, count(*) AS n, count(DISTINCT message_id) AS messages FROM events WHERE message_id = ANY($1::uuid[]) GROUP BY type ORDER BY type`, [ids])).rows;
  assert.deepEqual(counts.map((c) => [c.type, Number(c.n), Number(c.messages)]), [["message.delivered", 1000, 1000], ["message.queued", 1000, 1000]]);
});
