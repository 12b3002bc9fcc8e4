// Least privilege (issue item 5): prisma/roles.sql gives the API and the worker each only
// what they do to the database. The real API and a real worker run here under LOGIN roles
// that are members of sealpost_api / sealpost_worker, through a whole send, read, cancel,
// delivery to an SMTP peer and a retention purge; and the statements each process has no
// business running fail with 42501 (insufficient_privilege). Keys are created by the
// owner connection, as `sealpost keys create` would.
import { claimTlsReportSubmission, findDayAttemptGroups, finishTlsReportSubmission } from "../../src/db/tls-reports.ts";
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Writable } from "node:stream";
import pg from "pg";
import { ADMIN_URL, createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { startTestApp, TEST_DATA_KEY, validSend, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { startPeer, TEST_MX_HOST, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { waitFor } from "../helpers/wait.ts";
import { openDatabase, type DatabaseHandle } from "../../src/db/client.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { openRuntime } from "../../src/runtime.ts";
import { createApiKey } from "../../src/services/api-keys.ts";
import { purgeExpired } from "../../src/services/retention.ts";
import type { WorkerHandle } from "../../src/worker/worker.ts";

const ROLES_SQL = readFileSync(resolve(import.meta.dirname, "../../prisma/roles.sql"), "utf8");
const TABLES = ["api_keys", "messages", "deliveries", "recipients", "delivery_attempts", "idempotency_records", "data_keys", "_prisma_migrations"];

// Roles are cluster-wide: a random suffix keeps parallel runs apart, and `after` drops them.
const suffix = randomBytes(4).toString("hex");
const API_ROLE = `sp_test_api_${suffix}`;
const WORKER_ROLE = `sp_test_worker_${suffix}`;

let owner: TestDatabase; // the migrated database, connected as postgres (owner of the tables)
let apiDb: DatabaseHandle;
let workerDb: DatabaseHandle;
let apiUrl: string;
let workerUrl: string;
let t: TestApp;
let key: string;
let dns: FakeDns;
let peer: SmtpPeer;
let worker: WorkerHandle | undefined;
const workerLogs: string[] = [];
let deliveredId: string;
let cancelledId: string;

/** The test database's URL as another user (pg_hba trusts 127.0.0.1, so no password). */
function urlAs(role: string): string {
  const u = new URL(owner.url);
  u.username = role;
  u.password = "";
  return u.toString();
}

async function asAdmin(url: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

function open(url: string): DatabaseHandle {
  return openDatabase({ url, poolMax: 4, statementTimeoutMs: 5000, connectTimeoutMs: 2000 });
}

/** A TestDatabase whose connection is a restricted role; dropping it only closes that pool. */
function asRole(db: DatabaseHandle, url: string): TestDatabase {
  return { name: owner.name, url, db, drop: () => db.close() };
}

async function deniedCode(db: DatabaseHandle, sql: string): Promise<string | undefined> {
  try {
    await db.pool.query(sql);
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

before(async () => {
  owner = await createTestDatabase();
  // Twice: the operator re-runs it after every migration, so it must be idempotent.
  await asAdmin(owner.url, ROLES_SQL);
  await asAdmin(owner.url, ROLES_SQL);
  await asAdmin(owner.url, `CREATE ROLE "${API_ROLE}" LOGIN IN ROLE sealpost_api;
                            CREATE ROLE "${WORKER_ROLE}" LOGIN IN ROLE sealpost_worker`);
  apiUrl = urlAs(API_ROLE);
  workerUrl = urlAs(WORKER_ROLE);
  apiDb = open(apiUrl);
  workerDb = open(workerUrl);
  dns = await startFakeDns({
    "good.test": { MX: [{ preference: 10, exchange: TEST_MX_HOST }] },
    [TEST_MX_HOST]: { A: ["127.0.0.2"] },
  });
  t = await startTestApp({ DATABASE_URL: apiUrl, MIGRATE_ON_START: "false", DNS_SERVERS: dns.address }, { tdb: asRole(apiDb, apiUrl) });
  key = (await createApiKey(owner.db.prisma, { name: "least-privilege" })).key;
  peer = await startPeer({ ip: "127.0.0.2" });
});

after(async () => {
  await worker?.stop(2000);
  await t?.close();
  await Promise.all([peer?.close(), dns?.close(), apiDb?.close(), workerDb?.close()]);
  if (owner) {
    // The login roles own nothing, but DROP ROLE refuses while any object or privilege
    // in any database still names them; DROP OWNED clears both in this database.
    await asAdmin(owner.url, `DROP OWNED BY "${API_ROLE}", "${WORKER_ROLE}"`).catch(() => {});
    await owner.drop();
  }
  // The group roles stay, as they would in production: other databases may use them.
  await asAdmin(ADMIN_URL, `DROP ROLE IF EXISTS "${API_ROLE}"; DROP ROLE IF EXISTS "${WORKER_ROLE}"`);
});

test("the grants are what roles.sql documents: no DELETE for the API, nothing on api_keys for the worker", async () => {
  const q = async (sql: string, params: unknown[]) => (await owner.db.pool.query(sql, params)).rows[0];
  for (const table of TABLES) {
    const api = await q(
      `SELECT has_table_privilege('sealpost_api', $1, 'DELETE') AS del, has_table_privilege('sealpost_api', $1, 'TRUNCATE') AS trunc`,
      [table],
    );
    assert.deepEqual(api, { del: false, trunc: false }, `sealpost_api may not delete from ${table}`);
  }
  const anyOn = (role: string, table: string) =>
    q(
      `SELECT has_any_column_privilege($1, $2, 'SELECT, INSERT, UPDATE, REFERENCES')
           OR has_table_privilege($1, $2, 'DELETE, TRUNCATE, TRIGGER') AS any`,
      [role, table],
    ).then((r) => r.any as boolean);
  assert.equal(await anyOn("sealpost_worker", "api_keys"), false, "the worker has no privilege on api_keys at all");
  // MIGRATE_ON_START=false: neither process reads or writes the migration history.
  assert.equal(await anyOn("sealpost_api", "_prisma_migrations"), false);
  assert.equal(await anyOn("sealpost_worker", "_prisma_migrations"), false);
  // The API reads whether a delivery is leased (to show it as sending) but never takes or
  // renews a lease; the worker does not read stored responses.
  assert.deepEqual(
    await q(`SELECT has_column_privilege('sealpost_api', 'deliveries', 'lease_owner', 'SELECT') AS lease_read,
                    has_column_privilege('sealpost_api', 'deliveries', 'attempts', 'UPDATE') AS attempts_write,
                    has_column_privilege('sealpost_api', 'deliveries', 'next_attempt_at', 'UPDATE') AS lease_time_write,
                    has_column_privilege('sealpost_worker', 'idempotency_records', 'response', 'SELECT') AS resp`, []),
    { lease_read: true, attempts_write: false, lease_time_write: false, resp: false },
  );
  const roles = await owner.db.pool.query(`SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('sealpost_api', 'sealpost_worker') ORDER BY 1`);
  assert.deepEqual(roles.rows, [{ rolname: "sealpost_api", rolcanlogin: false }, { rolname: "sealpost_worker", rolcanlogin: false }]);
});

test("a restricted role starts only with MIGRATE_ON_START=false", async () => {
  const logger = createLogger("silent", new Writable({ write: (_c, _e, cb) => cb() }));
  const env = { NODE_ENV: "test", DATABASE_URL: apiUrl, SEALPOST_DATA_KEY: TEST_DATA_KEY };
  await assert.rejects(openRuntime(loadConfig(env), logger), (err: { code?: string }) => err.code === "42501");
  // With the data key check each serving process runs at start: the API records its key
  // and marks it as encrypting, the worker (a process that only reads) checks it.
  const rt = await openRuntime(loadConfig({ ...env, MIGRATE_ON_START: "false" }), logger, { dataKeys: "encrypts" });
  await rt.close();
  const wrt = await openRuntime(loadConfig({ ...env, DATABASE_URL: workerUrl, MIGRATE_ON_START: "false" }), logger, { dataKeys: "decrypts" });
  await wrt.close();
  const recorded = await owner.db.prisma.dataKey.findMany();
  assert.deepEqual(recorded.map((r) => [r.id, r.checkValue !== null, r.encryptingSince !== null]), [["k1", true, true]]);
  // The worker may not mark a key as encrypting or retire one: that is the API's and the owner's.
  assert.equal(await deniedCode(workerDb, `UPDATE data_keys SET retired_at = now()`), "42501");
  assert.equal(await deniedCode(apiDb, `DELETE FROM data_keys`), "42501");
});

test("the API under sealpost_api accepts, replays, reads, lists and cancels", async () => {
  assert.equal((await apiDb.pool.query("SELECT current_user AS u")).rows[0].u, API_ROLE);
  assert.equal((await workerDb.pool.query("SELECT current_user AS u")).rows[0].u, WORKER_ROLE);
  assert.equal((await t.call("GET", "/readyz")).status, 200);
  const body = validSend({
    to: "alice@good.test",
    headers: { "X-Order": "4711" },
    attachments: [{ filename: "r.txt", content: Buffer.from("receipt").toString("base64"), content_type: "text/plain" }],
  });
  const sent = await t.call("POST", "/send", { key, body, headers: { "idempotency-key": "lp-1" } });
  assert.equal(sent.status, 202, sent.body);
  deliveredId = sent.json().id;
  // The replay goes through the idempotency lookup (SELECT on idempotency_records).
  const replay = await t.call("POST", "/send", { key, body, headers: { "idempotency-key": "lp-1" } });
  assert.equal(replay.status, 202, replay.body);
  assert.equal(replay.json().id, deliveredId);

  const got = await t.call("GET", `/messages/${deliveredId}`, { key });
  assert.equal(got.status, 200, got.body);
  assert.equal(got.json().subject, "Reset your password");
  assert.equal(got.json().recipients[0].address, "alice@good.test");
  assert.ok(got.json().recipients[0].expires_at, "the view reads the queue row's schedule, not its lease");

  const later = await t.call("POST", "/send", { key, body: validSend({ to: "bob@good.test", send_at: new Date(Date.now() + 86_400_000).toISOString() }) });
  assert.equal(later.status, 202, later.body);
  cancelledId = later.json().id;
  const list = await t.call("GET", "/messages?limit=10", { key });
  assert.equal(list.status, 200, list.body);
  assert.deepEqual(list.json().data.map((m: { id: string }) => m.id).sort(), [deliveredId, cancelledId].sort());
  const cancel = await t.call("POST", `/messages/${cancelledId}/cancel`, { key });
  assert.equal(cancel.status, 200, cancel.body);
  assert.equal(cancel.json().status, "cancelled");
});

test("a worker under sealpost_worker delivers, records evidence and purges", async () => {
  worker = startTestWorker(asRole(workerDb, workerUrl), { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port) }, workerLogs);
  const m = await waitFor(async () => {
    const r = (await t.call("GET", `/messages/${deliveredId}`, { key })).json();
    return r.status === "delivered" ? r : null;
  }, { what: "delivery under the worker role", timeoutMs: 15_000 }).catch((err: Error) => {
    throw new Error(`${err.message}; worker log: ${workerLogs.slice(-5).join("")}`);
  });
  const a = m.recipients[0].delivery_attempts[0];
  assert.equal(a.outcome, "delivered");
  assert.equal(a.tls.verified, true);
  const got = peer.received.find((r) => r.to.includes("alice@good.test"));
  assert.ok(got, "the peer received the message");
  assert.match(got.data.toString(), /Subject: Reset your password/);
  assert.match(got.data.toString(), /X-Order: 4711/);
  const events = (await t.call("GET", `/messages/${deliveredId}/events`, { key })).json();
  assert.deepEqual(events.events.map((e: { recipient: string; outcome: string }) => [e.recipient, e.outcome]), [["alice@good.test", "delivered"]]);
  assert.equal(workerLogs.filter((l) => /"level":(40|50)/.test(l)).length, 0, `worker warnings: ${workerLogs.join("")}`);

  // Retention as the worker's sweep runs it, with the clock moved past RETENTION_DAYS.
  const now = new Date(Date.now() + 31 * 86_400_000);
  const r = await purgeExpired(workerDb.prisma, { retentionDays: 30, now });
  assert.deepEqual(r, { messagesPurged: 2, idempotencyRecordsDeleted: 1 });
  for (const id of [deliveredId, cancelledId]) {
    const after = (await t.call("GET", `/messages/${id}`, { key })).json();
    assert.equal(after.content_purged, true);
    assert.equal(after.subject, null);
  }
});

test("the API under sealpost_api adds, shows, lists and removes a sender domain, and cannot read a private key", async () => {
  const admin = (await createApiKey(owner.db.prisma, { name: "domains", scopes: ["admin"] })).key;
  const added = await t.call("POST", "/domains", { key: admin, body: { name: "least.example", bounce_domain: "b.least.example" } });
  assert.equal(added.status, 201, added.body);
  const id = added.json().id as string;
  assert.equal((await t.call("GET", `/domains/${id}`, { key: admin })).json().dkim.length, 2);
  assert.deepEqual((await t.call("GET", "/domains", { key: admin })).json().data.map((d: { name: string }) => d.name), ["least.example"]);
  assert.equal(await deniedCode(apiDb, "SELECT private_key FROM dkim_keys"), "42501");
  assert.equal(await deniedCode(apiDb, "UPDATE sender_domains SET name = 'other.example'"), "42501");
  assert.equal(await deniedCode(apiDb, "UPDATE dkim_keys SET public_key = 'x'"), "42501");
  const verify = await t.call("POST", `/domains/${id}/verify`, { key: admin });
  assert.equal(verify.status, 200, verify.body);
  assert.equal((await t.call("DELETE", `/domains/${id}`, { key: admin })).status, 200);
  assert.equal((await owner.db.pool.query("SELECT count(*)::int AS n FROM dkim_keys")).rows[0].n, 0, "the keys went with the domain");
});

test("the API under sealpost_api keeps the TLS policy map and reads the TLS reports", async () => {
  const admin = (await createApiKey(owner.db.prisma, { name: "tls", scopes: ["admin"] })).key;
  const added = await t.call("POST", "/tls-policies", { key: admin, body: { pattern: "bank.least.example", mx: ["mx.bank.least.example"] } });
  assert.equal(added.status, 201, added.body);
  assert.deepEqual((await t.call("GET", "/tls-policies", { key: admin })).json().data.map((r: { pattern: string }) => r.pattern), ["bank.least.example"]);
  const today = new Date().toISOString().slice(0, 10);
  const reports = await t.call("GET", `/tls-reports?date=${today}`, { key: admin });
  assert.equal(reports.status, 200, reports.body);
  assert.ok(reports.json().reports.some((r: { "report-id": string }) => r["report-id"].startsWith(`${today}.good.test@`)), "the delivery above is in today's report");
  assert.equal((await t.call("DELETE", `/tls-policies/${added.json().id}`, { key: admin })).status, 200);
});

test("the worker under sealpost_worker reads a day's evidence and records a TLS report submission once", async () => {
  const today = new Date().toISOString().slice(0, 10);
  const groups = await findDayAttemptGroups(workerDb.pool, new Date(`${today}T00:00:00Z`), null);
  assert.ok(groups.some((g) => g.domain === "good.test"), "the delivery above is in today's evidence");
  const key = { day: today, domain: "good.test", rua: "https://tlsrpt.good.test/v1", reportId: `${today}.good.test@sealpost.test` };
  assert.equal(await claimTlsReportSubmission(workerDb.pool, key, { leaseMs: 60_000, maxAttempts: 5 }), true);
  assert.equal(await claimTlsReportSubmission(workerDb.pool, key, { leaseMs: 60_000, maxAttempts: 5 }), false, "held by the first claim");
  await finishTlsReportSubmission(workerDb.pool, key, { state: "sent", status: 200, error: null });
});

test("what each role must not do fails with 42501", async () => {
  assert.equal(await deniedCode(workerDb, "SELECT secret_hash FROM api_keys"), "42501");
  assert.equal(await deniedCode(apiDb, "DELETE FROM messages"), "42501");
  assert.equal(
    await deniedCode(apiDb, `INSERT INTO delivery_attempts (message_id, recipient_id, attempt, policy, tls, outcome, started_at, duration_ms)
                             SELECT message_id, id, 1, 'opportunistic', false, 'delivered', now(), 0 FROM recipients LIMIT 1`),
    "42501",
  );
  // And the owner connection could: the denials come from the grants, not from the SQL.
  assert.equal(await deniedCode(owner.db, "SELECT secret_hash FROM api_keys"), undefined);
});
