// `npm run bench`: one command that starts what it needs and measures sealpost against the
// goals of issue 10, each figure next to a reference measured in the same run:
//
//   ceiling-a  bare Fastify HTTPS + sealpost's request schema (zod) + one pg INSERT (child process)
//   accept     POST /send on a real `serve` process: req/s, p50, p99 vs ceiling A
//   ceiling-b  nodemailer's SMTP pool (STARTTLS required, verified) to the sink, N messages
//   drain      N messages accepted with no worker running, then a real `worker` process: msg/s vs B
//   burst      serve + worker running, 3,000 POST /send until the sink holds them all
//   postfix    the same burst through a private Postfix with TLS connection reuse (when installed)
//   fair       serve + worker running, key A queues 10,000; then key B sends one message and
//              key A one "priority": "high": how long each waits (issue 14's fair-queue bound)
//   scale      accept rate and claim latency with 1,000,000 finished messages stored vs empty
//   (memory)   peak RSS (VmHWM) of every serve and worker process of the run
//
//   npm run bench -- [--quick] [--only accept,drain,...] [--rows N] [--messages N] [--burst N]
//                    [--duration S] [--connections N]
//   BENCH_NODE_OPTIONS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -- --only drain
//                    passes NODE_OPTIONS to the serve and worker processes only (profiles)
//
// Everything runs on loopback: a private Postgres cluster (initdb; fsync, synchronous_commit
// and full_page_writes on, as in production) so its CPU can be counted apart from the shared
// one, a STARTTLS sink with a fake DNS in a child process (certificate from a private CA the
// worker trusts through SMTP_CA_FILE), and sealpost as `node src/cli.ts serve|worker`
// processes whose logs go to bench-results/bench-<timestamp>/. The load generators run in
// this process. Prints one table and writes bench-results/bench-<timestamp>.json.
// Needs the Postgres 15 binaries (PG_BIN) and, as root, the `postgres` user (as the fault suite).
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import nodemailer from "nodemailer";
import pg from "pg";
import { loadConfig } from "../src/config.ts";
import { claimDeliveries, returnUnstarted } from "../src/db/deliveries.ts";
import { openDatabase } from "../src/db/client.ts";
import { migrate } from "../src/db/migrate.ts";
import { createApiKey } from "../src/services/api-keys.ts";
import { createCa, issueCertificate } from "../src/tls/certificates.ts";
import { freePort } from "../test/helpers/cli-process.ts";
import { createPrivateCluster, type PrivateCluster } from "../test/helpers/pg-cluster.ts";
import { spawnSealpost, type SealpostProcess } from "../test/helpers/sealpost-process.ts";
import { waitFor } from "../test/helpers/wait.ts";
import {
  autocannon, CEILING_COUNT_SQL, CEILING_SCRATCH_SQL, idleShare, peakRssMb, processCpuMs, processTreeCpuMs, RESET_BODY,
  settledCount, startCeilingChild, startSink, type LoadResult, type SinkChild,
} from "./bench-common.ts";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const exec = promisify(execFile);
const PHASES = ["ceiling-a", "accept", "ceiling-b", "drain", "burst", "postfix", "fair", "scale"] as const;
type Phase = (typeof PHASES)[number];

const DOMAIN = "example.com";
const MX_HOST = "mx.example.test";
const ZONE = { [DOMAIN]: { MX: [{ preference: 10, exchange: MX_HOST }] }, [MX_HOST]: { A: ["127.0.0.1"] } };
// Production durability: every commit waits for its WAL flush.
const PG_SETTINGS = { fsync: "on", synchronous_commit: "on", full_page_writes: "on", max_connections: "200" };

// ---------------------------------------------------------------- options

function options() {
  const { values: a } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      rows: { type: "string" },
      messages: { type: "string" },
      burst: { type: "string" },
      "fair-burst": { type: "string" },
      duration: { type: "string" },
      connections: { type: "string", default: "50" },
      help: { type: "boolean", default: false },
    },
  });
  if (a.help) {
    console.log("npm run bench -- [--quick] [--only " + PHASES.join(",") + "] [--rows N] [--messages N] [--burst N] [--fair-burst N] [--duration S] [--connections N]");
    process.exit(0);
  }
  const whole = (name: string, v: string | undefined, fallback: number) => {
    if (v === undefined) return fallback;
    if (!/^\d+$/.test(v) || Number(v) < 1) {
      console.error(`bench: --${name} must be a whole number above 0, not ${JSON.stringify(v)}`);
      process.exit(2);
    }
    return Number(v);
  };
  const only = a.only?.split(",").map((s) => s.trim()).filter(Boolean);
  for (const p of only ?? []) {
    if (!(PHASES as readonly string[]).includes(p)) {
      console.error(`bench: --only takes phases out of ${PHASES.join(",")}; ${JSON.stringify(p)} is not one`);
      process.exit(2);
    }
  }
  const q = a.quick;
  return {
    quick: q,
    phases: new Set<Phase>((only as Phase[] | undefined) ?? PHASES),
    duration: whole("duration", a.duration, q ? 4 : 10),
    warmup: q ? 1 : 2,
    connections: whole("connections", a.connections, 50),
    messages: whole("messages", a.messages, q ? 1000 : 5000),
    burst: whole("burst", a.burst, q ? 500 : 3000),
    fairBurst: whole("fair-burst", a["fair-burst"], q ? 2000 : 10_000),
    rows: whole("rows", a.rows, q ? 20_000 : 1_000_000),
    queued: q ? 2000 : 10_000,
    scaleDuration: q ? 3 : 5,
    claimProbes: q ? 50 : 200,
  };
}
type Options = ReturnType<typeof options>;

// ---------------------------------------------------------------- the run's context

interface Ctx {
  o: Options;
  cluster: PrivateCluster;
  postmasterPid: number;
  dir: string;
  logDir: string;
  ca: { cert: string; key: string };
  caFile: string;
  certFile: string;
  keyFile: string;
  dataKey: string;
  apiKey: string;
  sink: SinkChild;
  worker: { concurrency: number; batch: number; claimLeaseMs: number };
  procs: Set<SealpostProcess>;
  rss: { serve: number; worker: number };
}

const pgCpu = (c: Ctx) => processTreeCpuMs(c.postmasterPid);
const ownCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function freshDatabase(c: Ctx, name: string): Promise<{ name: string; url: string; pool: pg.Pool }> {
  await c.cluster.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await c.cluster.query(`CREATE DATABASE ${name} TEMPLATE bench_template`);
  const pool = new pg.Pool({ connectionString: c.cluster.url(name), max: 4 });
  pool.on("error", () => {});
  return { name, url: c.cluster.url(name), pool };
}

function common(c: Ctx, db: string, name: string): Record<string, string> {
  return {
    NODE_ENV: "production",
    LOG_LEVEL: "info",
    DATABASE_URL: `${c.cluster.url(db)}?application_name=${name}`,
    SEALPOST_DATA_KEY: c.dataKey,
    MIGRATE_ON_START: "false",
    // The benchmark sends from a domain it does not verify (DKIM signing is not what it measures).
    SENDER_DOMAINS: "any",
  };
}

async function startServe(c: Ctx, db: string, name: string): Promise<{ proc: SealpostProcess; port: number }> {
  const port = await freePort();
  const proc = spawnSealpost("serve", {
    ...common(c, db, name),
    HOST: "127.0.0.1",
    PORT: String(port),
    TLS_CERT_FILE: c.certFile,
    TLS_KEY_FILE: c.keyFile,
    // One client, one key: the load generator must measure the send path, not 429s.
    RATE_LIMIT_IP_MAX: "10000000",
    RATE_LIMIT_KEY_MAX: "10000000",
  }, { name, logDir: c.logDir });
  c.procs.add(proc);
  await proc.waitForLine(/API listening/, 60_000);
  return { proc, port };
}

async function startWorker(c: Ctx, db: { name: string; pool: pg.Pool }, name: string): Promise<SealpostProcess> {
  const proc = spawnSealpost("worker", {
    ...common(c, db.name, name),
    WORKER_ID: name,
    WORKER_POLL_MS: "100",
    SMTP_TLS_POLICY: "required",
    SMTP_CA_FILE: c.caFile,
    SMTP_HELO_NAME: "bench.sealpost.test",
    DNS_SERVERS: c.sink.dns,
    SMTP_MX_PORT: String(c.sink.port),
  }, { name, logDir: c.logDir });
  c.procs.add(proc);
  await waitFor(async () => {
    if (!proc.running()) throw new Error(`worker ${name} exited:\n${proc.tail(5)}`);
    const r = await db.pool.query("SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND datname = $2", [name, db.name]);
    return r.rowCount! > 0;
  }, { timeoutMs: 60_000, intervalMs: 20, what: `worker ${name} to connect` });
  return proc;
}

/** SIGTERM, after noting the process's peak RSS. */
async function stop(c: Ctx, p: SealpostProcess): Promise<void> {
  const rss = p.child.pid ? peakRssMb(p.child.pid) : null;
  if (rss !== null) c.rss[p.command === "worker" ? "worker" : "serve"] = Math.max(c.rss[p.command === "worker" ? "worker" : "serve"], rss);
  await p.terminate();
  c.procs.delete(p);
}

function receipt(i: number) {
  return { ...RESET_BODY, to: `user${i}@${DOMAIN}`, metadata: { ...RESET_BODY.metadata, n: String(i) } };
}

/** `n` POST /send over `conns` keep-alive connections (verified TLS); the ids of the 202s. */
async function sendMany(c: Ctx, port: number, n: number, conns: number, apiKey = c.apiKey, body: (i: number) => unknown = receipt,
): Promise<{ ids: string[]; failed: Record<string, number>; ms: number }> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: conns, ca: c.ca.cert });
  const ids: string[] = [];
  const failed: Record<string, number> = {};
  let next = 0;
  const t0 = performance.now();
  const post = (body: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path: "/send", method: "POST", agent, timeout: 60_000,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), authorization: `Bearer ${apiKey}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (b: Buffer) => chunks.push(b));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("request timed out")));
    req.on("error", reject);
    req.end(body);
  });
  await Promise.all(Array.from({ length: conns }, async () => {
    while (next < n) {
      const i = next++;
      try {
        const r = await post(JSON.stringify(body(i)));
        if (r.status === 202) ids.push((JSON.parse(r.body) as { id: string }).id);
        else failed[String(r.status)] = (failed[String(r.status)] ?? 0) + 1;
      } catch (err) {
        const k = (err as { code?: string }).code ?? "error";
        failed[k] = (failed[k] ?? 0) + 1;
      }
    }
  }));
  agent.destroy();
  return { ids, failed, ms: performance.now() - t0 };
}

/** Polls until the sink holds `target` messages (or the deadline passes); the time it first did. */
async function sinkReaches(c: Ctx, target: number, timeoutMs: number): Promise<number | null> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const s = await c.sink.stats();
    if (s.messages >= target) return performance.now();
    if (performance.now() > deadline) return null;
    await new Promise((r) => setTimeout(r, 10)); // poll interval of a deadline-bounded wait
  }
}

// ---------------------------------------------------------------- checks

interface Check { name: string; ok: boolean; detail: string }

/** Every delivered recipient has a delivered attempt over TLS, verified where the policy is required. */
async function evidenceCheck(pool: pg.Pool, label: string): Promise<Check> {
  const r = (await pool.query<{ delivered: string; missing: string }>(
    `SELECT count(*) AS delivered,
            count(*) FILTER (WHERE NOT EXISTS (
              SELECT 1 FROM delivery_attempts a
               WHERE a.recipient_id = r.id AND a.outcome = 'delivered' AND a.tls
                 AND (m.tls_policy <> 'required' OR a.verified))) AS missing
       FROM recipients r JOIN messages m ON m.id = r.message_id
      WHERE r.status = 'delivered'`)).rows[0]!;
  return { name: `${label}: evidence`, ok: Number(r.missing) === 0 && Number(r.delivered) > 0,
    detail: `${r.delivered} delivered recipients, ${r.missing} without a delivered attempt over TLS (verified for policy required)` };
}

/** Nothing accepted is lost: 202 ids == rows == delivered, and the sink holds as many. */
async function lossCheck(pool: pg.Pool, label: string, ids: string[], sinkGot: number): Promise<Check> {
  const r = (await pool.query<{ rows: string; delivered: string }>(
    `SELECT count(*) AS rows, count(*) FILTER (WHERE r.status = 'delivered') AS delivered
       FROM unnest($1::uuid[]) AS i(id) JOIN messages m ON m.id = i.id JOIN recipients r ON r.message_id = m.id`, [ids])).rows[0]!;
  const total = Number((await pool.query<{ n: string }>("SELECT count(*) AS n FROM messages")).rows[0]!.n);
  const ok = Number(r.rows) === ids.length && Number(r.delivered) === ids.length && total === ids.length && sinkGot === ids.length;
  return { name: `${label}: nothing lost`, ok,
    detail: `${ids.length} x 202, ${r.rows} of their rows (${total} messages in all), ${r.delivered} delivered, sink received ${sinkGot}` };
}

// ---------------------------------------------------------------- phases

interface LoadFigures { rps: number; p50: number; p99: number; accepted: number; rows: number; other: string; cpuMsPerReq: { server: number; postgres: number } }

async function load(c: Ctx, port: number, pid: number, pool: pg.Pool, countSql: string, seconds: number, warmup: number): Promise<LoadFigures> {
  const url = `https://127.0.0.1:${port}/send`;
  const headers = { "content-type": "application/json", authorization: `Bearer ${c.apiKey}` };
  const body = JSON.stringify(RESET_BODY);
  // autocannon does not verify the server (it sets rejectUnauthorized: false itself): one
  // verified request first proves the listener, the load generator then only measures.
  const pre = await new Promise<number>((resolve, reject) => {
    const req = https.request(url, { method: "POST", headers: { ...headers, "content-length": Buffer.byteLength(body) }, ca: c.ca.cert }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(body);
  });
  if (pre !== 202) throw new Error(`preflight POST /send answered ${pre}`);
  const run = (s: number) => autocannon({ url, method: "POST", headers, body, duration: s, connections: c.o.connections, tlsOptions: { ca: [c.ca.cert] } });
  if (warmup > 0) await run(warmup);
  const before = await settledCount(pool, countSql);
  const cpu0 = { server: processCpuMs(pid), postgres: pgCpu(c) };
  const r: LoadResult = await run(seconds);
  const cpu1 = { server: processCpuMs(pid), postgres: pgCpu(c) };
  const rows = (await settledCount(pool, countSql)) - before;
  const per = (k: keyof typeof cpu0) => (cpu1[k] - cpu0[k]) / Math.max(1, r.requests.total);
  return {
    rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99,
    accepted: r.statusCodeStats["202"]?.count ?? 0, rows,
    other: Object.entries(r.statusCodeStats).filter(([k]) => k !== "202").map(([k, v]) => `${k}:${v.count}`).join(" ") + (r.errors + r.timeouts > 0 ? ` errors:${r.errors + r.timeouts}` : ""),
    cpuMsPerReq: { server: per("server"), postgres: per("postgres") },
  };
}

async function ceilingA(c: Ctx): Promise<LoadFigures> {
  const db = await freshDatabase(c, "bench_ceiling");
  await db.pool.query(CEILING_SCRATCH_SQL);
  const server = await startCeilingChild(db.url, { cert: readFileSync(c.certFile, "utf8"), key: readFileSync(c.keyFile, "utf8") });
  try {
    return await load(c, server.port, server.child.pid!, db.pool, CEILING_COUNT_SQL, c.o.duration, c.o.warmup);
  } finally {
    await server.stop();
    await db.pool.end();
  }
}

async function accept(c: Ctx, checks: Check[]): Promise<LoadFigures> {
  const db = await freshDatabase(c, "bench_accept");
  const { proc, port } = await startServe(c, db.name, "accept-serve");
  try {
    const f = await load(c, port, proc.child.pid!, db.pool, "SELECT count(*) AS n FROM messages", c.o.duration, c.o.warmup);
    checks.push({ name: "accept: nothing lost", ok: f.rows >= f.accepted,
      detail: `${f.accepted} x 202 in the measured run, ${f.rows} rows written (requests cut off at the end may add rows, never remove them)` });
    return f;
  } finally {
    await stop(c, proc);
    await db.pool.end();
  }
}

function composed(i: number) {
  const b = receipt(i);
  return { from: b.from, to: b.to, replyTo: b.reply_to, subject: b.subject, text: b.text, html: b.html, headers: b.headers };
}

async function ceilingB(c: Ctx, checks: Check[]): Promise<{ rate: number; seconds: number; clientCpuMsPerMsg: number; sinkCpuMsPerMsg: number }> {
  const n = c.o.messages;
  const transport = nodemailer.createTransport({
    host: "127.0.0.1", port: c.sink.port, pool: true, maxConnections: c.worker.concurrency, maxMessages: Infinity,
    requireTLS: true, name: "bench.sealpost.test",
    tls: { ca: [c.ca.cert], servername: MX_HOST, rejectUnauthorized: true, minVersion: "TLSv1.2" },
  });
  const s0 = await c.sink.stats();
  const cpu0 = ownCpuMs();
  const t0 = performance.now();
  let failed = 0;
  await Promise.all(Array.from({ length: n }, (_, i) => transport.sendMail(composed(i)).catch(() => void failed++)));
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = ownCpuMs();
  transport.close();
  const s1 = await c.sink.stats();
  const got = s1.messages - s0.messages;
  checks.push({ name: "ceiling-b: all sent over TLS", ok: failed === 0 && got === n && s1.cleartextMail === s0.cleartextMail,
    detail: `${got}/${n} at the sink, ${failed} failed, ${s1.tlsSessions - s0.tlsSessions} STARTTLS sessions` });
  return { rate: got / seconds, seconds, clientCpuMsPerMsg: (cpu1 - cpu0) / n, sinkCpuMsPerMsg: (s1.cpuMs - s0.cpuMs) / n };
}

interface DrainFigures { rate: number; seconds: number; delivered: number; cpuMsPerMsg: { worker: number; postgres: number; sink: number }; queuedPerSecond: number; sessions: number }

async function drain(c: Ctx, checks: Check[]): Promise<DrainFigures> {
  const n = c.o.messages;
  const db = await freshDatabase(c, "bench_drain");
  try {
    const api = await startServe(c, db.name, "drain-serve");
    const sent = await sendMany(c, api.port, n, 32);
    await stop(c, api.proc);
    if (sent.ids.length !== n) throw new Error(`drain: only ${sent.ids.length}/${n} accepted (${JSON.stringify(sent.failed)})`);
    await db.pool.query("CHECKPOINT"); // the queuing's dirty pages are not the drain's cost
    const s0 = await c.sink.stats();
    const w = await startWorker(c, db, "drain-worker");
    const pid = w.child.pid!;
    // From the first claim: the process start-up (loading modules) is not the drain.
    await waitFor(async () => (await db.pool.query("SELECT 1 FROM deliveries WHERE attempts > 0 LIMIT 1")).rowCount! > 0,
      { timeoutMs: 60_000, intervalMs: 5, what: "the worker's first claim" });
    const t0 = performance.now();
    const cpu0 = { worker: processCpuMs(pid), postgres: pgCpu(c) };
    const tSink = await sinkReaches(c, s0.messages + n, 60_000 + n * 20);
    let t1 = tSink;
    if (tSink !== null) {
      await waitFor(async () => Number((await db.pool.query<{ n: string }>("SELECT count(*) AS n FROM recipients WHERE status = 'delivered'")).rows[0]!.n) >= n,
        { timeoutMs: 30_000, intervalMs: 10, what: "every recipient delivered" }).catch(() => undefined);
      t1 = performance.now();
    }
    const cpu1 = { worker: processCpuMs(pid), postgres: pgCpu(c) };
    const s1 = await c.sink.stats();
    await stop(c, w);
    const delivered = Number((await db.pool.query<{ n: string }>("SELECT count(*) AS n FROM recipients WHERE status = 'delivered'")).rows[0]!.n);
    const seconds = t1 === null ? NaN : (t1 - t0) / 1000;
    checks.push(await lossCheck(db.pool, "drain", sent.ids, s1.messages - s0.messages));
    checks.push(await evidenceCheck(db.pool, "drain"));
    checks.push({ name: "drain: no cleartext MAIL FROM", ok: s1.cleartextMail === s0.cleartextMail, detail: `${s1.cleartextMail - s0.cleartextMail} in cleartext` });
    const per = (ms: number) => ms / Math.max(1, delivered);
    return {
      rate: delivered / seconds, seconds, delivered, queuedPerSecond: n / (sent.ms / 1000), sessions: s1.sessions - s0.sessions,
      cpuMsPerMsg: { worker: per(cpu1.worker - cpu0.worker), postgres: per(cpu1.postgres - cpu0.postgres), sink: per(s1.cpuMs - s0.cpuMs) },
    };
  } finally {
    await db.pool.end();
  }
}

async function burst(c: Ctx, checks: Check[]): Promise<{ rate: number; seconds: number; acceptSeconds: number }> {
  const n = c.o.burst;
  const db = await freshDatabase(c, "bench_burst");
  try {
    const api = await startServe(c, db.name, "burst-serve");
    const w = await startWorker(c, db, "burst-worker");
    const s0 = await c.sink.stats();
    const t0 = performance.now();
    const sent = await sendMany(c, api.port, n, c.o.connections);
    const t1 = await sinkReaches(c, s0.messages + sent.ids.length, 60_000 + n * 20);
    const seconds = t1 === null ? NaN : (t1 - t0) / 1000;
    await waitFor(async () => Number((await db.pool.query<{ n: string }>("SELECT count(*) AS n FROM recipients WHERE status = 'delivered'")).rows[0]!.n) >= sent.ids.length,
      { timeoutMs: 30_000, intervalMs: 20, what: "every recipient delivered" }).catch(() => undefined);
    const s1 = await c.sink.stats();
    await stop(c, w);
    await stop(c, api.proc);
    checks.push({ name: "burst: every request accepted", ok: sent.ids.length === n, detail: `${sent.ids.length}/${n} x 202 ${JSON.stringify(sent.failed)}` });
    checks.push(await lossCheck(db.pool, "burst", sent.ids, s1.messages - s0.messages));
    checks.push(await evidenceCheck(db.pool, "burst"));
    return { rate: sent.ids.length / seconds, seconds, acceptSeconds: sent.ms / 1000 };
  } finally {
    await db.pool.end();
  }
}

interface FairFigures {
  burst: number; ahead: number; drainRate: number; fifoEstimateSeconds: number;
  loneSeconds: number; highSeconds: number; burstSeconds: number;
}

/**
 * Key A's burst is queued and draining; key B's one message and key A's one "high" message
 * are then sent, and each one's wait is measured from its acceptance (messages.created_at)
 * to its delivery being recorded (recipients.updated_at), both on this machine's clock. The
 * reference is what first-come first-served would give: the rows queued ahead of it at that
 * moment divided by the drain rate.
 */
async function fair(c: Ctx, checks: Check[]): Promise<FairFigures> {
  const n = c.o.fairBurst;
  const db = await freshDatabase(c, "bench_fair");
  const tdb = openDatabase({ url: db.url, poolMax: 1, statementTimeoutMs: 30_000, connectTimeoutMs: 5000 });
  try {
    const { key: keyB } = await createApiKey(tdb.prisma, { name: "bench-b", scopes: ["send"], domains: ["shop.example"] });
    const api = await startServe(c, db.name, "fair-serve");
    const w = await startWorker(c, db, "fair-worker");
    const s0 = await c.sink.stats();
    const t0 = performance.now();
    const sent = await sendMany(c, api.port, n, c.o.connections);
    // A tenth of the burst delivered: the worker is at full speed with the rest queued.
    await sinkReaches(c, s0.messages + Math.floor(n / 10), 60_000 + n * 20);
    const ahead = Number((await db.pool.query<{ n: string }>("SELECT count(*) AS n FROM deliveries WHERE state = 'pending'")).rows[0]!.n);
    const lone = await sendMany(c, api.port, 1, 1, keyB, () => ({ ...receipt(0), to: `lone@${DOMAIN}`, subject: "Your one-time code" }));
    const high = await sendMany(c, api.port, 1, 1, c.apiKey, () => ({ ...receipt(0), to: `high@${DOMAIN}`, priority: "high" }));
    const ids = [...lone.ids, ...high.ids];
    if (ids.length !== 2) throw new Error(`fair: the two single messages were not accepted (${JSON.stringify({ ...lone.failed, ...high.failed })})`);
    const waits = await waitFor(async () => {
      const r = await db.pool.query<{ id: string; s: number }>(
        `SELECT m.id::text AS id, extract(epoch FROM r.updated_at - m.created_at)::float8 AS s
           FROM messages m JOIN recipients r ON r.message_id = m.id WHERE m.id = ANY($1::uuid[]) AND r.status = 'delivered'`, [ids]);
      return r.rowCount === 2 ? new Map(r.rows.map((x) => [x.id, x.s])) : null;
    }, { timeoutMs: 60_000 + n * 20, intervalMs: 20, what: "the two single messages delivered" });
    const all = sent.ids.length + 2;
    const t1 = await sinkReaches(c, s0.messages + all, 60_000 + n * 20);
    const burstSeconds = t1 === null ? NaN : (t1 - t0) / 1000;
    await waitFor(async () => Number((await db.pool.query<{ n: string }>("SELECT count(*) AS n FROM recipients WHERE status = 'delivered'")).rows[0]!.n) >= all,
      { timeoutMs: 30_000, intervalMs: 20, what: "every recipient delivered" }).catch(() => undefined);
    const s1 = await c.sink.stats();
    await stop(c, w);
    await stop(c, api.proc);
    checks.push({ name: "fair: every request accepted", ok: sent.ids.length === n, detail: `${sent.ids.length}/${n} x 202 ${JSON.stringify(sent.failed)}` });
    checks.push(await lossCheck(db.pool, "fair", [...sent.ids, ...ids], s1.messages - s0.messages));
    const drainRate = all / burstSeconds;
    return {
      burst: n, ahead, drainRate, fifoEstimateSeconds: ahead / drainRate, burstSeconds,
      loneSeconds: waits.get(lone.ids[0]!)!, highSeconds: waits.get(high.ids[0]!)!,
    };
  } finally {
    await tdb.close();
    await db.pool.end();
  }
}

// ---------------------------------------------------------------- postfix

const POSTFIX_BIN = ["/usr/sbin/postfix", "/usr/local/sbin/postfix"].find((p) => existsSync(p));

async function postfixBurst(c: Ctx, checks: Check[]): Promise<{ rate: number; seconds: number; version: string; cpuMsPerMsg: number } | { skipped: string }> {
  if (!POSTFIX_BIN) return { skipped: "postfix: not installed (apt-get install postfix to compare)" };
  const n = c.o.burst;
  const dir = mkdtempSync(join(tmpdir(), "sp-postfix-"));
  const conf = join(dir, "conf");
  mkdirSync(conf);
  const port = await freePort();
  const pf = (...args: string[]) => exec(POSTFIX_BIN, ["-c", conf, ...args], { timeout: 60_000 });
  let started = false;
  try {
    const version = (await exec("/usr/sbin/postconf", ["-d", "-h", "mail_version"])).stdout.trim();
    // The packaged master.cf, with smtpd on a loopback port of our own and nothing chrooted
    // (a chroot would need copies of /etc files inside the temporary queue directory).
    const master = readFileSync("/etc/postfix/master.cf", "utf8").split("\n").map((l) => {
      if (/^\s|^#|^$/.test(l)) return l;
      const f = l.split(/\s+/);
      if (f.length < 8) return l;
      if (f[0] === "smtp" && f[1] === "inet") f[0] = `127.0.0.1:${port}`;
      f[4] = "n";
      return f.join(" ");
    }).join("\n");
    // TLS connection reuse goes through tlsproxy, which Debian's master.cf leaves commented out.
    const tlsproxy = /^tlsproxy\s/m.test(master) ? "" : "tlsproxy unix - - n - 0 tlsproxy\n";
    writeFileSync(join(conf, "master.cf"), `${master}\n${tlsproxy}`);
    writeFileSync(join(conf, "main.cf"), [
      "compatibility_level = 3.6",
      `queue_directory = ${join(dir, "queue")}`,
      `data_directory = ${join(dir, "data")}`,
      `maillog_file = ${join(dir, "postfix.log")}`,
      `maillog_file_prefixes = ${dir}`,
      "mail_owner = postfix",
      "setgid_group = postdrop",
      "myhostname = postfix-bench.sealpost.test",
      "mydestination =",
      "local_recipient_maps =",
      "alias_maps =",
      "alias_database =",
      "inet_interfaces = 127.0.0.1",
      "inet_protocols = ipv4",
      "mynetworks = 127.0.0.0/8",
      "smtpd_relay_restrictions = permit_mynetworks, reject",
      "smtputf8_enable = no",
      "smtp_dns_support_level = disabled",
      `relayhost = [127.0.0.1]:${c.sink.port}`,
      "smtp_tls_security_level = may",
      "smtp_tls_connection_reuse = yes",
      `smtp_tls_CAfile = ${c.caFile}`,
      `smtp_helo_name = postfix-bench.sealpost.test`,
      `default_destination_concurrency_limit = ${c.worker.concurrency}`,
      "",
    ].join("\n"));
    // Postfix's daemons run as the mail owner: they must reach the queue and own the data directory.
    for (const d of ["queue", "data"]) mkdirSync(join(dir, d));
    chmodSync(dir, 0o755);
    const owner = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith("postfix:"))?.split(":");
    if (owner) chownSync(join(dir, "data"), Number(owner[2]), Number(owner[3]));
    await pf("check").catch(() => undefined); // creates the queue's subdirectories
    await pf("start");
    started = true;
    const masterPid = Number(readFileSync(join(dir, "queue", "pid", "master.pid"), "utf8").trim());
    await waitFor(async () => {
      const probe = nodemailer.createTransport({ host: "127.0.0.1", port, ignoreTLS: true });
      try {
        return await probe.verify();
      } finally {
        probe.close();
      }
    }, { timeoutMs: 30_000, intervalMs: 100, what: "postfix smtpd to answer" });
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port, pool: true, maxConnections: 10, maxMessages: Infinity, ignoreTLS: true, name: "bench.sealpost.test" });
    const s0 = await c.sink.stats();
    const cpu0 = processTreeCpuMs(masterPid);
    const t0 = performance.now();
    let failed = 0;
    await Promise.all(Array.from({ length: n }, (_, i) => transport.sendMail(composed(i)).catch(() => void failed++)));
    transport.close();
    const t1 = await sinkReaches(c, s0.messages + n - failed, 60_000 + n * 20);
    const cpu1 = processTreeCpuMs(masterPid);
    const s1 = await c.sink.stats();
    const got = s1.messages - s0.messages;
    checks.push({ name: "postfix: all relayed over TLS", ok: failed === 0 && got === n && s1.cleartextMail === s0.cleartextMail,
      detail: `${got}/${n} at the sink, ${failed} refused at injection, ${s1.sessions - s0.sessions} sessions (${s1.tlsSessions - s0.tlsSessions} STARTTLS)` });
    const seconds = t1 === null ? NaN : (t1 - t0) / 1000;
    return { rate: got / seconds, seconds, version, cpuMsPerMsg: (cpu1 - cpu0) / Math.max(1, got) };
  } catch (err) {
    // Postfix reports to syslog or its maillog_file, not to a pipe: the log's last fatal line says why.
    const log = existsSync(join(dir, "postfix.log")) ? readFileSync(join(dir, "postfix.log"), "utf8").split("\n").filter((l) => /fatal|error/.test(l)).pop() : undefined;
    return { skipped: `postfix: could not run (${(log ?? String((err as Error).message).split("\n")[0])!.trim()})` };
  } finally {
    if (started) await pf("stop").catch(() => pf("abort").catch(() => undefined));
    if (existsSync(join(dir, "postfix.log"))) copyFileSync(join(dir, "postfix.log"), join(c.logDir, "postfix.log"));
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- scale

/**
 * Copies the message `templateId` (its row, delivery, recipient and attempt) `count` times
 * with set-based SQL: every column comes from the template row (so columns added by later
 * migrations keep their real values), with new ids and the overrides given per row.
 */
async function copyMessages(pool: pg.Pool, templateId: string, count: number, tag: string, finished: boolean): Promise<Record<string, number>> {
  const took: Record<string, number> = {};
  let t = performance.now();
  const lap = (name: string) => {
    took[name] = Math.round(performance.now() - t);
    t = performance.now();
  };
  const base = async (t: string) => Number((await pool.query<{ n: string }>(`SELECT coalesce(max(id), 0) AS n FROM ${t}`)).rows[0]!.n) + 1;
  const [d0, r0, a0] = [await base("deliveries"), await base("recipients"), await base("delivery_attempts")];
  // Finished rows are spread over the last 30 days; their content is purged, as retention does.
  const age = finished ? `make_interval(secs => g.i * ${(30 * 86_400) / count})` : "interval '0'";
  const mid = `md5('${tag}' || g.i)::uuid`;
  const msgOverrides = finished
    ? `'created_at', t.created_at - ${age}, 'updated_at', t.updated_at - ${age}, 'finished_at', t.finished_at - ${age},
       'content_purged_at', t.finished_at - ${age}, 'subject', null, 'text_body', null, 'html_body', null, 'headers', null, 'attachments', null`
    : "'updated_at', t.updated_at";
  await pool.query(`INSERT INTO messages SELECT r.* FROM messages t CROSS JOIN generate_series(1, $2::int) g(i)
    CROSS JOIN LATERAL jsonb_populate_record(t, jsonb_build_object('id', ${mid}, 'message_id_header', '<bench-${tag}-' || g.i || '@shop.example>', ${msgOverrides})) r
    WHERE t.id = $1`, [templateId, count]);
  lap("messages");
  await pool.query(`INSERT INTO deliveries SELECT r.* FROM deliveries t CROSS JOIN generate_series(1, $2::int) g(i)
    CROSS JOIN LATERAL jsonb_populate_record(t, jsonb_build_object('id', $3::bigint + g.i, 'message_id', ${mid},
      'created_at', t.created_at - ${age}, 'next_attempt_at', t.next_attempt_at - ${age})) r
    WHERE t.message_id = $1`, [templateId, count, d0]);
  lap("deliveries");
  await pool.query(`INSERT INTO recipients SELECT r.* FROM recipients t CROSS JOIN generate_series(1, $2::int) g(i)
    CROSS JOIN LATERAL jsonb_populate_record(t, jsonb_build_object('id', $3::bigint + g.i, 'message_id', ${mid}, 'delivery_id', $4::bigint + g.i,
      'address', 'user' || g.i || '@${DOMAIN}', 'updated_at', t.updated_at - ${age})) r
    WHERE t.message_id = $1`, [templateId, count, r0, d0]);
  lap("recipients");
  if (finished) {
    await pool.query(`INSERT INTO delivery_attempts SELECT r.* FROM delivery_attempts t CROSS JOIN generate_series(1, $2::int) g(i)
      CROSS JOIN LATERAL jsonb_populate_record(t, jsonb_build_object('id', $3::bigint + g.i, 'message_id', ${mid}, 'recipient_id', $4::bigint + g.i,
        'started_at', t.started_at - ${age})) r
      WHERE t.message_id = $1`, [templateId, count, a0, r0]);
    lap("delivery_attempts");
  }
  for (const t of ["deliveries", "recipients", "delivery_attempts"]) {
    await pool.query(`SELECT setval(pg_get_serial_sequence('${t}', 'id'), (SELECT max(id) FROM ${t}))`);
  }
  return took;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

async function claimLatency(c: Ctx, url: string): Promise<{ p50: number; p99: number; claimed: number }> {
  // A pool like the worker's; the probe's rows go back untouched after every claim.
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  const times: number[] = [];
  let claimed = 0;
  try {
    for (let i = 0; i < c.o.claimProbes; i++) {
      const t0 = performance.now();
      const got = await claimDeliveries(pool, "bench-claim-probe", c.worker.batch, { claimLeaseMs: c.worker.claimLeaseMs, leaseMs: c.worker.claimLeaseMs, startNow: 0 });
      times.push(performance.now() - t0);
      claimed += got.length;
      await returnUnstarted(pool, "bench-claim-probe", got);
    }
  } finally {
    await pool.end();
  }
  return { p50: pct(times, 50), p99: pct(times, 99), claimed: claimed / c.o.claimProbes };
}

interface ScaleFigures {
  empty: { rps: number; p99: number; claimP50: number; claimP99: number };
  full: { rps: number; p99: number; claimP50: number; claimP99: number };
  rows: number; queued: number; populateSeconds: number; populateMs: Record<string, number>; tableMb: number;
}

async function scale(c: Ctx, checks: Check[]): Promise<ScaleFigures> {
  const db = await freshDatabase(c, "bench_scale");
  try {
    // Two real templates: one message delivered by a real worker, one queued.
    const api = await startServe(c, db.name, "scale-serve");
    const w = await startWorker(c, db, "scale-worker");
    const one = await sendMany(c, api.port, 1, 1);
    await waitFor(async () => (await db.pool.query("SELECT 1 FROM messages WHERE id = $1 AND finished_at IS NOT NULL", [one.ids[0]])).rowCount! > 0,
      { timeoutMs: 30_000, what: "the template message to be delivered" });
    await stop(c, w);
    const two = await sendMany(c, api.port, 1, 1);
    if (!one.ids[0] || !two.ids[0]) throw new Error("scale: the template messages were not accepted");
    await copyMessages(db.pool, two.ids[0], c.o.queued, "q", false);
    const measure = async () => {
      await db.pool.query("VACUUM ANALYZE");
      await db.pool.query("CHECKPOINT");
      const f = await load(c, api.port, api.proc.child.pid!, db.pool, "SELECT count(*) AS n FROM messages", c.o.scaleDuration, 1);
      const cl = await claimLatency(c, db.url);
      if (cl.claimed < 1) throw new Error("scale: the claim found nothing due");
      return { rps: f.rps, p99: f.p99, claimP50: cl.p50, claimP99: cl.p99 };
    };
    const empty = await measure();
    const t0 = performance.now();
    const populateMs = await copyMessages(db.pool, one.ids[0], c.o.rows, "f", true);
    const populateSeconds = (performance.now() - t0) / 1000;
    const full = await measure();
    await stop(c, api.proc);
    const counts = (await db.pool.query<{ finished: string; attempts: string; mb: string }>(
      `SELECT (SELECT count(*) FROM messages WHERE finished_at IS NOT NULL) AS finished, (SELECT count(*) FROM delivery_attempts) AS attempts,
              pg_database_size(current_database()) / 1048576 AS mb`)).rows[0]!;
    checks.push({ name: "scale: rows stored", ok: Number(counts.finished) >= c.o.rows && Number(counts.attempts) >= c.o.rows,
      detail: `${counts.finished} finished messages, ${counts.attempts} attempts, database ${counts.mb} MB` });
    return { empty, full, rows: c.o.rows, queued: c.o.queued, populateSeconds, populateMs, tableMb: Number(counts.mb) };
  } finally {
    await db.pool.end();
  }
}

// ---------------------------------------------------------------- report

interface Row { figure: string; sealpost: string; reference: string; ratio: string; goal: string; met: string }

const f0 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : n.toFixed(0));
const f1 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : n.toFixed(1));
const f2 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : n.toFixed(2));
const f3 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : n.toFixed(3));

function ratioRow(figure: string, sp: number | undefined, ref: number | undefined, fmt: (n: number | undefined) => string, goal: string, test: (r: number) => boolean, refLabel = ""): Row {
  const r = sp !== undefined && ref !== undefined ? sp / ref : undefined;
  return {
    figure, sealpost: fmt(sp), reference: ref === undefined ? refLabel || "-" : `${refLabel}${fmt(ref)}`,
    ratio: f2(r), goal, met: goal === "-" || r === undefined || !Number.isFinite(r) ? "-" : test(r) ? "yes" : "NO",
  };
}

function table(rows: Row[]): string {
  const head: Row = { figure: "figure", sealpost: "sealpost", reference: "reference", ratio: "ratio", goal: "goal", met: "met?" };
  const keys = Object.keys(head) as (keyof Row)[];
  const w = keys.map((k) => Math.max(...[head, ...rows].map((r) => r[k].length)));
  const line = (r: Row) => `| ${keys.map((k, i) => (i === 0 ? r[k].padEnd(w[i]!) : r[k].padStart(w[i]!))).join(" | ")} |`;
  return [line(head), `|${w.map((n, i) => (i === 0 ? ":" : "") + "-".repeat(n + 1) + (i === 0 ? "" : ":")).join("|")}|`, ...rows.map(line)].join("\n");
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = options();
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const resultsDir = join(REPO, "bench-results");
  const logDir = join(resultsDir, `bench-${stamp}`);
  mkdirSync(logDir, { recursive: true });
  const idle = await idleShare();
  console.log(`bench: ${o.quick ? "quick run" : "full run"}, phases ${[...o.phases].join(",")}; process logs in ${logDir}`);

  const dir = mkdtempSync(join(tmpdir(), "sp-bench-"));
  const ca = createCa("sealpost bench CA");
  const api = issueCertificate({ names: ["localhost", "127.0.0.1"], ca });
  const files = { caFile: join(dir, "ca.crt"), certFile: join(dir, "api.crt"), keyFile: join(dir, "api.key") };
  writeFileSync(files.caFile, ca.cert);
  writeFileSync(files.certFile, api.cert);
  writeFileSync(files.keyFile, api.key, { mode: 0o600 });

  let cluster: PrivateCluster | null = null;
  let sink: SinkChild | null = null;
  const procs = new Set<SealpostProcess>();
  const cleanup = async () => {
    for (const p of procs) await p.kill().catch(() => undefined);
    await sink?.stop().catch(() => undefined);
    await cluster?.destroy().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));

  const checks: Check[] = [];
  const results: Record<string, unknown> = {};
  try {
    cluster = await createPrivateCluster({ settings: PG_SETTINGS });
    const postmasterPid = Number(readFileSync(join(cluster.dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
    const pgInfo = (await cluster.query<{ v: string; f: string; s: string; p: string; b: string }>(
      `SELECT current_setting('server_version') AS v, current_setting('fsync') AS f, current_setting('synchronous_commit') AS s,
              current_setting('full_page_writes') AS p, current_setting('shared_buffers') AS b`)).rows[0]!;
    await cluster.query("CREATE DATABASE bench_template");
    await migrate(cluster.url("bench_template"));
    const dataKey = randomBytes(32).toString("base64");
    const tdb = openDatabase({ url: cluster.url("bench_template"), poolMax: 2, statementTimeoutMs: 30_000, connectTimeoutMs: 5000 });
    const { key: apiKey } = await createApiKey(tdb.prisma, { name: "bench", scopes: ["send"], domains: ["shop.example"] });
    await tdb.close();
    sink = await startSink(issueCertificate({ names: [MX_HOST, "127.0.0.1"], ca }), ZONE, MX_HOST);
    // The worker's own defaults for what the references mirror (nodemailer's pool size, Postfix's concurrency).
    let worker = { concurrency: 8, batch: 50, claimLeaseMs: 15_000 };
    try {
      const wc = loadConfig({ NODE_ENV: "production", DATABASE_URL: cluster.url("bench_template"), SEALPOST_DATA_KEY: dataKey }) as Record<string, unknown>;
      worker = {
        concurrency: Number(wc.WORKER_CONCURRENCY ?? 8) || 8,
        batch: Number(wc.WORKER_BATCH_SIZE ?? 50) || 50,
        claimLeaseMs: Number(wc.WORKER_CLAIM_LEASE_MS ?? wc.WORKER_LEASE_MS ?? 15_000) || 15_000,
      };
    } catch {
      // keep the fallbacks
    }
    const c: Ctx = { o, cluster, postmasterPid, dir, logDir, ca, ...files, dataKey, apiKey, sink, worker, procs, rss: { serve: 0, worker: 0 } };

    const machine = {
      cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, node: process.version, postgres: pgInfo.v,
      postgresSettings: `fsync=${pgInfo.f} synchronous_commit=${pgInfo.s} full_page_writes=${pgInfo.p} shared_buffers=${pgInfo.b}`,
      idleAtStart: Math.round(idle * 100) / 100,
    };
    results.machine = machine;
    results.options = { ...o, phases: [...o.phases] };
    results.worker = worker;
    console.log(`machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, PostgreSQL ${machine.postgres} (private cluster: ${machine.postgresSettings})`);
    console.log(`idle CPU before start: ${(idle * 100).toFixed(0)}%${idle < 0.85 ? " (WARNING: other work is running, figures will be low)" : ""}`);
    console.log(`sealpost: serve and worker processes, NODE_ENV=production LOG_LEVEL=info (logs to files), rate limits raised, SMTP_TLS_POLICY=required; ` +
      `worker defaults: concurrency ${worker.concurrency}, batch ${worker.batch}`);
    console.log(`sink: smtp-server on 127.0.0.1:${sink.port} in its own process (STARTTLS, certificate for ${MX_HOST} from the run's CA), fake DNS ${sink.dns}`);

    const step = async <T>(p: Phase, what: string, fn: () => Promise<T>): Promise<T | undefined> => {
      if (!o.phases.has(p)) return undefined;
      process.stdout.write(`- ${p}: ${what} ... `);
      const t0 = performance.now();
      try {
        const r = await fn();
        results[p] = r;
        console.log(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        return r;
      } catch (err) {
        console.log(`FAILED: ${(err as Error).message.split("\n")[0]}`);
        checks.push({ name: `${p}: ran`, ok: false, detail: (err as Error).message.split("\n")[0]! });
        return undefined;
      }
    };

    const A = await step("ceiling-a", `bare HTTPS + zod + INSERT, ${o.connections} connections, ${o.duration} s`, () => ceilingA(c));
    const acc = await step("accept", `POST /send on serve, ${o.connections} connections, ${o.duration} s`, () => accept(c, checks));
    const B = await step("ceiling-b", `nodemailer pool of ${worker.concurrency}, ${o.messages} messages`, () => ceilingB(c, checks));
    const D = await step("drain", `${o.messages} queued, then the worker`, () => drain(c, checks));
    const E = await step("burst", `${o.burst} POST /send with serve + worker running`, () => burst(c, checks));
    const P = await step("postfix", `${o.burst} messages through a private Postfix`, () => postfixBurst(c, checks));
    const F = await step("fair", `key A queues ${o.fairBurst}, then key B sends one and key A one high`, () => fair(c, checks));
    const S = await step("scale", `${o.rows.toLocaleString("en")} finished + ${o.queued.toLocaleString("en")} queued vs empty`, () => scale(c, checks));
    results.rssMb = c.rss;
    results.checks = checks;

    const pf = P && "rate" in P ? P : undefined;
    const rows: Row[] = [];
    if (A || acc) {
      rows.push(ratioRow("accept req/s (ceiling A: HTTPS+zod+INSERT)", acc?.rps, A?.rps, f0, ">= 0.60", (r) => r >= 0.6));
      rows.push(ratioRow("accept p99 ms vs ceiling A p99", acc?.p99, A?.p99, f0, "<= 3.00", (r) => r <= 3));
      rows.push(ratioRow("accept p50 ms", acc?.p50, A?.p50, f0, "-", () => true));
    }
    if (B || D) rows.push(ratioRow(`drain msg/s (ceiling B: nodemailer pool of ${worker.concurrency})`, D?.rate, B?.rate, f0, ">= 0.80", (r) => r >= 0.8));
    if (D) {
      rows.push({ figure: "drain CPU ms/msg: worker / postgres / sink", sealpost: `${f2(D.cpuMsPerMsg.worker)} / ${f2(D.cpuMsPerMsg.postgres)} / ${f2(D.cpuMsPerMsg.sink)}`,
        reference: B ? `client ${f2(B.clientCpuMsPerMsg)} / - / ${f2(B.sinkCpuMsPerMsg)}` : "-", ratio: "-", goal: "-", met: "-" });
    }
    if (E || P) {
      rows.push(ratioRow(`burst ${o.burst} end to end msg/s (Postfix ${pf?.version ?? ""}, TLS reuse)`, E?.rate, pf?.rate, f0, ">= 2.00", (r) => r >= 2,
        pf ? "" : P && "skipped" in P ? "not measured" : ""));
    }
    if (F) {
      rows.push(ratioRow(`fair: key B's lone message, s from 202 to delivered (vs FIFO estimate)`, F.loneSeconds, F.fifoEstimateSeconds, f2, "<= 2 s",
        () => F.loneSeconds <= 2));
      rows.push(ratioRow(`fair: key A's "high" message, s from 202 to delivered`, F.highSeconds, F.fifoEstimateSeconds, f2, "<= 2 s", () => F.highSeconds <= 2));
    }
    if (S) {
      rows.push(ratioRow(`accept req/s at ${S.rows.toLocaleString("en")} rows vs empty`, S.full.rps, S.empty.rps, f0, ">= 0.85", (r) => r >= 0.85));
      rows.push(ratioRow("claim p50 ms at scale vs empty", S.full.claimP50, S.empty.claimP50, f3, "<= 1.15", (r) => r <= 1.15));
      rows.push(ratioRow("claim p99 ms at scale vs empty", S.full.claimP99, S.empty.claimP99, f3, "<= 1.15", (r) => r <= 1.15));
    }
    for (const k of ["serve", "worker"] as const) {
      if (c.rss[k] > 0) rows.push({ figure: `peak RSS MB, ${k}`, sealpost: f0(c.rss[k]), reference: "-", ratio: "-", goal: "<= 200", met: c.rss[k] <= 200 ? "yes" : "NO" });
    }

    console.log("");
    console.log(table(rows));
    console.log("");
    if (A && acc) console.log(`accept: ${f0(acc.rps)} req/s p50 ${acc.p50} p99 ${acc.p99} ms (${acc.other || "all 202"}); ceiling A ${f0(A.rps)} req/s p50 ${A.p50} p99 ${A.p99} ms; CPU ms/req serve ${f2(acc.cpuMsPerReq.server)} + pg ${f2(acc.cpuMsPerReq.postgres)}, ceiling ${f2(A.cpuMsPerReq.server)} + pg ${f2(A.cpuMsPerReq.postgres)}`);
    if (D) console.log(`drain: ${D.delivered} delivered in ${f2(D.seconds)} s from the first claim over ${D.sessions} SMTP sessions (queued through POST /send at ${f0(D.queuedPerSecond)}/s beforehand)`);
    if (B) console.log(`ceiling B: ${o.messages} messages in ${f2(B.seconds)} s`);
    if (E) console.log(`burst: all ${o.burst} accepted in ${f2(E.acceptSeconds)} s, at the sink after ${f2(E.seconds)} s`);
    if (F) console.log(`fair: ${F.burst} from key A, all delivered ${f2(F.burstSeconds)} s after the first request (${f0(F.drainRate)} msg/s); ` +
      `${F.ahead} rows were queued ahead when key B's message and key A's high message were accepted`);
    if (P && "skipped" in P) console.log(P.skipped);
    else if (pf) console.log(`postfix ${pf.version}: ${o.burst} at the sink after ${f2(pf.seconds)} s (injected over SMTP by a pool of 10; relayhost = the sink, ` +
      `smtp_tls_security_level=may, smtp_tls_connection_reuse=yes, default_destination_concurrency_limit=${worker.concurrency}); Postfix CPU ${f2(pf.cpuMsPerMsg)} ms/msg`);
    if (S) console.log(`scale: ${S.rows.toLocaleString("en")} finished messages (+ recipients, attempts, done deliveries) stored in ${f1(S.populateSeconds)} s (ms per table: ${JSON.stringify(S.populateMs)}), database ${S.tableMb} MB; ` +
      `empty: ${f0(S.empty.rps)} req/s, claim p50/p99 ${f3(S.empty.claimP50)}/${f3(S.empty.claimP99)} ms; at scale: ${f0(S.full.rps)} req/s, claim ${f3(S.full.claimP50)}/${f3(S.full.claimP99)} ms ` +
      `(claims of ${worker.batch} over ${o.queued.toLocaleString("en")} queued, ${o.claimProbes} probes)`);
    console.log("");
    for (const ch of checks) console.log(`${ch.ok ? "pass" : "FAIL"}  ${ch.name}: ${ch.detail}`);
    const jsonFile = join(resultsDir, `bench-${stamp}.json`);
    writeFileSync(jsonFile, `${JSON.stringify({ ...results, table: rows }, null, 2)}\n`);
    console.log(`\nJSON: ${jsonFile}`);
    if (checks.some((ch) => !ch.ok)) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

await main();
