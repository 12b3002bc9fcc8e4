// isDatabaseUnavailable (src/db/errors.ts) over the errors Prisma, @prisma/adapter-pg and
// node-postgres really throw: each fault is caused for real on the test's own database
// (a lock held past the timeout, a terminated backend, a refused or silent connection, a
// full pool, a connection limit, a read-only database), through a raw query (the
// message writer's path) and a model query where both can meet it. SQLSTATEs that cannot
// be caused on the shared server (disk full, shutdown, I/O error...) are raised by the
// server itself from a DO block or a trigger, so the error still takes the driver's and
// Prisma's real path. And errors that are the request's own fault must NOT read as
// "unavailable": a 503 would make clients retry a request that can never succeed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { openDatabase, type DatabaseHandle } from "../../src/db/client.ts";
import { databaseUnavailableReason, DatabaseUnavailableError, isDatabaseUnavailable, isPermissionDenied } from "../../src/db/errors.ts";
import { AppError } from "../../src/domain/errors.ts";
import { createTestDatabase, dropRole, installRaiseTrigger, type RaiseTrigger, type TestDatabase } from "../helpers/db.ts";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.ts";
import { waitFor } from "../helpers/wait.ts";

const STATEMENT_TIMEOUT_MS = 600;
const LIMITED_ROLE = `sp_test_limited_${randomBytes(4).toString("hex")}`;

let tdb: TestDatabase;
let db: DatabaseHandle; // short statement timeout, own pool
let admin: pg.Client; // another session: holds locks, terminates backends, alters the database
let raise: RaiseTrigger;
const closers: Array<() => Promise<unknown>> = [];

before(async () => {
  tdb = await createTestDatabase();
  db = openDatabase({ url: tdb.url, poolMax: 4, statementTimeoutMs: STATEMENT_TIMEOUT_MS, connectTimeoutMs: 500 });
  admin = new pg.Client({ connectionString: tdb.url });
  await admin.connect();
  // On inserts into api_keys: the server's own error, reaching Prisma through a model query.
  raise = await installRaiseTrigger(admin, "api_keys");
});

after(async () => {
  for (const close of closers.reverse()) await close().catch(() => {});
  await db?.close();
  await admin?.end();
  await tdb?.drop();
  await dropRole(LIMITED_ROLE);
});

/** The error `p` rejects with (the test fails if it resolves). */
async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail("expected the database call to fail");
}

/** The SQLSTATE under Prisma's wrapping, to check the fault really is the one named. */
function sqlState(err: unknown): string | undefined {
  const e = err as { code?: string; meta?: { driverAdapterError?: { cause?: { originalCode?: string } } } };
  return e.meta?.driverAdapterError?.cause?.originalCode ?? e.code;
}

const HASH = "0".repeat(64);
const rawInsert = (d: DatabaseHandle, id = randomBytes(8).toString("hex")) =>
  d.prisma.$queryRawUnsafe(`INSERT INTO api_keys (id, name, secret_hash, scopes, allowed_domains) VALUES ($1, 'x', '${HASH}', '{}', '{}') RETURNING id`, id);
const modelInsert = (d: DatabaseHandle, id = randomBytes(8).toString("hex")) =>
  d.prisma.apiKey.create({ data: { id, name: "x", secretHash: HASH, scopes: [], allowedDomains: [] } });

test("a statement that waits on a lock past statement_timeout (57014): raw query and model query", async () => {
  await admin.query("BEGIN; LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE");
  try {
    for (const [what, call] of [["raw", () => rawInsert(db)], ["model", () => modelInsert(db)]] as const) {
      const err = await failure(call());
      assert.equal(sqlState(err), "57014", `${what}: ${String(err)}`);
      assert.equal((err as { code?: string }).code, what === "raw" ? "P2010" : "P2039", "the shapes this classifier must see through");
      assert.ok(isDatabaseUnavailable(err), `${what}: ${String(err)}`);
    }
  } finally {
    await admin.query("ROLLBACK");
  }
});

test("lock_timeout (55P03) inside a transaction", async () => {
  await admin.query("BEGIN; LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE");
  try {
    const err = await failure(
      db.prisma.$transaction(async (tx) => {
        await tx.$executeRawUnsafe("SET LOCAL lock_timeout = 100");
        await tx.$queryRawUnsafe("SELECT count(*) FROM api_keys");
      }),
    );
    assert.equal(sqlState(err), "55P03", String(err));
    assert.ok(isDatabaseUnavailable(err), String(err));
  } finally {
    await admin.query("ROLLBACK");
  }
});

test("a backend terminated mid-statement (57P01)", async () => {
  const long = openDatabase({ url: tdb.url, poolMax: 2, statementTimeoutMs: 30_000, connectTimeoutMs: 2000 });
  closers.push(() => long.close());
  await admin.query("BEGIN; LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE");
  try {
    const pending = failure(rawInsert(long));
    // Watched from db's pool: inside admin's open transaction pg_stat_activity is a snapshot.
    await waitFor(async () => (await db.pool.query(
      "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rowCount, { what: "the insert waiting on the lock" });
    await db.pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
    const err = await pending;
    assert.equal(sqlState(err), "57P01", String(err));
    assert.ok(isDatabaseUnavailable(err), String(err));
  } finally {
    await admin.query("ROLLBACK");
  }
});

test("a read-only database, as a standby after failover answers (25006): raw and model", async () => {
  await admin.query(`ALTER DATABASE "${tdb.name}" SET default_transaction_read_only = on`);
  try {
    // The setting applies to new sessions: a pool of its own.
    const fresh = openDatabase({ url: tdb.url, poolMax: 2, statementTimeoutMs: 2000, connectTimeoutMs: 2000 });
    closers.push(() => fresh.close());
    for (const [what, call] of [["raw", () => rawInsert(fresh)], ["model", () => modelInsert(fresh)]] as const) {
      const err = await failure(call());
      assert.equal(sqlState(err), "25006", `${what}: ${String(err)}`);
      assert.ok(isDatabaseUnavailable(err), `${what}: ${String(err)}`);
    }
  } finally {
    await admin.query(`ALTER DATABASE "${tdb.name}" RESET default_transaction_read_only`);
  }
});

test("too many connections for the role (53300)", async () => {
  await admin.query(`CREATE ROLE "${LIMITED_ROLE}" LOGIN CONNECTION LIMIT 1`);
  const u = new URL(tdb.url);
  u.username = LIMITED_ROLE;
  const holder = new pg.Client({ connectionString: u.toString() });
  await holder.connect(); // the one connection the role may have
  closers.push(() => holder.end());
  const limited = openDatabase({ url: u.toString(), poolMax: 2, statementTimeoutMs: 2000, connectTimeoutMs: 2000 });
  closers.push(() => limited.close());
  for (const [what, call] of [["raw", () => limited.prisma.$queryRawUnsafe("SELECT 1")], ["model", () => limited.prisma.apiKey.count()]] as const) {
    const err = await failure(call());
    assert.match(JSON.stringify(err) + String(err), /53300|TooManyConnections|too many connections/, `${what}: ${String(err)}`);
    assert.ok(isDatabaseUnavailable(err), `${what}: ${String(err)}`);
  }
});

test("every connection of the pool busy past the connect timeout: node-postgres' pool timeout", async () => {
  const small = openDatabase({ url: tdb.url, poolMax: 1, statementTimeoutMs: 2000, connectTimeoutMs: 300 });
  closers.push(() => small.close());
  const held = await small.pool.connect();
  try {
    const err = await failure(small.prisma.$queryRawUnsafe("SELECT 1"));
    assert.match(String(err), /timeout exceeded when trying to connect/);
    assert.ok(isDatabaseUnavailable(err), String(err));
  } finally {
    held.release();
  }
});

test("a refused connection, a silent one, and a pooled connection that stops answering", async () => {
  const target = new URL(tdb.url);
  const proxy: TcpProxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  closers.push(() => proxy.close());
  const via = openDatabase({ url: proxy.urlFor(tdb.url), poolMax: 1, statementTimeoutMs: 300, connectTimeoutMs: 300 });
  closers.push(() => via.close());
  // One open connection in the pool. Its 300 ms connect timeout is for the faults below;
  // on a loaded machine the first connect may need another try.
  for (let i = 0; ; i++) {
    try {
      await via.prisma.$queryRawUnsafe("SELECT 1");
      break;
    } catch (err) {
      if (i >= 20) throw err;
    }
  }

  await proxy.blackHole();
  const readTimeout = await failure(via.prisma.$queryRawUnsafe("SELECT 1"));
  assert.match(String(readTimeout), /Query read timeout/);
  const connectTimeout = await failure(via.prisma.message.count());
  assert.match(String(connectTimeout), /timeout/);
  await proxy.cut();
  const refusedRaw = await failure(via.prisma.$queryRawUnsafe("SELECT 1"));
  const refusedModel = await failure(via.prisma.message.count());
  assert.equal((refusedModel as { code?: string }).code, "P1001");
  for (const [what, err] of [["read timeout", readTimeout], ["connect timeout", connectTimeout], ["refused, raw", refusedRaw], ["refused, model", refusedModel]] as const)
    assert.ok(isDatabaseUnavailable(err), `${what}: ${String(err)}`);
});

// Raised by the server: the same driver, adapter and Prisma path as the real condition.
const RAISED: Array<[string, string]> = [
  ["53100", "disk full"],
  ["53200", "out of memory"],
  ["57P03", "cannot connect now (starting up or shutting down)"],
  ["57P02", "crash shutdown"],
  ["40001", "serialization failure"],
  ["40P01", "deadlock"],
  ["08006", "connection failure"],
  ["58030", "I/O error"],
];

for (const [code, what] of RAISED) {
  test(`${what} (${code}) raised by the server: raw query and model query`, async () => {
    const raw = await failure(db.prisma.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'raised for the test' USING ERRCODE = '${code}'; END $$`));
    const model = await raise.raising(code, () => failure(modelInsert(db)));
    for (const [how, err] of [["raw", raw], ["model", model]] as const) {
      assert.equal(sqlState(err), code, `${how}: ${String(err)}`);
      assert.ok(isDatabaseUnavailable(err), `${how}: ${String(err)}`);
    }
  });
}

test("the request's own faults and programming errors are not 'unavailable'", async () => {
  const id = randomBytes(8).toString("hex");
  await rawInsert(db, id);
  const cases: Array<[string, unknown]> = [
    ["unique violation (23505), model", await failure(modelInsert(db, id))],
    ["unique violation (23505), raw", await failure(rawInsert(db, id))],
    ["check violation (23514), raw", await failure(db.prisma.$queryRawUnsafe(`INSERT INTO api_keys (id, name, secret_hash, scopes, allowed_domains) VALUES ('a', 'x', 'not hex', '{}', '{}')`))],
    ["invalid input (22P02)", await failure(db.prisma.$queryRawUnsafe("SELECT $1::uuid", "not-a-uuid"))],
    ["undefined table (42P01)", await failure(db.prisma.$queryRawUnsafe("SELECT * FROM no_such_table"))],
    ["syntax error (42601)", await failure(db.prisma.$queryRawUnsafe("SELEC 1"))],
    ["permission denied (42501)", await failure(db.prisma.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '42501'; END $$`))],
    ["a plain Error", new Error("boom")],
    ["an AppError", new AppError("invalid_request", "bad")],
    ["not an error at all", "Connection terminated"],
  ];
  for (const [what, err] of cases) assert.equal(databaseUnavailableReason(err), null, `${what}: ${String(err)}`);
  assert.ok(isPermissionDenied(cases.find(([w]) => w.startsWith("permission"))![1]), "42501 under meta.driverAdapterError is found by isPermissionDenied too");
});

test("this code's own 'not sent in time' error, also when wrapped", () => {
  assert.ok(isDatabaseUnavailable(new DatabaseUnavailableError("queue wait")));
  assert.ok(isDatabaseUnavailable(new Error("outer", { cause: new DatabaseUnavailableError("queue wait") })));
});
