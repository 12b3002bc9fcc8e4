// The embedded database is ONE PGlite session shared by every client connection (the
// API's pool, the worker's, `keys create` from another process). These tests drive it
// with real pg clients the way sealpost does: extended-protocol queries (Parse, Bind,
// Describe, Execute, Sync) with large parameters, from several connections at once,
// and check that no connection ever sees another's statement, transaction or error.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { PGlite } from "@electric-sql/pglite";
import { PGliteSessionServer } from "../../src/db/pglite-server.ts";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "../../src/db/embedded.ts";
import { waitFor } from "../helpers/wait.ts";
import { Writable } from "node:stream";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { openRuntime } from "../../src/runtime.ts";

const tmp = mkdtempSync(join(tmpdir(), "sealpost-sessions-"));
let embedded: EmbeddedDatabase;
const clients: pg.Client[] = [];

before(async () => {
  embedded = await startEmbeddedDatabase(join(tmp, "data"));
  const c = await connect();
  await c.query("CREATE TABLE blobs (id int PRIMARY KEY, body text NOT NULL, tag text NOT NULL)");
});

after(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => {})));
  await embedded?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

async function connect(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: embedded.url });
  c.on("error", () => {}); // a client destroyed on purpose below
  await c.connect();
  clients.push(c);
  return c;
}

test("two connections sending large extended-protocol queries at once each get their own statement", { timeout: 120_000 }, async () => {
  const [a, b] = await Promise.all([connect(), connect()]);
  const big = (ch: string) => ch.repeat(1024 * 1024); // ~1 MB: arrives in many TCP chunks
  // Different parameter counts, as in the failure seen under load: a 29-parameter
  // statement bound against another connection's 3-parameter one.
  const wide = (i: number) =>
    a.query<{ n: number; len: number }>(
      `SELECT ${Array.from({ length: 29 }, (_, k) => `$${k + 1}::text`).join(" || ")} AS s, 29 AS n, length($1::text) AS len`,
      [big(String.fromCharCode(97 + (i % 26))), ...Array.from({ length: 28 }, (_, k) => `p${k}`)],
    );
  const narrow = (i: number) =>
    b.query<{ n: number; len: number }>(`SELECT $1::text || $2::text || $3::text AS s, 3 AS n, length($1::text) AS len`, [
      big(String.fromCharCode(65 + (i % 26))), "x", "y",
    ]);
  // Each client sends its queries one after another (as a pool connection does), both
  // clients at once: their messages reach the session interleaved.
  const results: Array<{ i: number; n: number; len: number }> = [];
  const failed: string[] = [];
  const loop = async (run: (i: number) => Promise<pg.QueryResult<{ n: number; len: number }>>) => {
    for (let i = 0; i < 12; i++) {
      try {
        const row = (await run(i)).rows[0]!;
        results.push({ i, n: row.n, len: row.len });
      } catch (err) {
        failed.push(String(err));
      }
    }
  };
  await Promise.all([loop(wide), loop(narrow)]);
  assert.deepEqual(failed, [], "no query may fail");
  assert.equal(results.filter((r) => r.n === 29 && r.len === 1024 * 1024).length, 12, "each wide query got its own statement's result");
  assert.equal(results.filter((r) => r.n === 3 && r.len === 1024 * 1024).length, 12, "each narrow query got its own statement's result");
});

test("many connections writing large rows at once all commit", { timeout: 120_000 }, async () => {
  const conns = await Promise.all(Array.from({ length: 6 }, () => connect()));
  const failed: string[] = [];
  await Promise.all(conns.map(async (c, ci) => {
    for (let k = 0; k < 4; k++) {
      const id = 1000 + ci * 10 + k;
      await c.query(`INSERT INTO blobs (id, body, tag) VALUES ($1, $2, $3)`, [id, "z".repeat(700_000 + id), `c${ci}`])
        .catch((err) => failed.push(String(err)));
    }
  }));
  assert.deepEqual(failed, []);
  const { rows } = await conns[0]!.query<{ n: number; ok: number }>(
    `SELECT count(*)::int AS n, count(*) FILTER (WHERE length(body) = 700000 + id)::int AS ok FROM blobs WHERE id >= 1000`,
  );
  assert.deepEqual(rows[0], { n: 24, ok: 24 });
});

test("a connection inside a transaction keeps the session until it commits; others wait, then see the commit", { timeout: 60_000 }, async () => {
  const [a, b] = await Promise.all([connect(), connect()]);
  await a.query("BEGIN");
  await a.query(`INSERT INTO blobs (id, body, tag) VALUES (1, $1, 'tx')`, ["y".repeat(300_000)]);
  let seen: number | null = null;
  const reading = b.query<{ n: number }>(`SELECT count(*)::int AS n FROM blobs WHERE tag = $1`, ["tx"]).then((r) => {
    seen = r.rows[0]!.n;
  });
  // A's own statements still run while B waits (no deadlock on the session).
  const mine = await a.query<{ n: number }>(`SELECT count(*)::int AS n FROM blobs WHERE tag = $1`, ["tx"]);
  assert.equal(mine.rows[0]!.n, 1);
  assert.equal(seen, null, "B must not run inside A's transaction");
  await a.query("COMMIT");
  await reading;
  assert.equal(seen, 1, "B runs after the commit and sees it");
});

test("an error in one connection's transaction is not seen by another connection", { timeout: 60_000 }, async () => {
  const [a, b] = await Promise.all([connect(), connect()]);
  await a.query("BEGIN");
  await assert.rejects(a.query("SELECT 1/0"), /division by zero/);
  const other = b.query<{ one: number }>("SELECT $1::int AS one", [1]);
  await assert.rejects(a.query("SELECT 1"), /current transaction is aborted/);
  await a.query("ROLLBACK");
  assert.equal((await other).rows[0]!.one, 1);
});

test("a connection that disconnects inside a transaction is rolled back and frees the session", { timeout: 60_000 }, async () => {
  const [a, b] = await Promise.all([connect(), connect()]);
  await a.query("BEGIN");
  await a.query(`INSERT INTO blobs (id, body, tag) VALUES (2, 'lost', 'gone')`);
  const waiting = b.query<{ n: number }>(`SELECT count(*)::int AS n FROM blobs WHERE tag = $1`, ["gone"]);
  (a as unknown as { connection: { stream: net.Socket } }).connection.stream.destroy();
  const r = await waiting;
  assert.equal(r.rows[0]!.n, 0, "the open transaction was rolled back");
  // And the session is usable again by everyone.
  const c = await connect();
  assert.equal((await c.query<{ x: number }>("SELECT $1::int AS x", [5])).rows[0]!.x, 5);
});

test("a message split across many small TCP writes is reassembled", { timeout: 60_000 }, async () => {
  const u = new URL(embedded.url);
  const sock = net.connect({ host: u.hostname, port: Number(u.port) });
  sock.setNoDelay(true);
  await new Promise<void>((r) => sock.once("connect", () => r()));
  const received: Buffer[] = [];
  sock.on("data", (d) => received.push(d));
  const startupBody = Buffer.concat([Buffer.from([0, 3, 0, 0]), Buffer.from("user\0postgres\0database\0postgres\0\0")]);
  const startup = Buffer.concat([int32(startupBody.length + 4), startupBody]);
  const sql = Buffer.from(`SELECT length('${"q".repeat(200_000)}') AS n\0`);
  const query = Buffer.concat([Buffer.from("Q"), int32(sql.length + 4), sql]);
  const stream = Buffer.concat([startup, query]);
  // Odd-sized pieces, each written after the previous one was flushed, so headers
  // and bodies are cut at arbitrary points.
  for (let i = 0, step = 1; i < stream.length; i += step, step = step * 3 + 1 > 65_521 ? 7 : step * 3 + 1) {
    await new Promise<void>((r, j) => sock.write(stream.subarray(i, i + step), (err) => (err ? j(err) : r())));
  }
  const text = await waitFor(() => {
    const all = Buffer.concat(received);
    // Two ReadyForQuery messages: one after the startup, one after the query.
    const z = all.toString("latin1").split("Z\0\0\0\x05I").length - 1;
    return z >= 2 ? all.toString("latin1") : null;
  }, { timeoutMs: 30_000, what: "the answer to the split query" });
  assert.ok(text.includes("200000"), "the row carries length 200000");
  sock.destroy();
});

test("a connection idle inside a transaction past the timeout is ended with 25P03 and the session goes on", { timeout: 60_000 }, async () => {
  const db = await PGlite.create();
  const server = new PGliteSessionServer(db, { idleInTransactionTimeoutMs: 300 });
  const port = await server.listen("127.0.0.1", 0);
  const url = `postgresql://postgres@127.0.0.1:${port}/postgres?sslmode=disable`;
  const a = new pg.Client({ connectionString: url });
  const b = new pg.Client({ connectionString: url });
  const errors: Array<Error & { code?: string }> = [];
  a.on("error", (err) => errors.push(err)); // the 25P03, then the closed connection
  try {
    await a.connect();
    await b.connect();
    await a.query("BEGIN");
    await a.query("CREATE TABLE t (x int)");
    // B's query can only run once A's transaction is over: the timeout ends it.
    const started = Date.now();
    const r = await b.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_class WHERE relname = $1", ["t"]);
    assert.equal(r.rows[0]!.n, 0, "A's uncommitted table was rolled back");
    assert.ok(Date.now() - started >= 250, "B waited for the timeout");
    const err = await waitFor(() => errors[0], { what: "A's connection error" });
    assert.equal(err.code, "25P03", String(err));
  } finally {
    await b.end().catch(() => {});
    await a.end().catch(() => {});
    await server.stop();
    await db.close();
  }
});

test("a statement that holds the session for seconds does not time out the connections waiting for it", { timeout: 120_000 }, async () => {
  // PGlite runs in this process and blocks it while a statement executes; a client
  // timer (connect, query) that expires meanwhile fires before the answer is read. The
  // runtime's embedded pool must not turn such a wait into "database unavailable".
  const logger = createLogger("silent", new Writable({ write: (_c, _e, cb) => cb() }));
  const rt = await openRuntime(loadConfig({ NODE_ENV: "test", DATA_DIR: join(tmp, "runtime"), SEALPOST_DATA_KEY: Buffer.alloc(32, 1).toString("base64") }), logger);
  try {
    assert.ok(rt.embedded?.owner, "the runtime opened the embedded database");
    await rt.db.pool.query("SELECT 1"); // one idle connection: the sleep starts at once on it
    const slow = rt.db.pool.query("SELECT pg_sleep(3)");
    // A second pool connection is made, and a query sent, while the sleep holds the session.
    const [, count] = await Promise.all([slow, rt.db.prisma.apiKey.count()]);
    assert.equal(count, 0);
  } finally {
    await rt.close();
  }
});

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}
