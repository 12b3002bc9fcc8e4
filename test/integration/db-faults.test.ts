// Database faults other than "unreachable" (db-outage.test.ts), each caused for real on
// the test's own database while the API key is cached (so requests reach the message
// writer, whose raw query Prisma wraps differently from a model query): a table lock
// held past the statement timeout, a backend terminated mid-statement, a read-only
// database (what a standby answers after a failover), a role out of connections, and,
// raised by the server inside the writer's own statement, a full disk and a server
// that is shutting down. Every POST /send and /send/batch answers 202 or 503 with
// Retry-After, never 500; the log names the condition; nothing answered 503 was stored.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { openDatabase } from "../../src/db/client.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { createTestDatabase, dropRole, installRaiseTrigger, type RaiseTrigger, type TestDatabase } from "../helpers/db.ts";
import { assertAcceptedOrUnavailable, sendConcurrently, summary, type Answer } from "../helpers/outage.ts";
import { waitFor } from "../helpers/wait.ts";

const STATEMENT_TIMEOUT_MS = 1500;
const ROLE = `sp_test_faults_${randomBytes(4).toString("hex")}`;

let tdb: TestDatabase;
let t: TestApp;
let key: string;
let admin: pg.Client; // holds locks and alters the database, as another session
let watcher: pg.Client; // reads pg_stat_activity outside admin's transaction (which sees a snapshot)
let raise: RaiseTrigger;

before(async () => {
  tdb = await createTestDatabase({ statementTimeoutMs: STATEMENT_TIMEOUT_MS });
  t = await startTestApp({ DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS), API_KEY_CACHE_TTL_MS: "600000" }, { tdb });
  key = (await t.createKey()).key;
  admin = new pg.Client({ connectionString: tdb.url });
  watcher = new pg.Client({ connectionString: tdb.url });
  await Promise.all([admin.connect(), watcher.connect()]);
  raise = await installRaiseTrigger(admin, "messages"); // from inside the writer's INSERT
  await expectAccepted("before the faults"); // and the key is cached from here on
});

after(async () => {
  await t?.close();
  await admin?.end();
  await watcher?.end();
  await tdb?.drop();
  await dropRole(ROLE);
});

const stored = (tag: string, db = tdb.db) => db.prisma.message.count({ where: { tags: { has: tag } } });
const newTag = () => `fault-${randomBytes(4).toString("hex")}`;

/** The database conditions the app logged for its 503s (the `db` field of "request failed"). */
function loggedConditions(app = t): string[] {
  return app.logs.flatMap((l) => {
    const o = JSON.parse(l) as { msg?: string; db?: string };
    return o.msg === "request failed" && o.db ? [o.db] : [];
  });
}

async function expectAccepted(scenario: string, app = t, k = key): Promise<void> {
  const answers = await sendConcurrently(app, k, { senders: 2, batches: 1, tag: newTag() });
  for (const a of answers) assert.ok(a.status === 202 || a.status === 200, `${scenario}: ${a.what} ${a.status} ${a.body}`);
}

/**
 * After a fault ends, sending recovers: a round of sends is wholly accepted within a few
 * seconds. A round before that may still meet a 503 (the pool opening fresh sessions on
 * a loaded machine can outlast the writer's short queue wait), never a 500.
 */
async function expectRecovers(scenario: string, app = t, k = key): Promise<void> {
  const seen: string[] = [];
  await waitFor(async () => {
    const answers = await sendConcurrently(app, k, { senders: 2, batches: 1, tag: newTag() });
    assertAcceptedOrUnavailable(answers, scenario);
    seen.push(summary(answers));
    return answers.every((a) => a.status === 202 || a.status === 200);
  }, { what: () => `${scenario}: every send accepted (rounds: ${seen.join("; ")})` });
}

/** Every answer 503 with Retry-After; nothing stored under the tag; the condition logged. */
async function expectAllUnavailable(answers: Answer[], tag: string, scenario: string, condition: RegExp, app = t): Promise<void> {
  assertAcceptedOrUnavailable(answers, scenario);
  assert.ok(answers.every((a) => a.status === 503), `${scenario}: ${summary(answers)}`);
  assert.equal(await stored(tag), 0, `${scenario}: a message answered 503 was stored`);
  assert.ok(loggedConditions(app).some((c) => condition.test(c)), `${scenario}: logged ${loggedConditions(app).join(", ")}`);
}

test("a table lock held past the statement timeout: 503 with Retry-After for 20 senders within the timeout + 1.5 s, nothing stored", async (ctx) => {
  const tag = newTag();
  await admin.query("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE");
  let answers: Answer[];
  try {
    answers = await sendConcurrently(t, key, { senders: 20, batches: 2, tag });
  } finally {
    await admin.query("ROLLBACK");
  }
  await expectAllUnavailable(answers, tag, "table lock", /^(57014|55P03)$/);
  // Each answer within about the statement timeout: the statements holding the writer's
  // slots time out once, and the messages queued behind them are answered unsent after
  // the queue wait instead of waiting for those statements and then their own.
  const slowest = Math.max(...answers.map((a) => a.ms));
  ctx.diagnostic(`lock: ${summary(answers)}, statement timeout ${STATEMENT_TIMEOUT_MS} ms`);
  assert.ok(slowest <= STATEMENT_TIMEOUT_MS + 1500, `slowest answer under the lock: ${slowest} ms (${summary(answers)})`);
  await expectRecovers("after the lock");
});

test("backends terminated mid-statement (57P01): 202 or 503, never 500; what was answered 503 is not stored", async () => {
  const tag = newTag();
  await admin.query("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE");
  let answers: Answer[];
  try {
    const pending = sendConcurrently(t, key, { senders: 6, tag });
    await waitFor(async () => (await watcher.query(
      "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rowCount, { what: "a writer statement waiting on the lock" });
    await watcher.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
    await admin.query("ROLLBACK");
    answers = await pending;
  } finally {
    await admin.query("ROLLBACK");
  }
  assertAcceptedOrUnavailable(answers, "terminated backend");
  assert.ok(answers.some((a) => a.status === 503), summary(answers));
  assert.ok(loggedConditions().includes("57P01"), `logged ${loggedConditions().join(", ")}`);
  assert.equal(await stored(tag), answers.filter((a) => a.status === 202).length, "exactly the 202s are stored");
  await expectRecovers("after the terminations");
});

/** Ends every session of the app's pool and waits until the pool has let go of them. */
async function freshSessions(): Promise<void> {
  await watcher.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> $1",
    [(admin as unknown as { processID: number }).processID]);
  await waitFor(() => tdb.db.pool.totalCount === 0, { what: "the pool dropping its terminated connections" });
}

test("a read-only database, as a standby answers after a failover (25006): 503, nothing stored, then it recovers", async () => {
  const tag = newTag();
  await admin.query(`ALTER DATABASE "${tdb.name}" SET default_transaction_read_only = on`);
  try {
    await freshSessions();
    await expectAllUnavailable(await sendConcurrently(t, key, { senders: 4, batches: 1, tag }), tag, "read-only", /^25006$/);
  } finally {
    await admin.query(`ALTER DATABASE "${tdb.name}" RESET default_transaction_read_only`);
    await freshSessions();
  }
  await expectRecovers("writable again");
});

test("the role out of connections (53300): 503, then it recovers", async () => {
  await admin.query(`CREATE ROLE "${ROLE}" LOGIN;
                     GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO "${ROLE}";
                     GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "${ROLE}"`);
  const u = new URL(tdb.url);
  u.username = ROLE;
  const db = openDatabase({ url: u.toString(), poolMax: 4, statementTimeoutMs: STATEMENT_TIMEOUT_MS, connectTimeoutMs: 2000 });
  const limited = await startTestApp(
    { DATABASE_URL: u.toString(), DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS), API_KEY_CACHE_TTL_MS: "600000", MIGRATE_ON_START: "false" },
    { tdb: { name: tdb.name, url: u.toString(), db, drop: () => db.close() } },
  );
  try {
    await expectAccepted("as the limited role", limited);
    await admin.query(`ALTER ROLE "${ROLE}" CONNECTION LIMIT 0`);
    await watcher.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", [ROLE]);
    await waitFor(() => db.pool.totalCount === 0, { what: "the pool dropping its terminated connections" });
    const tag = newTag();
    await expectAllUnavailable(await sendConcurrently(limited, key, { senders: 4, batches: 1, tag }), tag, "too many connections", /^(53300|TooManyConnections)$/, limited);
    await admin.query(`ALTER ROLE "${ROLE}" CONNECTION LIMIT -1`);
    await expectRecovers("connections allowed again", limited);
  } finally {
    await limited.close();
    await db.close();
    await admin.query(`DROP OWNED BY "${ROLE}"`);
  }
});

for (const [code, what] of [["53100", "a full disk"], ["57P03", "a server shutting down"], ["40P01", "a deadlock"]] as const) {
  test(`${what} (${code}) raised inside the writer's statement: 503, nothing stored`, async () => {
    const tag = newTag();
    await raise.raising(code, async () =>
      expectAllUnavailable(await sendConcurrently(t, key, { senders: 4, batches: 1, tag }), tag, what, new RegExp(`^${code}$`)));
    await expectRecovers(`after ${what}`);
  });
}
