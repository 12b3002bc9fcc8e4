// Benchmark of the accept path (issue 2, "Keep the send path lean"; issue 10's ceiling A):
// requests/s of sealpost's real POST /send against a bare Fastify HTTPS route that
// validates the same JSON with zod and does one pg INSERT of it, both on a fresh
// Postgres database. Prints figures; asserts nothing
// except that no accepted message was lost. Target: sealpost / baseline >= 0.6.
//
//   npm run bench:send -- [--duration 10] [--connections 50] [--pipelining 1] [--warmup 2]
//                         [--only baseline|sealpost] [--log-level info] [--cpu-prof] [--rounds 1]
//                         [--populate 0]
//
// --rounds N measures both targets N times, alternating which goes first, and prints the
// ratio of each round and their median: on a machine others share, load moves between
// two measurements, and a ratio of one round can be off by a third either way.
// --populate N first stores N finished messages (each with a recipient, a done queue row
// and a delivery attempt, content purged) and N/100 queued ones, with set-based SQL, so
// the accept rate can be compared with the empty database's (issue 10: within 15% at 1M).
//
// Process layout: the server under test runs in a child process and autocannon in this
// one. Node runs JavaScript (and TLS record work) on one thread per process, so a
// server sharing the load generator's event loop would be measured at whatever CPU
// autocannon left it, and a slower server would also slow the client that times it.
// With two processes the scheduler gives each its own core when it can; Postgres
// competes with both, the same way for (a) and (b), which is what the ratio needs.
// --cpu-prof writes V8 profiles of the server child under $TMPDIR/sealpost-bench-profiles/.
import { fork, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import pino from "pino";
import { buildApp } from "../src/api/app.ts";
import { serverTlsOptions } from "../src/api/tls-options.ts";
import { loadConfig } from "../src/config.ts";
import { openDatabase } from "../src/db/client.ts";
import { migrate } from "../src/db/migrate.ts";
import { createLogger } from "../src/logger.ts";
import { ContentCipher } from "../src/security/content-cipher.ts";
import { parseDataKeys } from "../src/security/data-keys.ts";
import { ApiKeyVerifier, createApiKey } from "../src/services/api-keys.ts";
import { createCa, issueCertificate } from "../src/tls/certificates.ts";
import { request } from "../test/helpers/https-client.ts";
import { createEmptyDatabase } from "../test/helpers/db.ts";
import { autocannon, CEILING_COUNT_SQL, CEILING_SCRATCH_SQL, idleShare, postgresCpuMs, RESET_BODY, serveCeiling, settledCount } from "./bench-common.ts";

type Target = "baseline" | "sealpost";
interface Setup {
  target: Target;
  databaseUrl: string;
  pem: { cert: string; key: string };
  dataKey: string;
  logLevel: string;
}

const PROFILE_DIR = join(tmpdir(), "sealpost-bench-profiles");
/** N finished messages with their rows, and n/100 queued ones, as the worker and retention leave them; ids are derived from the row number. */
async function populate(databaseUrl: string, apiKeyId: string, n: number): Promise<void> {
  // A connection of its own, without the pool's statement and read timeouts: a million rows take minutes on a busy machine.
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await fill(client, apiKeyId, n);
  } finally {
    await client.end();
  }
}

async function fill(pool: pg.Client, apiKeyId: string, n: number): Promise<void> {
  const queued = Math.floor(n / 100);
  const total = n + queued;
  // Message i (1..total): finished when i <= n, else queued. Deliveries, recipients and attempts reuse i as their id.
  await pool.query(`INSERT INTO messages (id, api_key_id, status, tls_policy, message_id_header, from_address, subject, text_body, tags,
                                          created_at, updated_at, finished_at, content_purged_at)
    SELECT md5('bench' || i)::uuid, $1, CASE WHEN i <= $2 THEN 'delivered' ELSE 'queued' END, 'required', '<' || i || '@shop.example>', 'no-reply@shop.example',
           CASE WHEN i <= $2 THEN NULL ELSE '\\x01'::bytea END, CASE WHEN i <= $2 THEN NULL ELSE '\\x01'::bytea END, ARRAY['password-reset'],
           now() - make_interval(secs => ($3 - i) * 2), now() - make_interval(secs => ($3 - i) * 2),
           CASE WHEN i <= $2 THEN now() - make_interval(secs => ($3 - i) * 2 - 1) END,
           CASE WHEN i <= $2 THEN now() - make_interval(secs => ($3 - i) * 2 - 1) END
      FROM generate_series(1, $3) AS i`, [apiKeyId, n, total]);
  await pool.query(`INSERT INTO deliveries (id, message_id, api_key_id, domain, state, attempts, next_attempt_at, created_at)
    SELECT i, md5('bench' || i)::uuid, $3, 'example.com', CASE WHEN i <= $1 THEN 'done' ELSE 'pending' END, CASE WHEN i <= $1 THEN 1 ELSE 0 END,
           now() + interval '1 day', now() - make_interval(secs => ($2 - i) * 2)
      FROM generate_series(1, $2) AS i`, [n, total, apiKeyId]);
  await pool.query(`INSERT INTO recipients (id, message_id, delivery_id, position, kind, address, status, attempts, last_code, updated_at)
    SELECT i, md5('bench' || i)::uuid, i, 1, 'to', 'user' || i || '@example.com', CASE WHEN i <= $1 THEN 'delivered' ELSE 'queued' END,
           CASE WHEN i <= $1 THEN 1 ELSE 0 END, CASE WHEN i <= $1 THEN 250 END, now()
      FROM generate_series(1, $2) AS i`, [n, total]);
  await pool.query(`INSERT INTO delivery_attempts (id, message_id, recipient_id, attempt, mx_host, ip, port, policy, tls, tls_version, cipher, verified,
                                                   reply_code, enhanced_code, reply_text, outcome, started_at, duration_ms)
    SELECT i, md5('bench' || i)::uuid, i, 1, 'mx.example.com', '192.0.2.1', 25, 'required', true, 'TLSv1.3', 'TLS_AES_256_GCM_SHA384', true,
           250, '2.0.0', 'OK queued', 'delivered', now() - make_interval(secs => ($1 - i) * 2 - 1), 120
      FROM generate_series(1, $1) AS i`, [n]);
  for (const t of ["deliveries", "recipients", "delivery_attempts"])
    await pool.query(`SELECT setval(pg_get_serial_sequence('${t}', 'id'), (SELECT max(id) FROM ${t}))`);
  await pool.query("VACUUM ANALYZE messages, deliveries, recipients, delivery_attempts");
  // The populating writes' WAL is flushed now, not during the measurement.
  await pool.query("CHECKPOINT");
}

// ---------------------------------------------------------------- server child

async function serve(setup: Setup): Promise<{ port: number; close(): Promise<void> }> {
  // The ceiling: HTTPS + JSON parsing + the request schema + one INSERT, nothing else.
  if (setup.target === "baseline") return serveCeiling(setup.databaseUrl, setup.pem);
  const tls = serverTlsOptions(setup.pem);
  // The real thing, built as server.ts builds it; only the rate limits are raised so the
  // load generator (one IP, one key) measures the send path and not 429s.
  const config = loadConfig({
    NODE_ENV: "development",
    DATABASE_URL: setup.databaseUrl,
    HOST: "127.0.0.1",
    PORT: "0",
    SEALPOST_DATA_KEY: setup.dataKey,
    LOG_LEVEL: setup.logLevel,
    RATE_LIMIT_IP_MAX: "10000000",
    RATE_LIMIT_KEY_MAX: "10000000",
  });
  // pino's default destination is a synchronous write to stdout; /dev/null keeps that
  // cost (serialising two lines per request) without a terminal or pipe in the way.
  const logger = createLogger(config.LOG_LEVEL, pino.destination({ dest: "/dev/null", sync: true }) as unknown as NodeJS.WritableStream);
  const db = openDatabase({
    url: config.DATABASE_URL!,
    poolMax: config.DATABASE_POOL_MAX,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
    connectTimeoutMs: config.DATABASE_CONNECT_TIMEOUT_MS,
  });
  const cipher = new ContentCipher(parseDataKeys(setup.dataKey));
  const keys = new ApiKeyVerifier(db.prisma, config.API_KEY_CACHE_TTL_MS);
  const app = await buildApp({ config, db, cipher, keys, logger }, tls);
  await app.listen({ host: "127.0.0.1", port: 0 });
  const addr = app.server.address();
  return { port: typeof addr === "object" && addr ? addr.port : 0, close: async () => { await app.close(); await db.close(); } };
}

function runChild(): void {
  let server: Awaited<ReturnType<typeof serve>> | null = null;
  process.on("message", async (msg: { setup?: Setup; stop?: true; cpu?: true }) => {
    if (msg.cpu) process.send!({ cpu: process.cpuUsage(), maxRssKb: process.resourceUsage().maxRSS });
    else if (msg.setup) {
      server = await serve(msg.setup);
      process.send!({ port: server.port });
    } else if (msg.stop) {
      await server?.close();
      process.disconnect();
      process.exit(0); // a normal exit, so --cpu-prof writes its profile
    }
  });
}

// ---------------------------------------------------------------- parent

function startServer(setup: Setup, cpuProf: boolean): Promise<{ child: ChildProcess; port: number }> {
  const execArgv = [...(cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${join(PROFILE_DIR, setup.target)}`] : [])];
  const child = fork(fileURLToPath(import.meta.url), ["--child"], { execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`server child exited early (${code})`)));
    child.once("message", (m: { port: number }) => resolve({ child, port: m.port }));
    child.send({ setup });
  });
}

function stopServer(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.removeAllListeners("exit");
    child.once("exit", () => resolve());
    child.send({ stop: true });
  });
}

/** CPU time (ms) this process and the server child used so far, and all Postgres processes (Linux /proc; 0 elsewhere). */
async function cpuSnapshot(child: ChildProcess): Promise<{ server: number; postgres: number; client: number; serverMaxRssMb: number }> {
  const m = await new Promise<{ cpu: NodeJS.CpuUsage; maxRssKb: number }>((resolve) => {
    child.once("message", resolve);
    child.send({ cpu: true });
  });
  const self = process.cpuUsage();
  return {
    server: (m.cpu.user + m.cpu.system) / 1000,
    postgres: postgresCpuMs(), // USER_HZ is 100 on Linux
    client: (self.user + self.system) / 1000,
    serverMaxRssMb: m.maxRssKb / 1024,
  };
}

interface Figures {
  target: Target;
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  accepted: number;
  rows: number;
  cutOff: number;
  codes: string;
  /** CPU milliseconds per answered request. */
  cpu: { server: number; postgres: number; client: number };
  /** The server process's peak resident set (MB), warm-up and load included. */
  maxRssMb: number;
  round: number;
}

async function measure(target: Target, o: { duration: number; warmup: number; connections: number; pipelining: number }, ctx: {
  setup: Omit<Setup, "target">; ca: string; key: string; pool: pg.Pool; cpuProf: boolean;
}): Promise<Figures> {
  const { child, port } = await startServer({ ...ctx.setup, target }, ctx.cpuProf);
  try {
    const url = `https://127.0.0.1:${port}/send`;
    const headers = { "content-type": "application/json", authorization: `Bearer ${ctx.key}` };
    const body = JSON.stringify(RESET_BODY);
    // autocannon cannot verify the server: lib/httpClient.js (v9) spreads our tlsOptions
    // and then sets rejectUnauthorized: false itself, so passing the CA changes nothing.
    // This one request checks the same listener with verification on (our test CA,
    // certificate for 127.0.0.1) before the load runs; the load generator then only
    // measures, it does not prove anything about TLS.
    const pre = await request(url, { method: "POST", headers, body, ca: ctx.ca });
    if (pre.status !== 202) throw new Error(`${target}: preflight answered ${pre.status}: ${pre.body}`);
    const load = (seconds: number) =>
      autocannon({ url, method: "POST", headers, body, duration: seconds, connections: o.connections, pipelining: o.pipelining, tlsOptions: { ca: [ctx.ca] } });
    const countSql = target === "baseline" ? CEILING_COUNT_SQL : "SELECT count(*) AS n FROM messages";
    if (o.warmup > 0) await load(o.warmup); // JIT, pools and TLS sessions warm; not reported
    const before = await settledCount(ctx.pool, countSql);
    const cpu0 = await cpuSnapshot(child);
    const r = await load(o.duration);
    const cpu1 = await cpuSnapshot(child);
    const per = (k: "server" | "postgres" | "client") => (cpu1[k] - cpu0[k]) / Math.max(1, r.requests.total);
    const rows = (await settledCount(ctx.pool, countSql)) - before;
    return {
      target,
      rps: r.requests.average,
      p50: r.latency.p50,
      p99: r.latency.p99,
      non2xx: r.non2xx,
      errors: r.errors + r.timeouts,
      accepted: r.statusCodeStats["202"]?.count ?? 0,
      rows,
      cutOff: r.requests.sent - r.requests.total,
      codes: Object.entries(r.statusCodeStats).map(([c, s]) => `${c}:${s.count}`).join(" "),
      cpu: { server: per("server"), postgres: per("postgres"), client: per("client") },
      maxRssMb: cpu1.serverMaxRssMb,
      round: 0,
    };
  } finally {
    await stopServer(child);
  }
}

async function main(): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      duration: { type: "string", default: "10" },
      connections: { type: "string", default: "50" },
      pipelining: { type: "string", default: "1" },
      warmup: { type: "string", default: "2" },
      only: { type: "string" },
      "log-level": { type: "string", default: "info" },
      "cpu-prof": { type: "boolean", default: false },
      rounds: { type: "string", default: "1" },
      populate: { type: "string", default: "0" },
    },
  });
  const o = { duration: Number(a.duration), warmup: Number(a.warmup), connections: Number(a.connections), pipelining: Number(a.pipelining) };
  const targets: Target[] = a.only === "baseline" || a.only === "sealpost" ? [a.only] : ["baseline", "sealpost"];

  const idle = await idleShare(); // before our own setup (CREATE DATABASE checkpoints) adds load
  const scratch = await createEmptyDatabase("sp_bench");
  const { name, url: databaseUrl } = scratch;
  const db = openDatabase({ url: databaseUrl, poolMax: 2, statementTimeoutMs: 30_000, connectTimeoutMs: 5000 });
  try {
    await migrate(databaseUrl);
    await db.pool.query(CEILING_SCRATCH_SQL);
    const ca = createCa("sealpost bench CA");
    const pem = issueCertificate({ names: ["localhost", "127.0.0.1"], ca });
    const { key, record } = await createApiKey(db.prisma, { name: "bench", scopes: ["send"], domains: ["shop.example"] });
    const stored = Number(a.populate);
    if (stored > 0) {
      const t0 = performance.now();
      await populate(databaseUrl, record.id, stored);
      console.log(`populated ${stored} finished messages and ${Math.floor(stored / 100)} queued ones in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
    const pgVersion = (await db.pool.query<{ server_version: string }>("SHOW server_version")).rows[0]!.server_version;
    console.log(`bench:send  node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model}), Postgres ${pgVersion}, database ${name}`);
    console.log(`autocannon: ${o.duration}s per target after ${o.warmup}s warm-up, ${o.connections} connections, pipelining ${o.pipelining}; ` +
      `body ${JSON.stringify(RESET_BODY).length} bytes; sealpost LOG_LEVEL=${a["log-level"]}; ${stored} finished messages stored before; machine idle before start: ${(idle * 100).toFixed(0)}%` +
      `${idle < 0.85 ? "  (WARNING: other work is running, figures will be low)" : ""}\n`);
    const setup = { databaseUrl, pem, dataKey: randomBytes(32).toString("base64"), logLevel: a["log-level"]! };
    const rounds = Math.max(1, Number(a.rounds));
    const results: Figures[] = [];
    for (let round = 1; round <= rounds; round++) {
      // Alternate which target goes first, so a trend in the machine's load favours neither.
      for (const t of round % 2 === 1 ? targets : [...targets].reverse())
        results.push({ ...(await measure(t, o, { setup, ca: ca.cert, key, pool: db.pool, cpuProf: a["cpu-prof"]! })), round });
    }

    console.log("round  target     req/s    p50 ms  p99 ms  non-2xx  errors  CPU ms/request: server  postgres  autocannon  server max RSS MB  statuses");
    for (const r of results)
      console.log(`${String(r.round).padStart(5)}  ${r.target.padEnd(9)} ${r.rps.toFixed(0).padStart(6)}  ${String(r.p50).padStart(6)}  ${String(r.p99).padStart(6)}  ${String(r.non2xx).padStart(7)}  ${String(r.errors).padStart(6)}  ` +
        `${r.cpu.server.toFixed(3).padStart(22)}  ${r.cpu.postgres.toFixed(3).padStart(8)}  ${r.cpu.client.toFixed(3).padStart(10)}  ${r.maxRssMb.toFixed(0).padStart(17)}  ${r.codes}`);
    const pairs = Array.from({ length: rounds }, (_, i) => ({
      base: results.find((r) => r.round === i + 1 && r.target === "baseline"),
      sp: results.find((r) => r.round === i + 1 && r.target === "sealpost"),
    })).flatMap(({ base, sp }) => (base && sp ? [{ ratio: sp.rps / base.rps, p99: sp.p99 / Math.max(1, base.p99), spP99: sp.p99 }] : []));
    if (pairs.length > 0) {
      const median = (xs: number[]) => { const s = [...xs].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };
      const ratio = median(pairs.map((p) => p.ratio));
      const p99 = median(pairs.map((p) => p.p99));
      if (pairs.length > 1) console.log(`\nratios per round: ${pairs.map((p) => p.ratio.toFixed(2)).join(" ")}; p99 ratios: ${pairs.map((p) => p.p99.toFixed(1)).join(" ")}`);
      console.log(`${pairs.length > 1 ? "" : "\n"}ratio sealpost/baseline = ${ratio.toFixed(2)}${pairs.length > 1 ? " (median)" : ""} (target >= 0.60: ${ratio >= 0.6 ? "met" : "NOT met"}); ` +
        `p99 = ${p99.toFixed(1)} x the baseline's${pairs.length > 1 ? " (median)" : ` (${pairs[0]!.spP99} ms)`} (target <= 3: ${p99 <= 3 ? "met" : "NOT met"})`);
    }
    const rss = Math.max(0, ...results.filter((r) => r.target === "sealpost").map((r) => r.maxRssMb));
    if (rss > 0) console.log(`sealpost server peak RSS ${rss.toFixed(0)} MB (target <= 200: ${rss <= 200 ? "met" : "NOT met"})`);
    let lost = false;
    for (const r of results) {
      // Every 202 must have its row. A few more rows than 202s is expected: requests in
      // flight when autocannon stopped were committed, but their answers were not counted.
      const missing = r.accepted - r.rows;
      lost ||= missing > 0;
      console.log(`${rounds > 1 ? `round ${r.round} ` : ""}${r.target}: ${r.accepted} x 202, ${r.rows} rows written, ${r.cutOff} requests cut off at the end -> ${missing > 0 ? `${missing} LOST` : "nothing lost"}${r.rows - r.accepted > r.cutOff ? " (more extra rows than cut-off requests!)" : ""}`);
    }
    if (a["cpu-prof"]) console.log(`\nCPU profiles of the server children (the largest file per target is the main thread): ${PROFILE_DIR}/<target>/`);
    if (lost) process.exitCode = 1;
  } finally {
    await db.close();
    await scratch.drop();
  }
}

if (process.argv.includes("--child")) runChild();
else await main();
