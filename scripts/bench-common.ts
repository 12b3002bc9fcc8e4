// Measurement helpers shared by the benchmark scripts (bench, bench-send, bench-worker):
// CPU and memory counters from /proc, the request body, the ceiling route of the accept
// path, and the loopback STARTTLS sink (with its fake DNS) that runs in a child process
// of its own. This file is also that child's entry point (`--bench-child sink|ceiling`).
import { fork, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import Fastify from "fastify";
import pg from "pg";
import { z } from "zod";
import { SMTPServer } from "smtp-server";
import { serverTlsOptions } from "../src/api/tls-options.ts";
import type { Pem } from "../src/tls/certificates.ts";
import { startFakeDns, type FakeZone } from "../test/helpers/fake-dns.ts";

const SELF = fileURLToPath(import.meta.url);

// ---------------------------------------------------------------- /proc counters

function statFields(pid: number | string): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null; // the process ended between readdir and read
  }
}

/** CPU ms used so far by every Postgres process (Linux /proc, USER_HZ 100; 0 elsewhere). */
export function postgresCpuMs(): number {
  let ticks = 0;
  for (const pid of existsSync("/proc") ? readdirSync("/proc").filter((d) => /^\d+$/.test(d)) : []) {
    let comm = "";
    try {
      comm = readFileSync(`/proc/${pid}/comm`, "utf8");
    } catch {
      continue;
    }
    if (comm.trim() !== "postgres") continue;
    const f = statFields(pid);
    if (f) ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15 of proc(5))
  }
  return ticks * 10;
}

/** CPU ms of one process (utime + stime), 0 once it is gone. */
export function processCpuMs(pid: number): number {
  const f = statFields(pid);
  return f ? (Number(f[11]) + Number(f[12])) * 10 : 0;
}

/**
 * CPU ms of a process tree: the root, its live children, and (through the root's cutime and
 * cstime) every child it already reaped. For one Postgres cluster, give its postmaster: backends
 * that ended still count, and no other cluster on the machine does.
 */
export function processTreeCpuMs(rootPid: number): number {
  const root = statFields(rootPid);
  if (!root) return 0;
  let ticks = Number(root[11]) + Number(root[12]) + Number(root[13]) + Number(root[14]);
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const f = statFields(d);
    if (f && Number(f[1]) === rootPid) ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks * 10;
}

/** Peak resident set size (VmHWM) of a live process in MB, or null. */
export function peakRssMb(pid: number): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** Idle CPU share of the whole machine over `ms`: other work on the box skews every figure. */
export async function idleShare(ms = 1000): Promise<number> {
  const sum = () => cpus().reduce((a, c) => ({ idle: a.idle + c.times.idle, all: a.all + Object.values(c.times).reduce((x, y) => x + y, 0) }), { idle: 0, all: 0 });
  const a = sum();
  await new Promise((r) => setTimeout(r, ms));
  const b = sum();
  return (b.idle - a.idle) / (b.all - a.all);
}

// ---------------------------------------------------------------- load generator

/** The part of autocannon's result the scripts read (autocannon ships no types). */
export interface LoadResult {
  requests: { average: number; total: number; sent: number };
  latency: { p50: number; p99: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  "2xx": number;
  statusCodeStats: Record<string, { count: number }>;
}
export const autocannon = createRequire(import.meta.url)("autocannon") as (opts: Record<string, unknown>) => Promise<LoadResult>;

/** Waits until a count stops moving: requests cut off when autocannon stopped still commit. */
export async function settledCount(pool: pg.Pool, sql: string): Promise<number> {
  const deadline = Date.now() + 10_000;
  let last = -1, same = 0;
  for (;;) {
    const n = Number((await pool.query<{ n: string }>(sql)).rows[0]!.n);
    same = n === last ? same + 1 : 0;
    last = n;
    if (same >= 2 || Date.now() > deadline) return n;
    await new Promise((r) => setTimeout(r, 100)); // poll interval of a deadline-bounded wait
  }
}

// A realistic password reset: display names, a text and an HTML part, a tag, metadata,
// one custom header and the strict TLS policy a reset link deserves (about 1.2 kB).
const link = "https://shop.example/account/reset?token=3q2-7Hc9xLwZpQ1vN4bKf8sYt0aRmUe6";
export const RESET_BODY = {
  from: { name: "Acme Shop", address: "no-reply@shop.example" },
  to: "Alice Martin <alice.martin@example.com>",
  reply_to: "support@shop.example",
  subject: "Reset your Acme Shop password",
  text: `Hi Alice,\n\nSomeone (hopefully you) asked to reset the password of your Acme Shop account.\nOpen this link within 30 minutes to choose a new one:\n\n${link}\n\nIf you did not ask for this, ignore this email: your password stays the same.\n\nAcme Shop`,
  html: `<!doctype html><html><body style="font-family:sans-serif"><p>Hi Alice,</p><p>Someone (hopefully you) asked to reset the password of your Acme Shop account. Open this link within 30 minutes to choose a new one:</p><p><a href="${link}" style="background:#1a73e8;color:#fff;padding:10px 16px;border-radius:4px;text-decoration:none">Reset my password</a></p><p style="color:#666;font-size:12px">If you did not ask for this, ignore this email: your password stays the same.</p><p>Acme Shop</p></body></html>`,
  headers: { "X-Entity-Ref-ID": "pwreset-7f3a9c" },
  tags: ["password-reset"],
  metadata: { user_id: "usr_82731", locale: "en-GB" },
  tls: "required",
};

// ---------------------------------------------------------------- ceiling A

/** The table ceiling A writes to; created by the caller in the database it gives the server. */
export const CEILING_SCRATCH_SQL = `CREATE SCHEMA bench_scratch;
CREATE TABLE bench_scratch.requests (id uuid PRIMARY KEY, body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`;
export const CEILING_COUNT_SQL = "SELECT count(*) AS n FROM bench_scratch.requests";

// The ceiling's validation: the zod schema a plain route would write for this body
// (addresses checked with zod's own email format, lengths bounded, unknown fields
// refused), parsed once per request. It is not sealpost's SendRequestSchema, whose cost
// is part of what is measured.
const bareAddress = z.email().max(254);
const bareMailbox = z.union([z.string().max(320), z.strictObject({ name: z.string().max(200).optional(), address: bareAddress })]);
const BareSendSchema = z.strictObject({
  from: bareMailbox,
  to: z.union([bareMailbox, z.array(bareMailbox).max(50)]),
  reply_to: bareMailbox.optional(),
  subject: z.string().min(1).max(998),
  text: z.string().max(5_000_000).optional(),
  html: z.string().max(5_000_000).optional(),
  headers: z.record(z.string().regex(/^X-[A-Za-z0-9-]{1,74}$/), z.string().max(998)).optional(),
  tags: z.array(z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/)).max(10).optional(),
  metadata: z.record(z.string().regex(/^[A-Za-z0-9_.-]{1,40}$/), z.string().max(500)).optional(),
  tls: z.enum(["opportunistic", "required"]).optional(),
});


/**
 * Ceiling A of the accept path: HTTPS + JSON parsing + a plain zod schema of the body + one
 * INSERT of it, nothing else (no logger, no auth). Invalid bodies get a bare 400.
 */
export async function serveCeiling(databaseUrl: string, pem: { cert: string; key: string }): Promise<{ port: number; close(): Promise<void> }> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  pool.on("error", () => {});
  const app = Fastify({ https: serverTlsOptions(pem), logger: false });
  app.post("/send", async (req, reply) => {
    const parsed = BareSendSchema.safeParse(req.body);
    if (!parsed.success) return reply.code(400).send({ title: "invalid request" });
    const id = randomUUID();
    await pool.query("INSERT INTO bench_scratch.requests (id, body) VALUES ($1, $2)", [id, JSON.stringify(parsed.data)]);
    return reply.code(202).send({ id, status: "queued", created_at: new Date().toISOString() });
  });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const addr = app.server.address();
  return { port: typeof addr === "object" && addr ? addr.port : 0, close: async () => { await app.close(); await pool.end(); } };
}

/** Ceiling A in a child process of its own (so autocannon, here, does not share its event loop). */
export function startCeilingChild(databaseUrl: string, pem: { cert: string; key: string }): Promise<{ child: ChildProcess; port: number; stop(): Promise<void> }> {
  const child = fork(SELF, ["--bench-child", "ceiling"], { execArgv: [], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`ceiling server exited early (${code})`)));
    child.once("message", (m: { port: number }) => {
      child.removeAllListeners("exit");
      resolve({ child, port: m.port, stop: () => stopChild(child) });
    });
    child.send({ databaseUrl, pem });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.send({ stop: true });
  });
}

// ---------------------------------------------------------------- STARTTLS sink

export interface SinkStats {
  sessions: number;
  tlsSessions: number;
  protocols: Record<string, number>;
  messages: number;
  cleartextMail: number;
  bytes: number;
  /** CPU ms the sink process (smtp-server and fake DNS) used so far. */
  cpuMs: number;
}

export interface SinkChild {
  child: ChildProcess;
  /** Port of the STARTTLS listener on 127.0.0.1. */
  port: number;
  /** "127.0.0.1:PORT" of the fake DNS serving `zone`, for DNS_SERVERS. */
  dns: string;
  stats(): Promise<SinkStats>;
  stop(): Promise<void>;
}

async function runSink(pem: Pem, zone: FakeZone, name: string): Promise<void> {
  const dns = await startFakeDns(zone);
  const stats: SinkStats = { sessions: 0, tlsSessions: 0, protocols: {}, messages: 0, cleartextMail: 0, bytes: 0, cpuMs: 0 };
  const server = new SMTPServer({
    key: pem.key,
    cert: pem.cert,
    name,
    authOptional: true,
    disabledCommands: ["AUTH"],
    disableReverseLookup: true, // a PTR lookup per connection would time the resolver, not the sender
    logger: false,
    onConnect(_session, cb) {
      stats.sessions++;
      cb();
    },
    onSecure(socket, _session, cb) {
      stats.tlsSessions++;
      const p = (socket as import("node:tls").TLSSocket).getProtocol() ?? "unknown";
      stats.protocols[p] = (stats.protocols[p] ?? 0) + 1;
      cb();
    },
    onMailFrom(_address, session, cb) {
      if (!session.secure) stats.cleartextMail++;
      cb();
    },
    onData(stream, _session, cb) {
      stream.on("data", (c: Buffer) => (stats.bytes += c.length));
      stream.on("end", () => {
        stats.messages++;
        cb();
      });
    },
  });
  server.on("error", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.server.address() as { port: number }).port;
  process.on("message", (msg: { stats?: true; stop?: true }) => {
    if (msg.stats) {
      const c = process.cpuUsage();
      process.send!({ stats: { ...stats, cpuMs: (c.user + c.system) / 1000 } });
    }
    if (msg.stop) {
      // Open sessions (a pool that was not closed) would keep close() waiting.
      setTimeout(() => process.exit(0), 2000).unref();
      server.close(() => void dns.close().then(() => process.exit(0)));
    }
  });
  process.send!({ port, dns: dns.address });
}

/**
 * A loopback smtp-server with STARTTLS (certificate `pem`, named `name`) that accepts and
 * counts every message, and a fake DNS answering `zone`, both in a child process so their CPU
 * is their own and not the sender's. smtp-server waits 100 ms before every greeting: invisible
 * with reused connections, a cap of concurrency / 0.1 s without.
 */
export function startSink(pem: Pem, zone: FakeZone, name: string): Promise<SinkChild> {
  const child = fork(SELF, ["--bench-child", "sink"], { execArgv: [], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  // One request at a time: replies come back in order.
  let chain: Promise<unknown> = Promise.resolve();
  const stats = () => {
    const p = chain.then(() => new Promise<SinkStats>((resolve) => {
      child.once("message", (m: { stats: SinkStats }) => resolve(m.stats));
      child.send({ stats: true });
    }));
    chain = p.catch(() => undefined);
    return p;
  };
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`sink exited early (${code})`)));
    child.once("message", (m: { port: number; dns: string }) => {
      child.removeAllListeners("exit");
      resolve({ child, port: m.port, dns: m.dns, stats, stop: () => stopChild(child) });
    });
    child.send({ pem, zone, name });
  });
}

// ---------------------------------------------------------------- child entry

if (process.argv[1] === SELF && process.argv.includes("--bench-child")) {
  const kind = process.argv[process.argv.indexOf("--bench-child") + 1];
  if (kind === "sink") {
    process.once("message", (m: { pem: Pem; zone: FakeZone; name: string }) => void runSink(m.pem, m.zone, m.name));
  } else if (kind === "ceiling") {
    process.once("message", async (m: { databaseUrl: string; pem: Pem }) => {
      const server = await serveCeiling(m.databaseUrl, m.pem);
      process.on("message", async (msg: { stop?: true }) => {
        if (!msg.stop) return;
        await server.close();
        process.exit(0);
      });
      process.send!({ port: server.port });
    });
  }
}
