// Stopping sealpost as its launchers deliver signals (issue 7, finding 3): SIGTERM to
// `npm start` (npm runs `sh -c`, which must not swallow it), SIGINT to the whole process
// group (Ctrl-C: node hears it twice), SIGTERM to the image's entrypoint
// `node bin/sealpost.js` with deliveries claimed and in flight, a signal during start-up,
// and a second signal while stopping. Every case must end the same way: exit 0, the
// "stopped" line, the embedded database's lock file gone, the port free, no process left.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { ensureDevCertificates } from "../../src/api/certificates.ts";
import { MIGRATION_LOCK_KEY } from "../../src/db/migrate.ts";
import { startTestApp, TEST_DATA_KEY, type TestApp } from "../helpers/app.ts";
import { createTestDatabase } from "../helpers/db.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { testCaFile } from "../helpers/worker.ts";
import { sendMessage } from "../helpers/messages.ts";
import { waitFor } from "../helpers/wait.ts";
import { alive, exitWithin, freePort, portIsFree, spawnCli, stackFrames, type CliProcess } from "../helpers/cli-process.ts";

const tmp = mkdtempSync(join(tmpdir(), "sealpost-signals-"));
const DATA_DIR = join(tmp, "data"); // one embedded database, reopened by each test that uses it
const CERTS_DIR = join(tmp, "certs");
const LOCK_FILE = join(DATA_DIR, "pglite.lock");
/** docker stop's default: SIGKILL this long after SIGTERM. */
const DOCKER_STOP_TIMEOUT_MS = 10_000;

let app: TestApp;
let key: string;
let slow: SmtpPeer; // holds its reply to every final dot for a minute
let dns: FakeDns;

before(async () => {
  // Made once here, so no child spends seconds on RSA keys.
  ensureDevCertificates(CERTS_DIR, { info() {}, warn() {} });
  app = await startTestApp();
  key = (await app.createKey()).key;
  slow = await startPeer({ ip: "127.0.0.51", dataDelay: { ms: 60_000 } });
  dns = await startFakeDns({ "slow.test": { MX: [{ preference: 10, exchange: "mx.slow.test" }] }, "mx.slow.test": { A: ["127.0.0.51"] } });
});

after(async () => {
  await slow?.close();
  await dns?.close();
  await app?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const embeddedEnv = (port: number): Record<string, string> => ({
  DATA_DIR, CERTS_DIR, HOST: "127.0.0.1", PORT: String(port), SEALPOST_DATA_KEY: TEST_DATA_KEY,
});

/** On the test Postgres database, delivering to the slow peer through the fake DNS. */
const postgresEnv = (port: number, extra: Record<string, string> = {}): Record<string, string> => ({
  DATABASE_URL: app.tdb.url, SEALPOST_DATA_KEY: TEST_DATA_KEY, CERTS_DIR, HOST: "127.0.0.1", PORT: String(port),
  DNS_SERVERS: dns.address, SMTP_MX_PORT: String(slow.port), SMTP_CA_FILE: testCaFile(), SMTP_HELO_NAME: "sealpost.test",
  WORKER_POLL_MS: "25", ...extra,
});

function launch(t: TestContext, command: string, args: string[], env: Record<string, string>, opts: { detached?: boolean } = {}): CliProcess {
  const p = spawnCli(command, args, env, opts);
  t.after(() => p.kill());
  return p;
}

// The API is up; the worker starts a moment later (a signal in between is a signal
// during start-up, which must stop just as cleanly: Ctrl-C "right after readiness").
const READY = /"msg":"sealpost API listening/;

/** The pid of the node process that owns the embedded database (npm's child, not npm). */
const embeddedOwner = (): number => JSON.parse(readFileSync(LOCK_FILE, "utf8")).pid;

async function assertStoppedCleanly(p: CliProcess, r: { code: number | null; signal: NodeJS.Signals | null }, o: { port: number; nodePid: number }) {
  assert.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, p.output());
  assert.ok(p.lines.some((l) => /"msg":"stopped"/.test(l)), `the "stopped" line:\n${p.output()}`);
  assert.deepEqual(stackFrames(p.output()), []);
  assert.ok(!existsSync(LOCK_FILE), "the embedded database's lock file is removed");
  assert.ok(!alive(o.nodePid), `the node process ${o.nodePid} is gone, not orphaned`);
  assert.ok(await portIsFree(o.port), `nothing listens on ${o.port} any more`);
}

const reached = (rcpt: string) => slow.received.some((m) => m.to.includes(rcpt));
const deliveryOf = (messageId: string) => app.tdb.db.prisma.delivery.findFirstOrThrow({ where: { messageId } });

test("SIGTERM to `npm start` reaches node, which stops cleanly; npm exits 0", async (t) => {
  const port = await freePort();
  const p = launch(t, "npm", ["start"], embeddedEnv(port), { detached: true });
  await p.waitForLine(READY, "sealpost to start");
  const nodePid = embeddedOwner();
  assert.notEqual(nodePid, p.child.pid, "npm runs node as a child");

  process.kill(p.child.pid!, "SIGTERM");
  const r = await exitWithin(p, DOCKER_STOP_TIMEOUT_MS, "npm start after SIGTERM");
  await assertStoppedCleanly(p, r, { port, nodePid });
});

test("SIGINT to the process group of `npm start` (Ctrl-C) stops it cleanly", async (t) => {
  const port = await freePort();
  const p = launch(t, "npm", ["start"], embeddedEnv(port), { detached: true });
  await p.waitForLine(READY, "sealpost to start");
  const nodePid = embeddedOwner();

  // npm, and node, each get it from the "terminal"; npm forwards its copy to node too.
  process.kill(-p.child.pid!, "SIGINT");
  const r = await exitWithin(p, DOCKER_STOP_TIMEOUT_MS, "npm start after SIGINT to its group");
  await assertStoppedCleanly(p, r, { port, nodePid });
});

test("SIGTERM during start-up on the embedded database: it stops, exits 0 and releases the lock", async (t) => {
  const port = await freePort();
  const p = launch(t, process.execPath, ["src/cli.ts", "start"], embeddedEnv(port));
  // Logged as soon as the embedded database is open, before migrations, the API and the worker.
  await p.waitForLine(/using the embedded database/, "the embedded database to open");
  p.child.kill("SIGTERM");
  const r = await exitWithin(p, DOCKER_STOP_TIMEOUT_MS, "sealpost after SIGTERM during start-up");
  await assertStoppedCleanly(p, r, { port, nodePid: p.child.pid! });
});

test("SIGTERM during start-up aborts it: nothing listens, no key is created, exit 0", async (t) => {
  const tdb = await createTestDatabase();
  // Hold the migration lock, so start-up waits in a known place (migrations).
  const holder = new pg.Client({ connectionString: tdb.url });
  holder.on("error", () => {}); // a failed test drops the database under it
  t.after(async () => {
    await holder.end().catch(() => {});
    await tdb.drop();
  });
  await holder.connect();
  await holder.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);

  const port = await freePort();
  const p = launch(t, process.execPath, ["src/cli.ts", "start"], postgresEnv(port, { DATABASE_URL: tdb.url }));
  await waitFor(
    async () => (await holder.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).rows[0]!.n > 0,
    { what: "start-up to wait for the migration lock", timeoutMs: 30_000 },
  );
  p.child.kill("SIGTERM");
  await p.waitForLine(/"msg":"shutting down"/, "the signal to be handled", 5000);
  await holder.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);

  const r = await exitWithin(p, DOCKER_STOP_TIMEOUT_MS, "sealpost after SIGTERM during start-up");
  assert.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null }, p.output());
  assert.ok(p.lines.some((l) => /start-up interrupted/.test(l)), p.output());
  assert.ok(p.lines.some((l) => /"msg":"stopped"/.test(l)), p.output());
  assert.ok(!p.lines.some((l) => /API listening|delivery worker started|No API keys existed/.test(l)), `start-up went no further:\n${p.output()}`);
  assert.equal(await tdb.db.prisma.apiKey.count(), 0, "no initial key was created");
  assert.ok(await portIsFree(port));
});

test("SIGTERM to `node bin/sealpost.js start` (the image's entrypoint) stops within docker's 10 s and hands back every lease", async (t) => {
  // Two queued before the worker starts, one slot: one goes to the slow peer (in flight,
  // its reply a minute away), the other waits in the worker's backlog (claimed, not started).
  const inFlight = await sendMessage(app, key, { to: "one@slow.test" });
  const backlog = await sendMessage(app, key, { to: "two@slow.test" });
  const port = await freePort();
  const p = launch(t, process.execPath, ["bin/sealpost.js", "start"], postgresEnv(port, { WORKER_CONCURRENCY: "1", WORKER_BATCH_SIZE: "5", SHUTDOWN_GRACE: "1s" }));
  await p.waitForLine(READY, "sealpost to start");
  await waitFor(() => reached("one@slow.test"), { what: "the first message to reach the slow peer", timeoutMs: 20_000 });
  assert.ok((await deliveryOf(backlog)).leaseOwner, "the second is claimed, waiting in the backlog");
  assert.ok((await deliveryOf(inFlight)).leaseOwner, "the first is in flight");

  p.child.kill("SIGTERM");
  const r = await exitWithin(p, DOCKER_STOP_TIMEOUT_MS, "node bin/sealpost.js after SIGTERM");
  await assertStoppedCleanly(p, r, { port, nodePid: p.child.pid! });
  t.diagnostic(`stopped ${r.tookMs} ms after SIGTERM`);

  const a = await deliveryOf(inFlight);
  assert.deepEqual({ lease: a.leaseOwner, state: a.state, attempts: a.attempts }, { lease: null, state: "pending", attempts: 1 }, "in flight past SHUTDOWN_GRACE: handed back");
  assert.ok(a.nextAttemptAt.getTime() <= Date.now() + 1000, "due again at once, not after the five-minute lease");
  const b = await deliveryOf(backlog);
  assert.deepEqual({ lease: b.leaseOwner, state: b.state, attempts: b.attempts }, { lease: null, state: "pending", attempts: 0 }, "never started: handed back as it was");
});

test("a second signal while stopping is logged and ignored; the stop finishes and exits 0", async (t) => {
  const id = await sendMessage(app, key, { to: "three@slow.test" });
  const port = await freePort();
  // The stop takes SHUTDOWN_GRACE (the delivery in flight never gets its reply), so the
  // second signal surely comes while it is under way.
  const p = launch(t, process.execPath, ["src/cli.ts", "start"], postgresEnv(port, { SHUTDOWN_GRACE: "2s" }));
  await p.waitForLine(READY, "sealpost to start");
  await waitFor(() => reached("three@slow.test"), { what: "the message to reach the slow peer", timeoutMs: 20_000 });

  p.child.kill("SIGINT");
  await p.waitForLine(/"msg":"shutting down"/, "the first signal to be handled", 5000);
  p.child.kill("SIGINT");
  await p.waitForLine(/already stopping; SIGINT ignored/, "the second signal to be logged", 5000);
  const r = await exitWithin(p, DOCKER_STOP_TIMEOUT_MS, "sealpost after two signals");
  await assertStoppedCleanly(p, r, { port, nodePid: p.child.pid! });
  const d = await deliveryOf(id);
  assert.equal(d.leaseOwner, null, "its lease was handed back");
});
