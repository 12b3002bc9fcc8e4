// The fault suite (issue 8): real sealpost processes on a private Postgres cluster,
// delivering to a loopback STARTTLS sink that injects faults per message, while
// concurrent senders post over HTTPS, each message with its own Idempotency-Key and
// retried on 503 with the same key. After each scenario one invariant check
// (test/helpers/fault-invariants.ts). Prints one table, writes the figures as JSON under
// bench-results/, and exits non-zero naming every invariant that failed.
//
//   npm run faults                 every scenario
//   npm run faults -- a h          only these (also FAULTS_ONLY=a,h)
//
// Scenarios:
//   a  database stopped (pg_ctl stop -m fast, then start) under concurrent senders
//   b  database frozen (SIGSTOP of the postmaster and its backends, then SIGCONT)
//   c  a table lock held past the statement timeout
//   d  full disk: the tables on a tablespace on a small tmpfs (skipped if mount is refused)
//   e  kill -9 of a worker mid-DATA (slow final-dot replies)
//   f  SMTP faults: 421 at greeting, 451, 552, drop after the dot, silent peer
//   g  SIGTERM of the API and of the worker under load, both restarted
//   h  a peer slower than the lease: exactly one copy expected
//   i  a result write failing for longer than ~15 s (database stopped while deliveries are in flight)
//   j  claimed-but-unstarted deliveries of a killed worker: how long they wait for another
//   k  Redis (shared rate limits, REDIS_URL) killed under load and restarted: the API keeps
//      accepting with local counts and goes back to the shared ones (skipped without redis-server)
//   l  scale-out: two API and three worker processes on one database and Redis, 2,000 messages
//      from two keys through both APIs, each delivered once; one key's limit holds across both APIs;
//      a third key's one message, sent with the rest still queued, is delivered within 2 s
//
// Timings are environment variables (FAULTS_*, see TIMINGS below) so a run can be made
// shorter or harsher; FAULTS_EXTRA_ENV="NAME=value NAME=value" is added to every sealpost
// process. Needs the Postgres 15 binaries (PG_BIN, default /usr/lib/postgresql/15/bin);
// as root, the private cluster runs as the `postgres` user. Logs of every process are
// kept under bench-results/faults-logs/.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { connect } from "node:net";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pg from "pg";
import { openDatabase, type DatabaseHandle } from "../src/db/client.ts";
import { migrate } from "../src/db/migrate.ts";
import { createApiKey } from "../src/services/api-keys.ts";
import { issueCertificate } from "../src/tls/certificates.ts";
import { startFakeDns, type FakeDns } from "../test/helpers/fake-dns.ts";
import { checkInvariants, FINAL, type Figures } from "../test/helpers/fault-invariants.ts";
import { FAULT_HEADER, faultHeaderValue, startFaultSink, type FaultSink, type MessageFault, type SinkListener } from "../test/helpers/fault-sink.ts";
import { freePort } from "../test/helpers/cli-process.ts";
import { createPrivateCluster, type PrivateCluster } from "../test/helpers/pg-cluster.ts";
import { spawnSealpost, type SealpostProcess } from "../test/helpers/sealpost-process.ts";
import { startSenders, type SentMessage, type Senders } from "../test/helpers/senders.ts";
import { testCa } from "../test/helpers/smtp-peers.ts";
import { request } from "../test/helpers/https-client.ts";
import { waitFor } from "../test/helpers/wait.ts";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const exec = promisify(execFile);

// ---------------------------------------------------------------- settings

function num(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === "") return fallback;
  if (!/^\d+$/.test(v)) {
    process.stderr.write(`fault-suite: ${name} must be a whole number of milliseconds (or a count), not ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return Number(v);
}

const TIMINGS = {
  senders: num("FAULTS_SENDERS", 20),
  /** Pause between one sender's messages. */
  paceMs: num("FAULTS_PACE_MS", 500),
  /** Load before a fault starts. */
  warmupMs: num("FAULTS_WARMUP_MS", 2000),
  /** Database stopped / frozen / disk full (a, b, d). */
  outageMs: num("FAULTS_OUTAGE_MS", 8000),
  /** Table lock (c), held longer than its statement timeout. */
  lockMs: num("FAULTS_LOCK_MS", 7000),
  lockStatementTimeoutMs: num("FAULTS_LOCK_STATEMENT_TIMEOUT_MS", 2000),
  /** Load after a fault ends. */
  recoveryMs: num("FAULTS_RECOVERY_MS", 3000),
  /** How long recipients may take to reach a final status once the load stopped. */
  settleMs: num("FAULTS_SETTLE_MS", 30_000),
  /** Worker lease in every scenario but h and j. */
  leaseMs: num("FAULTS_LEASE_MS", 10_000),
  /** h: the lease, and the peer's delay before it answers the final dot (longer). */
  slowLeaseMs: num("FAULTS_SLOW_LEASE_MS", 4000),
  slowDotMs: num("FAULTS_SLOW_DOT_MS", 9000),
  /** i: how long the database stays down while results wait to be written. */
  writeOutageMs: num("FAULTS_WRITE_OUTAGE_MS", 30_000),
  /** j: the lease, and the longest a claimed-but-unstarted delivery of a killed worker may wait. */
  unstartedLeaseMs: num("FAULTS_UNSTARTED_LEASE_MS", 15_000),
  unstartedMaxWaitMs: num("FAULTS_UNSTARTED_MAX_WAIT_MS", 7500),
  smtpConnectTimeoutMs: num("FAULTS_SMTP_CONNECT_TIMEOUT_MS", 2000),
  smtpRetryMin: process.env.FAULTS_SMTP_RETRY_MIN || "200ms",
  smtpRetryMax: process.env.FAULTS_SMTP_RETRY_MAX || "1s",
  /** A host that answers 421 is left alone this long (SMTP_THROTTLE_PAUSE), shortened like the retries. */
  smtpThrottlePause: process.env.FAULTS_SMTP_THROTTLE_PAUSE || "1s",
  /** Hard bound on one scenario, whatever happens inside it. */
  scenarioTimeoutMs: num("FAULTS_SCENARIO_TIMEOUT_MS", 180_000),
};

/**
 * Every lease-related setting of a worker, in one place: when the worker gains a
 * separate claim lease or a renewal interval, its variables belong here.
 */
function leaseEnv(leaseMs: number): Record<string, string> {
  return { WORKER_LEASE_MS: String(leaseMs) };
}

function extraEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (process.env.FAULTS_EXTRA_ENV ?? "").split(/[\s,]+/).filter(Boolean)) {
    const i = pair.indexOf("=");
    if (i <= 0) {
      process.stderr.write(`fault-suite: FAULTS_EXTRA_ENV entries are NAME=value, not ${JSON.stringify(pair)}\n`);
      process.exit(2);
    }
    out[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return out;
}

// The sink's listeners and the DNS that routes recipient domains to them.
const DOMAIN = { ok: "ok.faults.test", greet421: "greet421.faults.test", silent: "silent.faults.test" } as const;
const LISTENERS: SinkListener[] = [
  { ip: "127.0.0.1", host: "mx.faults.test" },
  { ip: "127.0.0.2", host: "mx-421.faults.test", fault: { kind: "421-greeting", times: 3 } },
  { ip: "127.0.0.3", host: "mx-silent.faults.test", fault: { kind: "silent", times: 2 } },
];
const ZONE = {
  [DOMAIN.ok]: { MX: [{ preference: 10, exchange: "mx.faults.test" }] },
  [DOMAIN.greet421]: { MX: [{ preference: 10, exchange: "mx-421.faults.test" }] },
  [DOMAIN.silent]: { MX: [{ preference: 10, exchange: "mx-silent.faults.test" }] },
  "mx.faults.test": { A: ["127.0.0.1"] },
  "mx-421.faults.test": { A: ["127.0.0.2"] },
  "mx-silent.faults.test": { A: ["127.0.0.3"] },
};

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms)); // the length of a fault or of a load phase

// ---------------------------------------------------------------- shared context

interface Suite {
  cluster: PrivateCluster;
  dns: FakeDns;
  dir: string;
  logDir: string;
  template: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  dataKey: string;
  mounts: string[];
}

interface MessageSpec {
  domain?: string;
  fault?: MessageFault;
  /** The final recipient status this message must reach (default delivered: no fault here is permanent but 552). */
  expect?: (typeof FINAL)[number];
}

// Stages not closed yet, so a scenario that throws or times out still gets its processes stopped.
const openStages = new Set<Stage>();

/** One scenario's database, sink, processes and senders. */
class Stage {
  readonly procs: SealpostProcess[] = [];
  readonly senders: Senders[] = [];
  readonly expected = new Map<string, (typeof FINAL)[number]>();
  readonly notes: string[] = [];
  db!: DatabaseHandle;
  sink!: FaultSink;
  apiKey = "";
  apiPort = 0;
  /** Set when the scenario ran out of time: whatever it still does stops at the next step. */
  aborted = false;
  readonly url: string;
  readonly suite: Suite;
  readonly id: string;
  readonly dbName: string;
  readonly leaseMs: number;
  readonly env: Record<string, string>;

  constructor(suite: Suite, id: string, dbName: string, leaseMs: number, env: Record<string, string>) {
    this.suite = suite;
    this.id = id;
    this.dbName = dbName;
    this.leaseMs = leaseMs;
    this.env = env;
    this.url = suite.cluster.url(dbName);
  }

  static async open(suite: Suite, id: string, opts: { leaseMs?: number; env?: Record<string, string> } = {}): Promise<Stage> {
    const dbName = `faults_${id}`;
    await suite.cluster.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await suite.cluster.query(`CREATE DATABASE ${dbName} TEMPLATE ${suite.template}`);
    const st = new Stage(suite, id, dbName, opts.leaseMs ?? TIMINGS.leaseMs, opts.env ?? {});
    openStages.add(st);
    st.db = openDatabase({ url: st.url, poolMax: 4, statementTimeoutMs: 10_000, connectTimeoutMs: 2000 });
    st.db.pool.on("error", () => {}); // the database is stopped on purpose
    st.apiKey = (await createApiKey(st.db.prisma, { name: `faults-${id}` })).key;
    st.sink = await startFaultSink(LISTENERS);
    st.apiPort = await freePort();
    return st;
  }

  private common(name: string): Record<string, string> {
    return {
      NODE_ENV: "production",
      LOG_LEVEL: "info",
      DATABASE_URL: `${this.url}?application_name=${name}`,
      SEALPOST_DATA_KEY: this.suite.dataKey,
      MIGRATE_ON_START: "false",
      // Senders use a domain the suite never verifies; signing is not under test here.
      SENDER_DOMAINS: "any",
      ...this.env,
      ...extraEnv(),
    };
  }

  async startApi(name = "api", env: Record<string, string> = {}, port = this.apiPort): Promise<SealpostProcess> {
    const p = spawnSealpost(
      "serve",
      {
        ...this.common(name),
        HOST: "127.0.0.1",
        PORT: String(port),
        TLS_CERT_FILE: this.suite.certFile,
        TLS_KEY_FILE: this.suite.keyFile,
        RATE_LIMIT_IP_MAX: "10000000",
        RATE_LIMIT_KEY_MAX: "10000000",
        ...env,
      },
      { name: `${this.id}-${name}`, logDir: this.suite.logDir },
    );
    this.procs.push(p);
    await p.waitForLine(/API listening/);
    return p;
  }

  async startWorker(name: string, env: Record<string, string> = {}): Promise<SealpostProcess> {
    const p = spawnSealpost(
      "worker",
      {
        ...this.common(name),
        WORKER_ID: name,
        WORKER_POLL_MS: "100",
        SMTP_TLS_POLICY: "required",
        SMTP_CA_FILE: this.suite.caFile,
        SMTP_HELO_NAME: "faults.sealpost.test",
        DNS_SERVERS: this.suite.dns.address,
        SMTP_MX_PORT: String(this.sink.port),
        SMTP_CONNECT_TIMEOUT_MS: String(TIMINGS.smtpConnectTimeoutMs),
        SMTP_RETRY_MIN: TIMINGS.smtpRetryMin,
        SMTP_RETRY_MAX: TIMINGS.smtpRetryMax,
        SMTP_THROTTLE_PAUSE: TIMINGS.smtpThrottlePause,
        ...leaseEnv(this.leaseMs),
        ...env,
      },
      { name: `${this.id}-${name}`, logDir: this.suite.logDir },
    );
    this.procs.push(p);
    // Ready once it has a database connection of its own: the claim loop has started.
    await waitFor(
      async () => {
        if (!p.running()) throw new Error(`worker ${name} exited:\n${p.tail(5)}`);
        const r = await this.db.pool.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND datname = $2`, [name, this.dbName]);
        return r.rowCount! > 0;
      },
      { timeoutMs: 30_000, intervalMs: 50, what: `worker ${name} to connect` },
    );
    return p;
  }

  /** Senders posting messages built by `spec(n)`. */
  send(o: { senders: number; paceMs?: number; perSender?: number; spec?: (n: number) => MessageSpec; port?: number; apiKey?: string }): Senders {
    const s = startSenders({
      url: `https://127.0.0.1:${o.port ?? this.apiPort}`,
      ca: testCa().cert,
      apiKey: o.apiKey ?? this.apiKey,
      senders: o.senders,
      ...(o.paceMs !== undefined ? { paceMs: o.paceMs } : {}),
      ...(o.perSender !== undefined ? { perSender: o.perSender } : {}),
      keyPrefix: `${this.id}${this.senders.length}`,
      body: (n, key) => {
        const spec = o.spec?.(n) ?? {};
        this.expected.set(key, spec.expect ?? "delivered");
        return {
          from: "Shop <noreply@shop.example>",
          to: `m${n}@${spec.domain ?? DOMAIN.ok}`,
          subject: `Receipt ${n}`,
          text: `Thank you for order ${n}.`,
          ...(spec.fault ? { headers: { [FAULT_HEADER]: faultHeaderValue(spec.fault) } } : {}),
          metadata: { fault_key: key },
        };
      },
    });
    this.senders.push(s);
    return s;
  }

  /** Lets a fault or a load phase last `ms`. */
  async hold(ms: number): Promise<void> {
    await pause(ms);
    this.step();
  }

  private step(): void {
    if (this.aborted) throw new Error(`scenario ${this.id} was aborted`);
  }

  // The database faults, each refused once the scenario was aborted (the next one may be running).
  async stopDatabase(): Promise<void> {
    this.step();
    await this.suite.cluster.stop("fast");
  }
  async startDatabase(): Promise<void> {
    this.step();
    await this.suite.cluster.start();
  }
  freezeDatabase(): void {
    this.step();
    this.suite.cluster.freeze();
  }
  thawDatabase(): void {
    this.suite.cluster.thaw();
  }

  get sent(): SentMessage[] {
    return this.senders.flatMap((s) => s.messages);
  }

  /** Message-IDs of deliveries still leased by `workerId`, split by whether the sink has a copy. */
  async leasedBy(workerId: string): Promise<{ withCopy: string[]; withoutCopy: string[] }> {
    const { rows } = await this.db.pool.query<{ mid: string }>(
      `SELECT m.message_id_header AS mid FROM deliveries d JOIN messages m ON m.id = d.message_id
        WHERE d.lease_owner = $1 AND d.state = 'pending'`,
      [workerId],
    );
    const copied = new Set(this.sink.copies.map((c) => c.messageId));
    return { withCopy: rows.filter((r) => copied.has(r.mid)).map((r) => r.mid), withoutCopy: rows.filter((r) => !copied.has(r.mid)).map((r) => r.mid) };
  }

  async close(): Promise<void> {
    openStages.delete(this);
    await Promise.all(this.senders.map((s) => s.stop().catch(() => {})));
    await Promise.all(this.procs.map((p) => p.kill()));
    await this.sink?.close().catch(() => {});
    await this.db?.close();
    if (this.suite.cluster.frozen) this.suite.cluster.thaw();
    if (!this.suite.cluster.running()) await this.suite.cluster.start();
    await this.suite.cluster.query(`DROP DATABASE IF EXISTS ${this.dbName} WITH (FORCE)`);
  }
}

// ---------------------------------------------------------------- scenarios

interface Outcome {
  /** Messages in flight in processes killed with SIGKILL (the duplicates they may cause). */
  crashedInFlight?: number;
  failures?: string[];
  settleMs?: number;
  skipped?: string;
  /** Run once every recipient settled: failures only the scenario knows to look for. */
  afterSettle?: () => string[];
}

interface Scenario {
  id: string;
  name: string;
  run(suite: Suite): Promise<{ stage: Stage | null; outcome: Outcome }>;
}

/** Load from TIMINGS.senders senders during `fault`, with warm-up before and recovery after. */
async function underLoad(st: Stage, fault: () => Promise<void>): Promise<void> {
  const s = st.send({ senders: TIMINGS.senders, paceMs: TIMINGS.paceMs });
  await st.hold(TIMINGS.warmupMs);
  await fault();
  await st.hold(TIMINGS.recoveryMs);
  await s.stop();
}

/** f: every kind of fault was really injected (a check on the sink as much as on sealpost). */
function faultsInjected(st: Stage): string[] {
  const copies = (f: (c: FaultSink["copies"][number]) => boolean) => st.sink.copies.filter(f).length;
  const conns = (k: string) => st.sink.connections.filter((c) => c.fault === k).length;
  const seen = {
    "451": copies((c) => c.reply === 451),
    "552": copies((c) => c.reply === 552),
    "drop-after-dot": copies((c) => c.fault?.startsWith("drop-after-dot") ?? false),
    "421-greeting": conns("421-greeting"),
    silent: conns("silent"),
  };
  st.notes.push(`injected ${Object.entries(seen).map(([k, n]) => `${k} x${n}`).join(", ")}`);
  const missing = Object.entries(seen).filter(([, n]) => n === 0).map(([k]) => k);
  return missing.length ? [`faults never injected: ${missing.join(", ")}`] : [];
}

const scenarios: Scenario[] = [
  {
    id: "a",
    name: "database stopped",
    async run(suite) {
      const st = await Stage.open(suite, "a");
      await st.startApi();
      await st.startWorker("worker");
      await underLoad(st, async () => {
        await st.stopDatabase();
        await st.hold(TIMINGS.outageMs);
        await st.startDatabase();
      });
      return { stage: st, outcome: {} };
    },
  },
  {
    id: "b",
    name: "database frozen (SIGSTOP)",
    async run(suite) {
      const st = await Stage.open(suite, "b");
      await st.startApi();
      await st.startWorker("worker");
      await underLoad(st, async () => {
        st.freezeDatabase();
        try {
          await st.hold(TIMINGS.outageMs);
        } finally {
          st.thawDatabase();
        }
      });
      return { stage: st, outcome: {} };
    },
  },
  {
    id: "c",
    name: "table lock past the statement timeout",
    async run(suite) {
      const timeout = String(TIMINGS.lockStatementTimeoutMs);
      const st = await Stage.open(suite, "c", { env: { DATABASE_STATEMENT_TIMEOUT_MS: timeout } });
      await st.startApi();
      await st.startWorker("worker");
      await underLoad(st, async () => {
        const c = new pg.Client({ connectionString: st.url });
        await c.connect();
        try {
          await c.query("BEGIN");
          await c.query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE");
          await st.hold(TIMINGS.lockMs);
          await c.query("COMMIT");
        } finally {
          await c.end();
        }
      });
      st.notes.push(`lock ${TIMINGS.lockMs / 1000} s, statement timeout ${TIMINGS.lockStatementTimeoutMs / 1000} s`);
      return { stage: st, outcome: {} };
    },
  },
  {
    id: "d",
    name: "full disk (small tablespace)",
    async run(suite) {
      const mountPoint = suite.cluster.ownedDir("small");
      try {
        await exec("mount", ["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", mountPoint]);
      } catch {
        return { stage: null, outcome: { skipped: "skipped: cannot mount" } };
      }
      suite.mounts.push(mountPoint);
      suite.cluster.ownedDir("small"); // the mounted tmpfs is root's until chowned
      const st = await Stage.open(suite, "d");
      const admin = new pg.Client({ connectionString: st.url });
      await admin.connect();
      try {
        await admin.query(`CREATE TABLESPACE faults_small LOCATION '${mountPoint}'`);
        // Every table and index of the database onto the small disk, then a filler that takes the rest.
        await admin.query(`ALTER TABLE ALL IN TABLESPACE pg_default SET TABLESPACE faults_small`);
        await admin.query(`ALTER INDEX ALL IN TABLESPACE pg_default SET TABLESPACE faults_small`);
        await admin.query(`CREATE TABLE filler (b bytea) TABLESPACE faults_small`);
        await admin.query(`ALTER TABLE filler ALTER b SET STORAGE EXTERNAL`); // no compression: each row takes its size
        await st.startApi();
        await st.startWorker("worker");
        let full = false;
        await underLoad(st, async () => {
          for (let i = 0; i < 1000 && !full; i++) {
            try {
              await admin.query(`INSERT INTO filler SELECT convert_to(repeat('x', 262144), 'UTF8')`);
            } catch (err) {
              if ((err as { code?: string }).code !== "53100") throw err;
              full = true;
            }
          }
          await st.hold(TIMINGS.outageMs);
          await admin.query(`DROP TABLE filler`);
        });
        if (!full) st.notes.push("the disk never filled");
        st.notes.push(`disk full ${TIMINGS.outageMs / 1000} s`);
        return { stage: st, outcome: full ? {} : { failures: ["the small tablespace never reported a full disk (53100)"] } };
      } finally {
        await admin.end().catch(() => {});
      }
    },
  },
  {
    id: "e",
    name: "kill -9 of a worker mid-DATA",
    async run(suite) {
      const st = await Stage.open(suite, "e");
      await st.startApi();
      const doomed = await st.startWorker("doomed");
      await st.startWorker("survivor");
      const s = st.send({ senders: 6, perSender: 6, spec: () => ({ fault: { kind: "slow-dot", ms: 1500 } }) });
      // Kill it while the sink holds replies to messages it sent.
      await waitFor(
        async () => {
          const pending = new Set(st.sink.pendingReplies().map((c) => c.messageId));
          const { withCopy } = await st.leasedBy("doomed");
          return withCopy.some((m) => pending.has(m));
        },
        { timeoutMs: 30_000, intervalMs: 20, what: "the doomed worker to have messages mid-DATA" },
      );
      await doomed.kill();
      // In flight at the crash: its leased rows whose message the sink already has.
      const kept = st.sink.keptByMessageId();
      const { withCopy } = await st.leasedBy("doomed");
      const inFlight = withCopy.filter((m) => kept.has(m)).length;
      st.notes.push(`${inFlight} in flight at the kill`);
      await s.done;
      return { stage: st, outcome: { crashedInFlight: inFlight } };
    },
  },
  {
    id: "f",
    name: "SMTP 421 greeting / 451 / 552 / drop / silent",
    async run(suite) {
      const st = await Stage.open(suite, "f");
      await st.startApi();
      await st.startWorker("worker");
      const kinds: MessageSpec[] = [
        {},
        { fault: { kind: "451", times: 1 } },
        { fault: { kind: "552" }, expect: "bounced" },
        { fault: { kind: "drop-after-dot", times: 1 } },
        { domain: DOMAIN.greet421 },
        { domain: DOMAIN.silent },
      ];
      const s = st.send({ senders: kinds.length, perSender: 6, spec: (n) => kinds[n % kinds.length]! });
      await s.done;
      return { stage: st, outcome: { afterSettle: () => faultsInjected(st) } };
    },
  },
  {
    id: "g",
    name: "SIGTERM of API and worker under load",
    async run(suite) {
      const st = await Stage.open(suite, "g");
      let api = await st.startApi("api1");
      let worker = await st.startWorker("worker1");
      const s = st.send({ senders: 10, paceMs: 200, spec: (n) => (n % 3 === 0 ? { fault: { kind: "slow-dot", ms: 1000 } } : {}) });
      await st.hold(TIMINGS.warmupMs);
      await api.terminate();
      api = await st.startApi("api2");
      await st.hold(TIMINGS.warmupMs);
      await worker.terminate();
      worker = await st.startWorker("worker2");
      await st.hold(TIMINGS.recoveryMs);
      await s.stop();
      const exits = st.procs.filter((p) => !p.running()).map((p) => p.child.exitCode);
      if (exits.some((c) => c !== 0)) return { stage: st, outcome: { failures: [`a process stopped by SIGTERM exited with ${exits.join(", ")}`] } };
      return { stage: st, outcome: {} };
    },
  },
  {
    id: "h",
    name: "peer slower than the lease",
    async run(suite) {
      const st = await Stage.open(suite, "h", { leaseMs: TIMINGS.slowLeaseMs });
      await st.startApi();
      await st.startWorker("worker");
      const s = st.send({ senders: 3, perSender: 1, spec: () => ({ fault: { kind: "slow-dot", ms: TIMINGS.slowDotMs } }) });
      await s.done;
      st.notes.push(`dot answered after ${TIMINGS.slowDotMs / 1000} s, lease ${TIMINGS.slowLeaseMs / 1000} s`);
      return { stage: st, outcome: { settleMs: TIMINGS.slowDotMs + 3 * TIMINGS.slowLeaseMs + 5000 } };
    },
  },
  {
    id: "i",
    name: "result write failing > 15 s",
    async run(suite) {
      const st = await Stage.open(suite, "i");
      await st.startApi();
      await st.startWorker("worker", { WORKER_CONCURRENCY: "8" });
      const s = st.send({ senders: 8, perSender: 1, spec: () => ({ fault: { kind: "slow-dot", ms: 3000 } }) });
      await s.done;
      await waitFor(() => st.sink.pendingReplies().length >= 8, { timeoutMs: 30_000, intervalMs: 20, what: "8 deliveries in flight" });
      // The peer answers while the database is down: the results cannot be written.
      await st.stopDatabase();
      await st.hold(TIMINGS.writeOutageMs);
      await st.startDatabase();
      st.notes.push(`database stopped ${TIMINGS.writeOutageMs / 1000} s with 8 in flight`);
      return { stage: st, outcome: {} };
    },
  },
  {
    id: "j",
    name: "unstarted claims of a killed worker",
    async run(suite) {
      const st = await Stage.open(suite, "j", { leaseMs: TIMINGS.unstartedLeaseMs });
      await st.startApi();
      // Two slots and a batch of four: two deliveries in flight, two claimed and waiting. The
      // peer holds each reply long enough for the other worker to start meanwhile.
      const doomed = await st.startWorker("doomed", { WORKER_CONCURRENCY: "2", WORKER_BATCH_SIZE: "4" });
      const s = st.send({ senders: 4, perSender: 1, spec: () => ({ fault: { kind: "slow-dot", ms: 6000 } }) });
      await s.done;
      await waitFor(() => st.sink.pendingReplies().length >= 2, { timeoutMs: 30_000, intervalMs: 20, what: "two deliveries of the doomed worker in flight" });
      await st.startWorker("survivor"); // idle: nothing is due
      const killedAt = Date.now();
      await doomed.kill();
      // Dead now: what it still leases is either in flight (the sink has the message) or was never started.
      const { withCopy, withoutCopy: unstarted } = await st.leasedBy("doomed");
      const kept = st.sink.keptByMessageId();
      const inFlight = withCopy.filter((m) => kept.has(m)).length;
      if (unstarted.length === 0) {
        st.notes.push(`no claimed-but-unstarted deliveries at the kill; ${inFlight} in flight`);
        return { stage: st, outcome: { crashedInFlight: inFlight } };
      }
      await waitFor(() => unstarted.every((m) => st.sink.copies.some((c) => c.messageId === m)), {
        timeoutMs: TIMINGS.unstartedLeaseMs + 20_000,
        intervalMs: 50,
        what: "the unstarted deliveries to be sent by the other worker",
      }).catch(() => undefined); // reported below as "forever"
      const waits = unstarted.map((m) => {
        const first = st.sink.copies.find((c) => c.messageId === m);
        return first ? first.receivedAt - killedAt : Infinity;
      });
      const longest = Math.max(...waits);
      st.notes.push(
        `${unstarted.length} unstarted waited ${waits.map((w) => (Number.isFinite(w) ? `${(w / 1000).toFixed(1)} s` : "forever")).join(", ")}; ` +
          `${inFlight} in flight; lease ${TIMINGS.unstartedLeaseMs / 1000} s`,
      );
      const failures = longest > TIMINGS.unstartedMaxWaitMs ? [`claimed-but-unstarted deliveries of the killed worker waited up to ${(longest / 1000).toFixed(1)} s (at most ${TIMINGS.unstartedMaxWaitMs / 1000} s expected)`] : [];
      return { stage: st, outcome: { crashedInFlight: inFlight, failures } };
    },
  },
  {
    id: "k",
    name: "Redis killed under load, restarted",
    async run(suite) {
      const redisServer = await which("redis-server");
      if (!redisServer) return { stage: null, outcome: { skipped: "skipped: no redis-server (apt-get install redis-server)" } };
      const port = await freePort();
      const servers = [await startRedis(redisServer, port)];
      const st = await Stage.open(suite, "k");
      try {
        const api = await st.startApi("api", { REDIS_URL: `redis://127.0.0.1:${port}` });
        const said = (re: RegExp) => api.lines.filter((l) => re.test(l)).length;
        const shared = /rate limits are shared through Redis/;
        const local = /Redis unavailable: rate limits are counted per process/;
        await api.waitForLine(shared);
        await st.startWorker("worker");
        await underLoad(st, async () => {
          servers[0]!.kill("SIGKILL");
          await waitFor(() => said(local) >= 1, { timeoutMs: 10_000, intervalMs: 50, what: "the API to say Redis is unavailable" });
          await st.hold(TIMINGS.outageMs);
          servers.push(await startRedis(redisServer, port));
          await waitFor(() => said(shared) >= 2, { timeoutMs: 20_000, intervalMs: 50, what: "the API to share counts through Redis again" });
        });
        st.notes.push(`Redis killed for ${TIMINGS.outageMs / 1000} s: counted locally, then shared again; ${said(local)} warning line(s)`);
        return { stage: st, outcome: {} };
      } finally {
        for (const r of servers) r.kill("SIGKILL");
      }
    },
  },
  {
    id: "l",
    name: "scale-out: 2 APIs, 3 workers, Redis",
    async run(suite) {
      const redisServer = await which("redis-server");
      if (!redisServer) return { stage: null, outcome: { skipped: "skipped: no redis-server (apt-get install redis-server)" } };
      const redisPort = await freePort();
      const redis = await startRedis(redisServer, redisPort);
      const st = await Stage.open(suite, "l");
      try {
        const env = { REDIS_URL: `redis://127.0.0.1:${redisPort}`, REDIS_KEY_PREFIX: "faults-l:" };
        const secondPort = await freePort();
        const apis = [await st.startApi("api1", env), await st.startApi("api2", env, secondPort)];
        for (const a of apis) await a.waitForLine(/rate limits are shared through Redis/);
        const keyB = (await createApiKey(st.db.prisma, { name: "faults-l-b" })).key;
        const keyC = await createApiKey(st.db.prisma, { name: "faults-l-lone" });
        // One key's limit across both APIs: 60 requests alternating, a limit of 40 a minute.
        const limited = (await createApiKey(st.db.prisma, { name: "faults-l-limited", rateLimitPerMinute: 40 })).key;
        const statuses: number[] = [];
        for (let i = 0; i < 60; i++) {
          const port = i % 2 === 0 ? st.apiPort : secondPort;
          const r = await request(`https://127.0.0.1:${port}/messages?limit=1`, { ca: testCa().cert, headers: { authorization: `Bearer ${limited}` } });
          statuses.push(r.status);
        }
        const ok = statuses.filter((x) => x === 200).length;
        const limitedCount = statuses.filter((x) => x === 429).length;
        // 2,000 messages: two keys, each through both APIs.
        const groups = [
          st.send({ senders: 5, perSender: 100 }),
          st.send({ senders: 5, perSender: 100, port: secondPort }),
          st.send({ senders: 5, perSender: 100, apiKey: keyB }),
          st.send({ senders: 5, perSender: 100, port: secondPort, apiKey: keyB }),
        ];
        await Promise.all(groups.map((g) => g.done));
        // The workers start on the full queue, so they race for it from the first claim, and a
        // third key's one message, sent once they are under way with most of the two keys' mail
        // still queued, shows the fair-queue bound: it waits one claim, not for the queue ahead.
        const t0 = Date.now();
        const workers = [await st.startWorker("w1"), await st.startWorker("w2"), await st.startWorker("w3")];
        await waitFor(async () => {
          const { rows } = await st.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM recipients WHERE status = 'delivered'`);
          return Number(rows[0]!.n) >= 200;
        }, { timeoutMs: 120_000, intervalMs: 50, what: "the workers under way" });
        const ahead = Number((await st.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM deliveries WHERE state = 'pending'`)).rows[0]!.n);
        await st.send({ senders: 1, perSender: 1, apiKey: keyC.key, port: secondPort }).done;
        const loneWait = await waitFor(async () => {
          const { rows } = await st.db.pool.query<{ s: number }>(
            `SELECT extract(epoch FROM r.updated_at - m.created_at)::float8 AS s FROM messages m JOIN recipients r ON r.message_id = m.id
              WHERE m.api_key_id = $1 AND r.status = 'delivered'`, [keyC.record.id]);
          return rows[0]?.s ?? null;
        }, { timeoutMs: 120_000, intervalMs: 50, what: "the third key's message delivered" });
        const delivered = (p: SealpostProcess) => p.lines.filter((l) => l.includes('"msg":"delivery attempt recorded"')).length;
        await waitFor(async () => {
          const { rows } = await st.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM recipients WHERE status = 'delivered'`);
          return Number(rows[0]!.n) >= 2001;
        }, { timeoutMs: 120_000, intervalMs: 200, what: "2,001 delivered" });
        const rate = 2001 / ((Date.now() - t0) / 1000);
        st.notes.push(`deliveries recorded per worker ${workers.map((w) => `${w.name.split("-").pop()} ${delivered(w)}`).join(", ")}; ` +
          `one key limited to 40/min across both APIs: ${ok} x 200, ${limitedCount} x 429; ` +
          `a third key's message sent with ${ahead} queued ahead was delivered ${loneWait.toFixed(2)} s after its 202 (first come first served: about ${(ahead / rate).toFixed(1)} s at ${rate.toFixed(0)} msg/s)`);
        const failures = ok === 40 && limitedCount === 20 ? [] : [`shared limit of 40 across two APIs: ${ok} x 200 and ${limitedCount} x 429 (expected 40 and 20)`];
        if (loneWait > 2) failures.push(`fair queueing: the third key's message waited ${loneWait.toFixed(2)} s with ${ahead} queued ahead (bound: 2 s)`);
        return { stage: st, outcome: { failures } };
      } finally {
        redis.kill("SIGKILL");
      }
    },
  },
];

/** A throwaway Redis on 127.0.0.1:`port` (nothing on disk), once it answers. */
async function startRedis(bin: string, port: number): Promise<ChildProcess> {
  const child = spawn(bin, ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  await waitFor(
    () => new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1", () => (s.end(), resolve(true)));
      s.on("error", () => resolve(false));
    }),
    { timeoutMs: 10_000, intervalMs: 50, what: `redis-server on port ${port}` },
  );
  return child;
}

async function which(name: string): Promise<string | null> {
  try {
    return (await exec("sh", ["-c", `command -v ${name}`])).stdout.trim() || null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- running

interface Result {
  id: string;
  name: string;
  figures: Figures | null;
  failures: string[];
  notes: string[];
  seconds: number;
}

async function runScenario(suite: Suite, sc: Scenario): Promise<Result> {
  const started = Date.now();
  const result: Result = { id: sc.id, name: sc.name, figures: null, failures: [], notes: [], seconds: 0 };
  const work = async () => {
    const { stage: st, outcome } = await sc.run(suite);
    if (outcome.skipped) {
      result.notes.push(outcome.skipped);
      return;
    }
    if (!st) return;
    // The database must be up for the check, whatever the scenario left behind.
    if (suite.cluster.frozen) suite.cluster.thaw();
    if (!suite.cluster.running()) await suite.cluster.start();
    const report = await checkInvariants({
      db: st.db.pool,
      sent: st.sent,
      copies: st.sink.copies,
      crashedInFlight: outcome.crashedInFlight ?? 0,
      settleMs: outcome.settleMs ?? TIMINGS.settleMs,
      expected: st.expected,
    });
    result.figures = report.figures;
    result.failures.push(...(outcome.failures ?? []), ...report.failures, ...(outcome.afterSettle?.() ?? []));
    result.notes.push(...st.notes);
    const f = report.figures;
    if (f.unanswered > 0) result.notes.push(`${f.unanswered} unanswered (retried)`);
    if (f.sent > f.accepted) result.notes.push(`${f.sent - f.accepted} never accepted`);
    result.notes.push(`slowest answer ${(f.maxAnswerMs / 1000).toFixed(1)} s`);
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      work(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`did not finish within ${TIMINGS.scenarioTimeoutMs / 1000} s`)), TIMINGS.scenarioTimeoutMs);
      }),
    ]);
  } catch (err) {
    result.failures.push(`scenario error: ${(err as Error).message.split("\n").slice(0, 4).join(" | ")}`);
  } finally {
    clearTimeout(timer);
    for (const st of openStages) st.aborted = true;
    for (const st of [...openStages]) await st.close().catch((err: Error) => result.failures.push(`cleanup: ${err.message}`));
    for (const m of suite.mounts.splice(0)) {
      await suite.cluster.query(`DROP TABLESPACE IF EXISTS faults_small`).catch(() => {});
      await exec("umount", [m]).catch((err: Error) => result.failures.push(`umount ${m}: ${err.message}`));
    }
  }
  result.seconds = Math.round((Date.now() - started) / 1000);
  return result;
}

function table(results: Result[]): string {
  const head = ["scenario", "sent", "202", "503", "500", "rows", "delivered", "duplicates", "stuck", "notes"];
  const rows = results.map((r) => {
    const f = r.figures;
    const cells = f ? [f.sent, f.accepted, f.answers503, f.answers500, f.rows, f.delivered, f.duplicates, f.stuck].map(String) : Array(8).fill("-");
    return [`${r.id} ${r.name}`, ...cells, [r.failures.length ? "FAIL" : r.figures ? "ok" : "", ...r.notes].filter(Boolean).join("; ")];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

async function main(): Promise<number> {
  const wanted = [...process.argv.slice(2), ...(process.env.FAULTS_ONLY ?? "").split(",")].map((s) => s.trim()).filter(Boolean);
  const unknown = wanted.filter((w) => !scenarios.some((s) => s.id === w));
  if (unknown.length) {
    process.stderr.write(`fault-suite: unknown scenario ${unknown.join(", ")} (choose from ${scenarios.map((s) => s.id).join(" ")})\n`);
    return 2;
  }
  const chosen = wanted.length ? scenarios.filter((s) => wanted.includes(s.id)) : scenarios;

  const dir = mkdtempSync(join(tmpdir(), "sp-faults-"));
  const logDir = join(REPO, "bench-results", "faults-logs");
  rmSync(logDir, { recursive: true, force: true });
  mkdirSync(logDir, { recursive: true });
  let cluster: PrivateCluster | null = null;
  let dns: FakeDns | null = null;
  const results: Result[] = [];
  let suite: Suite | null = null;
  const cleanup = async () => {
    for (const st of [...openStages]) await st.close().catch(() => {});
    for (const m of suite?.mounts ?? []) await exec("umount", ["-l", m]).catch(() => {});
    await cluster?.destroy().catch(() => {});
    await dns?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`fault-suite: ${sig}, cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  // A throw from a callback (a socket, a timer) would skip the finally below and leave the cluster running.
  const onCrash = (err: unknown) => {
    process.stderr.write(`fault-suite: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    void cleanup().finally(() => process.exit(1));
  };
  process.once("uncaughtException", onCrash);
  process.once("unhandledRejection", onCrash);

  const t0 = Date.now();
  try {
    cluster = await createPrivateCluster();
    dns = await startFakeDns(ZONE);
    const template = "faults_template";
    await cluster.query(`CREATE DATABASE ${template}`);
    await migrate(cluster.url(template));
    const leaf = issueCertificate({ names: ["localhost", "127.0.0.1"], ca: testCa() });
    const files = { caFile: join(dir, "ca.crt"), certFile: join(dir, "api.crt"), keyFile: join(dir, "api.key") };
    writeFileSync(files.caFile, testCa().cert);
    writeFileSync(files.certFile, leaf.cert);
    writeFileSync(files.keyFile, leaf.key, { mode: 0o600 });
    suite = { cluster, dns, dir, logDir, template, ...files, dataKey: randomBytes(32).toString("base64"), mounts: [] };
    process.stderr.write(`private Postgres on 127.0.0.1:${cluster.port}; scenarios ${chosen.map((s) => s.id).join(" ")}\n`);

    for (const sc of chosen) {
      process.stderr.write(`(${sc.id}) ${sc.name} ...\n`);
      const r = await runScenario(suite, sc);
      results.push(r);
      process.stderr.write(`(${sc.id}) ${r.failures.length ? `FAIL: ${r.failures.join("; ")}` : "ok"} (${r.seconds} s)\n`);
    }
  } finally {
    await cleanup();
  }

  const seconds = Math.round((Date.now() - t0) / 1000);
  process.stdout.write(`\n${table(results)}\n\n`);
  const failed = results.filter((r) => r.failures.length > 0);
  for (const r of failed) for (const f of r.failures) process.stdout.write(`FAIL (${r.id}) ${r.name}: ${f}\n`);
  process.stdout.write(`${failed.length ? `${failed.length} of ${results.length} scenarios failed` : `all ${results.length} scenarios held`} in ${seconds} s\n`);

  mkdirSync(join(REPO, "bench-results"), { recursive: true });
  const commit = await exec("git", ["rev-parse", "HEAD"], { cwd: REPO }).then((r) => r.stdout.trim()).catch(() => null);
  const file = join(REPO, "bench-results", `fault-suite-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify({ commit, seconds, timings: TIMINGS, extraEnv: extraEnv(), results }, null, 2));
  process.stdout.write(`figures written to ${file}\n`);
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`fault-suite: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
