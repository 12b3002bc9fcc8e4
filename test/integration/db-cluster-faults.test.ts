// Faults that need a Postgres of our own (test/helpers/pg-cluster.ts), never done to the
// shared one: the whole database frozen (SIGSTOP of every process, as a hung host or a
// paused VM), a real full disk under the messages table (a tablespace on a tiny tmpfs),
// and a server shutting down (57P03). The API key is cached, so requests reach the
// message writer.
//
// The frozen case shows why a 503 is not "not stored": statements written to a frozen
// server's sockets run when it resumes, after the client has given up. Messages the
// writer answered 503 before sending anything are never stored, and retrying every
// request with its Idempotency-Key stores each message exactly once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { openDatabase, type DatabaseHandle } from "../../src/db/client.ts";
import { migrate } from "../../src/db/migrate.ts";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { createPrivateCluster, type PrivateCluster } from "../helpers/pg-cluster.ts";
import { assertAcceptedOrUnavailable, sendConcurrently, summary, type Answer } from "../helpers/outage.ts";
import { waitFor } from "../helpers/wait.ts";

const STATEMENT_TIMEOUT_MS = 1500;
const CONNECT_TIMEOUT_MS = 1000;

let cluster: PrivateCluster;
let db: DatabaseHandle;
let t: TestApp;
let key: string;
let admin: pg.Client;

before(async () => {
  cluster = await createPrivateCluster();
  const boot = new pg.Client({ connectionString: cluster.url() });
  await boot.connect();
  await boot.query("CREATE DATABASE sealpost");
  await boot.end();
  const url = cluster.url("sealpost");
  await migrate(url);
  db = openDatabase({ url, poolMax: 10, statementTimeoutMs: STATEMENT_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS });
  t = await startTestApp(
    {
      DATABASE_URL: url,
      DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
      DATABASE_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
      API_KEY_CACHE_TTL_MS: "600000",
    },
    { tdb: { name: "sealpost", url, db, drop: () => db.close() } },
  );
  key = (await t.createKey()).key;
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
  assert.equal((await t.call("GET", "/messages", { key })).status, 200); // caches the key
});

after(async () => {
  await t?.close();
  await db?.close();
  await admin?.end().catch(() => {});
  await cluster?.destroy();
});

const newTag = () => `fault-${randomBytes(4).toString("hex")}`;

/** request_id -> the database condition the app logged for its 503. */
function loggedConditions(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of t.logs) {
    const o = JSON.parse(line) as { msg?: string; db?: string; reqId?: string };
    if (o.msg === "request failed" && o.db && o.reqId) out.set(o.reqId, o.db);
  }
  return out;
}

test("database frozen under 20 senders with Idempotency-Keys: 503 within the timeout + 1.5 s; a 503 may be stored, a retry with its key never duplicates", async (ctx) => {
  // Open connections for the writer's statements to be written to.
  const warm = await sendConcurrently(t, key, { senders: 6, tag: "warm" });
  assert.ok(warm.every((a) => a.status === 202), summary(warm));

  const tag = newTag();
  const requests = Array.from({ length: 20 }, (_, i) => ({ idem: `${tag}-${i}`, body: validSend({ tags: [tag], subject: `frozen ${i}` }) }));
  const send = async (r: (typeof requests)[number]) => {
    const started = Date.now();
    const res = await t.call("POST", "/send", { key, body: r.body, headers: { "idempotency-key": r.idem } });
    const ra = res.headers["retry-after"];
    let parsed: { code?: string; request_id?: string } = {};
    try {
      parsed = res.json();
    } catch { /* not JSON: the assertions below say so */ }
    return {
      what: `POST /send ${r.idem}`, status: res.status, ms: Date.now() - started, body: res.body, code: parsed.code,
      retryAfter: Array.isArray(ra) ? ra[0] : ra, requestId: parsed.request_id, replayed: res.headers["idempotent-replayed"] === "true",
    } satisfies Answer & Record<string, unknown>;
  };

  cluster.freeze();
  let answers: Array<Awaited<ReturnType<typeof send>>>;
  try {
    answers = await Promise.all(requests.map(send));
  } finally {
    cluster.thaw();
  }
  assertAcceptedOrUnavailable(answers, "frozen database");
  assert.ok(answers.every((a) => a.status === 503), summary(answers));
  const slowest = Math.max(...answers.map((a) => a.ms));
  assert.ok(slowest <= STATEMENT_TIMEOUT_MS + 1500, `slowest answer with the database frozen: ${slowest} ms (${summary(answers)})`);

  // The resumed backends run what was written to them, then see their client gone and
  // exit; the pool keeps the rest.
  await waitFor(async () => {
    const r = await admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()");
    return r.rows[0]!.n <= db.pool.totalCount;
  }, { what: "the resumed backends to finish", timeoutMs: 15_000 });

  const stored = new Set((await admin.query<{ key: string }>("SELECT key FROM idempotency_records WHERE key LIKE $1", [`${tag}-%`])).rows.map((r) => r.key));
  const conditions = loggedConditions();
  let unsent = 0;
  for (const [i, a] of answers.entries()) {
    const condition = conditions.get(a.requestId ?? "");
    assert.ok(condition, `${a.what}: the 503 is logged with its condition`);
    if (condition === "DatabaseUnavailableError") {
      unsent++;
      assert.ok(!stored.has(requests[i]!.idem), `${a.what} was answered 503 before being sent, yet it was stored`);
    }
  }
  ctx.diagnostic(`frozen: ${summary(answers)}, statement timeout ${STATEMENT_TIMEOUT_MS} ms; ` +
    `${unsent} answered 503 unsent (none stored), ${stored.size} of the other ${answers.length - unsent} stored once the database resumed`);

  // Retrying every request with its key: the stored ones replay, the others are stored now.
  const retries = await Promise.all(requests.map(send));
  for (const [i, r] of retries.entries()) {
    assert.equal(r.status, 202, `${r.what}: ${r.body}`);
    assert.equal(r.replayed, stored.has(requests[i]!.idem), `${r.what}: replayed exactly when the first attempt was stored`);
  }
  const rows = await admin.query<{ n: number }>("SELECT count(*)::int AS n FROM messages WHERE $1 = ANY(tags)", [tag]);
  assert.equal(rows.rows[0]!.n, requests.length, "each message stored exactly once");
  assert.equal(new Set(retries.map((r) => JSON.parse(r.body).id)).size, requests.length);
});

test("a real full disk under the messages table (53100): 503 with Retry-After, nothing stored, then it recovers", async (ctx) => {
  const tiny = await cluster.mountTmpfs("tiny", 1024 * 1024);
  if ("error" in tiny) {
    ctx.skip(`cannot mount a tmpfs here (${tiny.error}); a raised 53100 is tested in db-faults.test.ts`);
    return;
  }
  const mnt = tiny.path;
  await admin.query(`CREATE TABLESPACE tiny LOCATION '${mnt}'`);
  // An empty table, so that the next message needs a new page: the write that meets the full disk.
  await admin.query("TRUNCATE messages CASCADE");
  await admin.query("ALTER TABLE messages SET TABLESPACE tiny");
  await admin.query("CREATE TABLE filler (b text) TABLESPACE tiny");
  let full = false;
  for (let i = 0; i < 2000 && !full; i++) {
    try {
      // ~1 kB rows of hex: below the TOAST threshold and barely compressible.
      await admin.query("INSERT INTO filler SELECT (SELECT string_agg(md5(random()::text || s || g), '') FROM generate_series(1, 30) s) FROM generate_series(1, 50) g");
    } catch (err) {
      assert.equal((err as { code?: string }).code, "53100", String(err));
      full = true;
    }
  }
  assert.ok(full, "the tablespace filled up");

  const tag = newTag();
  const answers = await sendConcurrently(t, key, { senders: 6, batches: 1, tag });
  assertAcceptedOrUnavailable(answers, "full disk");
  assert.ok(answers.every((a) => a.status === 503), summary(answers));
  assert.ok([...loggedConditions().values()].includes("53100"), "the log names the full disk");
  ctx.diagnostic(`full disk: ${summary(answers)}`);

  await admin.query("DROP TABLE filler");
  const recovered = await sendConcurrently(t, key, { senders: 2, tag });
  assert.ok(recovered.every((a) => a.status === 202), summary(recovered));
  const rows = await admin.query<{ n: number }>("SELECT count(*)::int AS n FROM messages WHERE $1 = ANY(tags)", [tag]);
  assert.equal(rows.rows[0]!.n, 2, "only the messages sent after the disk was freed are stored");
  await admin.query("ALTER TABLE messages SET TABLESPACE pg_default");
  await admin.query("DROP TABLESPACE tiny");
});

test("a server shutting down (57P03): new connections refused, 503 with Retry-After", async () => {
  await cluster.beginSmartShutdown();
  // A smart shutdown lets sessions go on: end the app's, so it needs new connections.
  await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()");
  await waitFor(() => db.pool.totalCount === 0, { what: "the pool dropping its terminated connections" });
  const answers = await sendConcurrently(t, key, { senders: 4, batches: 1, tag: newTag() });
  assertAcceptedOrUnavailable(answers, "shutting down");
  assert.ok(answers.every((a) => a.status === 503), summary(answers));
  assert.ok([...loggedConditions().values()].includes("57P03"), `logged ${[...loggedConditions().values()].join(", ")}`);
});
