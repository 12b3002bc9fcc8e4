// The delivery worker: claims due deliveries in batches, runs up to
// WORKER_CONCURRENCY of them at once, renews the leases it holds, records each result
// under its lease fence (retrying through a database outage), and polls again. SIGTERM
// (stop()) stops claiming, lets in-flight deliveries finish and their results be
// written for a grace period, then hands back the leases it still holds.
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { writeAtomic } from "../files.ts";
import { heartbeatFile } from "../healthcheck.ts";
import type { Logger } from "pino";
import type { Runtime } from "../runtime.ts";
import { readSmtpCaFile, type Config } from "../config.ts";
import { claimDeliveries, completeDelivery, releaseLeases, renewLeases, returnUnstarted, type ClaimedDelivery, type Completion } from "./queue.ts";
import { runDelivery, type DeliveryDeps, type DeliverySettings } from "./deliver.ts";
import type pg from "pg";
import type { ContentCipher } from "../security/content-cipher.ts";
import { cachingResolver, createMxResolver, type MxResolverOptions } from "./mx.ts";
import { SmtpSessionPool } from "./smtp-pool.ts";
import { purgeExpired } from "../services/retention.ts";
import { errorFields } from "../logger.ts";

export function deliverySettings(config: Config): DeliverySettings {
  return {
    serverPolicy: config.SMTP_TLS_POLICY,
    relay: config.SMTP_RELAY_URL ?? null,
    mxPort: config.SMTP_MX_PORT,
    heloName: config.SMTP_HELO_NAME ?? hostname(),
    ca: config.SMTP_CA_FILE ? [readSmtpCaFile(config.SMTP_CA_FILE)] : [],
    connectTimeoutMs: config.SMTP_CONNECT_TIMEOUT_MS,
    maxRetryMs: config.SMTP_MAX_RETRY,
    retryMinMs: config.SMTP_RETRY_MIN,
    retryMaxMs: config.SMTP_RETRY_MAX,
    maxHostsPerAttempt: 5,
  };
}

// A result write is retried from RECORD_RETRY_MIN_MS, doubling up to RECORD_RETRY_MAX_MS,
// for as long as it takes (until shutdown): the SMTP work is done, and a result that is
// never written means the message is sent again. A statement the database rejects for
// what it is (below) cannot succeed by waiting, so it is tried only a few times.
const RECORD_RETRY_MIN_MS = 200;
const RECORD_RETRY_MAX_MS = 2_000;
const REJECTED_STATEMENT_TRIES = 5;

/**
 * The database refused the statement itself: SQLSTATE class 22 (data), 23 (integrity),
 * 42 (syntax or privilege) or 0A (unsupported). Anything else (no connection, shutdown,
 * statement or lock timeout, a full disk, a deadlock) passes once the database is back.
 * Kept here rather than in db/errors.ts on purpose: the API answers 503 only for what it
 * knows to be an outage, while the worker must keep trying through anything that is not
 * its own statement's fault.
 */
function isStatementRejected(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^(22|23|42|0A)[0-9A-Z]{3}$/.test(code);
}

export interface WorkerHandle {
  readonly id: string;
  /** Resolves when the worker has no delivery in flight and nothing is due right now. */
  idle(): Promise<void>;
  /** When the claim loop last went round (epoch ms): at least once a minute while it runs. */
  lastLoopAt(): number;
  stop(graceMs?: number): Promise<void>;
}

export interface WorkerOptions {
  concurrency: number;
  batchSize: number;
  /** Lease of a delivery whose SMTP work has started (WORKER_LEASE_MS). */
  leaseMs: number;
  /** Lease of a delivery claimed but not started yet (WORKER_CLAIM_LEASE_MS). */
  claimLeaseMs: number;
  /** Every lease the worker holds is renewed this often (WORKER_LEASE_RENEW_MS). */
  renewMs: number;
  pollMs: number;
  id?: string;
}

/** A delivery this worker holds a lease on, and what it is doing with it. */
interface Held {
  delivery: ClaimedDelivery;
  /** waiting: claimed, in the backlog; sending: SMTP work started; recording: writing the result. */
  phase: "waiting" | "sending" | "recording";
}

export function createWorker(deps: DeliveryDeps, opts: WorkerOptions, logger: Logger): WorkerHandle {
  const id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const log = logger.child({ component: "worker", worker: id });
  const inFlight = new Set<Promise<void>>();
  const held = new Map<bigint, Held>();
  let stopping = false;
  /** Set by stop(): result writes are retried until then. */
  let stopDeadline: number | null = null;
  let wake: (() => void) | null = null;
  let idleWaiters: Array<() => void> = [];
  /** Deliveries whose result write has failed and is being retried. */
  let unrecorded = 0;

  // Pauses of result-write retries; cut short when the database answers again or stop() starts.
  const pauses = new Set<() => void>();
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      function done() {
        clearTimeout(timer);
        pauses.delete(done);
        resolve();
      }
      pauses.add(done);
    });
  const resumeRetries = () => [...pauses].forEach((p) => p());
  let unreachableSince: number | null = null;
  const databaseAnswered = () => {
    if (unreachableSince !== null) {
      log.info({ unreachableMs: Date.now() - unreachableSince }, "the database answers again");
      unreachableSince = null;
    }
    resumeRetries();
  };
  const databaseFailed = () => {
    unreachableSince ??= Date.now();
  };

  /**
   * Writes the result, retrying until it is written, refused by the fence (false), or
   * stop()'s grace period is over ("unrecorded"). A fenced write is idempotent: a retry
   * after a commit whose reply was lost finds the lease gone and returns false. Meanwhile
   * the heartbeat keeps the row's lease alive, so nobody else claims it.
   */
  const record = async (c: Completion): Promise<boolean | "unrecorded"> => {
    let tries = 0;
    let delay = RECORD_RETRY_MIN_MS;
    const started = Date.now();
    const fields = () => ({ delivery: String(c.delivery.id), message: c.delivery.messageId, attempt: c.delivery.attempt, tries, waitedMs: Date.now() - started });
    try {
      for (;;) {
        try {
          const ok = await completeDelivery(deps.pool, c);
          if (tries > 0) log.info(fields(), "delivery result recorded after the database came back");
          return ok;
        } catch (err) {
          tries++;
          if (tries === 1) unrecorded++;
          const rejected = isStatementRejected(err);
          if (!rejected) databaseFailed();
          if (rejected && tries >= REJECTED_STATEMENT_TRIES) throw err;
          if (stopDeadline !== null && Date.now() >= stopDeadline) return "unrecorded";
          // Logged on the 1st, 2nd, 4th, 8th ... failure: an outage is visible without flooding the log.
          if ((tries & (tries - 1)) === 0) log.warn({ ...fields(), err: errorFields(err) }, "recording a delivery result failed; retrying until the database answers");
          await pause(stopDeadline === null ? delay : Math.min(delay, stopDeadline - Date.now()));
          if (stopDeadline !== null && Date.now() >= stopDeadline) return "unrecorded";
          delay = Math.min(delay * 2, RECORD_RETRY_MAX_MS);
        }
      }
    } finally {
      if (tries > 0) unrecorded--;
    }
  };

  const process1 = async (h: Held) => {
    const d = h.delivery;
    try {
      const completion = await runDelivery(deps, d, id);
      h.phase = "recording";
      const written = await record(completion);
      const summary = completion.results.map((r) => r.status);
      if (written === true) log.info({ delivery: String(d.id), message: d.messageId, domain: d.domain, attempt: d.attempt, outcomes: summary }, "delivery attempt recorded");
      else if (written === false) log.warn({ delivery: String(d.id), attempt: d.attempt }, "lease lost before the result was recorded; the newer attempt wins");
      else {
        log.error(
          { delivery: String(d.id), message: d.messageId, domain: d.domain, attempt: d.attempt, outcomes: summary },
          "stopped before this delivery's result could be recorded (database unavailable); it will be attempted again when its lease runs out",
        );
      }
    } catch (err) {
      // Leave the row leased (and no longer renewed): it becomes due again when the lease expires.
      log.error({ delivery: String(d.id), err: errorFields(err) }, "delivery attempt failed");
    } finally {
      if (held.get(d.id) === h) held.delete(d.id);
    }
  };

  // Claimed but not yet started: one claim statement serves many deliveries, and a
  // freed slot starts the next delivery at once instead of waiting for a claim round
  // trip. Kept small (about two rounds of work), and under the short claim lease, so a
  // worker that dies leaves these rows waiting seconds rather than a whole lease.
  const backlog: ClaimedDelivery[] = [];
  const backlogTarget = Math.max(opts.concurrency, Math.min(opts.batchSize, 2 * opts.concurrency));

  const startDelivery = (d: ClaimedDelivery) => {
    const h: Held = { delivery: d, phase: "sending" };
    held.set(d.id, h);
    const p = process1(h).finally(() => {
      inFlight.delete(p);
      wake?.();
    });
    inFlight.add(p);
  };

  /**
   * Starts up to `free` deliveries from the backlog. Their leases become full delivery
   * leases first, in one statement; a row that is no longer ours (its claim lease ran out
   * and another worker took it) is dropped, and none is started while the database does
   * not answer. Returns false when that statement failed.
   */
  const startFromBacklog = async (free: number): Promise<boolean> => {
    const batch = backlog.splice(0, free);
    let ours: Set<bigint>;
    try {
      ours = await renewLeases(deps.pool, id, batch.map((delivery) => ({ delivery, leaseMs: opts.leaseMs })));
    } catch (err) {
      backlog.unshift(...batch);
      databaseFailed();
      log.warn({ err: errorFields(err) }, "starting deliveries failed; retrying after the poll interval");
      return false;
    }
    databaseAnswered();
    for (const d of batch) {
      if (!ours.has(d.id)) {
        held.delete(d.id);
        log.warn({ delivery: String(d.id), attempt: d.attempt }, "a claimed delivery was taken over before it started; dropped");
      } else if (stopping) backlog.push(d); // handed back by stop()
      else startDelivery(d);
    }
    return true;
  };

  // The heartbeat: one statement renews every lease this worker holds, the full lease for
  // deliveries under way (a peer slower than the lease; a result waiting for the
  // database), the claim lease for the backlog.
  let renewing = false;
  const renewAll = async () => {
    if (renewing || held.size === 0) return;
    renewing = true;
    const snapshot = [...held.values()].map((h) => ({ h, phase: h.phase }));
    try {
      const ours = await renewLeases(deps.pool, id, snapshot.map(({ h, phase }) => ({ delivery: h.delivery, leaseMs: phase === "waiting" ? opts.claimLeaseMs : opts.leaseMs })));
      databaseAnswered();
      for (const { h, phase } of snapshot) {
        // A row written since the snapshot is simply gone; only a row in the same phase
        // as when the renewal was sent is known lost.
        if (ours.has(h.delivery.id) || held.get(h.delivery.id) !== h || h.phase !== phase) continue;
        if (phase === "waiting") {
          const i = backlog.indexOf(h.delivery);
          if (i >= 0) backlog.splice(i, 1);
          held.delete(h.delivery.id);
          log.warn({ delivery: String(h.delivery.id), attempt: h.delivery.attempt }, "a claimed delivery was taken over before it started; dropped");
        } else if (phase === "sending") {
          held.delete(h.delivery.id);
          log.warn({ delivery: String(h.delivery.id), attempt: h.delivery.attempt }, "lease lost while the delivery is under way; its result will be refused");
        }
      }
    } catch (err) {
      if (unreachableSince === null) log.warn({ held: snapshot.length, err: errorFields(err) }, "renewing leases failed; retrying at the next renewal");
      databaseFailed();
    } finally {
      renewing = false;
    }
  };
  const heartbeat = setInterval(() => void renewAll(), opts.renewMs);
  heartbeat.unref();

  let lastLoopAt = Date.now();
  const loop = async () => {
    while (!stopping) {
      lastLoopAt = Date.now();
      let claimed = 0;
      let failed = false;
      // While a result waits for the database, nothing new is claimed: once the database
      // is back, this worker's results are written before it takes more work.
      if (unrecorded === 0 && backlog.length < opts.concurrency) {
        try {
          const got = await claimDeliveries(deps.pool, id, backlogTarget - backlog.length, opts.claimLeaseMs, held.keys());
          for (const d of got) held.set(d.id, { delivery: d, phase: "waiting" });
          backlog.push(...got);
          claimed = got.length;
          databaseAnswered();
        } catch (err) {
          failed = true;
          databaseFailed();
          log.warn({ err: errorFields(err) }, "claiming failed; retrying after the poll interval");
        }
      }
      const free = opts.concurrency - inFlight.size;
      if (!stopping && free > 0 && backlog.length > 0 && !(await startFromBacklog(free))) failed = true;
      const nothingToDo = claimed === 0 && backlog.length === 0;
      if (nothingToDo && inFlight.size === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        waiters.forEach((w) => w());
      }
      if (stopping) break;
      if (nothingToDo || failed || inFlight.size >= opts.concurrency) {
        // Wait for the poll interval, or until a slot frees up.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, nothingToDo || failed ? opts.pollMs : 60_000);
          function done() {
            clearTimeout(timer);
            wake = null;
            resolve();
          }
          wake = done;
        });
      }
    }
  };
  const running = loop();

  return {
    id,
    idle() {
      return new Promise((resolve) => idleWaiters.push(resolve));
    },
    lastLoopAt: () => lastLoopAt,
    async stop(graceMs = 25_000) {
      stopping = true;
      stopDeadline = Date.now() + graceMs;
      wake?.();
      resumeRetries(); // retry now, then within the grace period
      await running;
      // Deliveries claimed but never started go back to the queue at once.
      const notStarted = backlog.splice(0);
      for (const d of notStarted) held.delete(d.id);
      await returnUnstarted(deps.pool, id, notStarted).catch((err: unknown) => {
        log.warn({ deliveries: notStarted.length, err: errorFields(err) }, "could not hand back deliveries claimed but not started; they are due again when their claim lease runs out");
      });
      const all = Promise.allSettled([...inFlight]);
      // Result writes give up at the deadline itself; a moment more lets them say so.
      const remaining = Math.max(0, stopDeadline - Date.now()) + 100;
      const timedOut = await Promise.race([all.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), remaining).unref())]);
      clearInterval(heartbeat);
      if (timedOut) {
        const left = [...held.values()];
        const byPhase = (phase: Held["phase"]) => left.filter((h) => h.phase === phase).map((h) => String(h.delivery.id));
        const n = await releaseLeases(deps.pool, id).catch(() => null);
        log.warn(
          { released: n, sending: byPhase("sending"), recording: byPhase("recording") },
          n === null
            ? "stopped with deliveries in flight; handing back their leases failed, so they are due again when their leases run out"
            : "stopped with deliveries in flight; their leases were handed back",
        );
      }
      idleWaiters.forEach((w) => w());
      log.info({}, "worker stopped");
    },
  };
}

/** Purges expired content now and every RETENTION_SWEEP_INTERVAL; returns a stop function. */
export function startRetentionSweep(db: Runtime["db"]["prisma"], config: Config, logger: Logger): () => void {
  const log = logger.child({ component: "retention" });
  const sweep = async () => {
    try {
      const r = await purgeExpired(db, { retentionDays: config.RETENTION_DAYS, now: new Date() });
      if (r.messagesPurged || r.idempotencyRecordsDeleted) log.info(r, "expired content purged");
    } catch (err) {
      log.warn({ err: errorFields(err) }, "retention sweep failed; will retry");
    }
  };
  void sweep();
  const timer = setInterval(sweep, config.RETENTION_SWEEP_INTERVAL);
  timer.unref();
  return () => clearInterval(timer);
}

export interface DeliveryWorkerOptions {
  config: Config;
  /** The process's pool (shared with Prisma). */
  pool: pg.Pool;
  cipher: ContentCipher;
  logger: Logger;
  /** Resolver tuning beyond DNS_SERVERS (tests shorten timeouts). */
  resolver?: Omit<MxResolverOptions, "servers">;
  /** One SMTP attempt; by default over an SmtpSessionPool with an idle session per slot. */
  attempt?: DeliveryDeps["attempt"];
}

/** A worker wired from the configuration as `sealpost worker` runs it; stop() also closes its SMTP sessions. */
export function createDeliveryWorker(o: DeliveryWorkerOptions): WorkerHandle {
  const c = o.config;
  const resolver = createMxResolver({ ...o.resolver, ...(c.DNS_SERVERS ? { servers: c.DNS_SERVERS } : {}) });
  const sessions = new SmtpSessionPool({ maxIdlePerDestination: c.WORKER_CONCURRENCY });
  const w = createWorker(
    {
      pool: o.pool,
      cipher: o.cipher,
      settings: deliverySettings(c),
      resolveMx: cachingResolver((d) => resolver.resolve(d), c.DNS_CACHE_TTL),
      attempt: o.attempt ?? ((a) => sessions.attempt(a)),
    },
    {
      concurrency: c.WORKER_CONCURRENCY,
      batchSize: c.WORKER_BATCH_SIZE,
      leaseMs: c.WORKER_LEASE_MS,
      claimLeaseMs: c.WORKER_CLAIM_LEASE_MS,
      renewMs: c.WORKER_LEASE_RENEW_MS,
      pollMs: c.WORKER_POLL_MS,
      ...(c.WORKER_ID ? { id: c.WORKER_ID } : {}),
    },
    o.logger,
  );
  return {
    id: w.id,
    idle: () => w.idle(),
    lastLoopAt: () => w.lastLoopAt(),
    async stop(graceMs?: number) {
      await w.stop(graceMs);
      await sessions.close();
    },
  };
}

/**
 * What the worker will do, for its start-up line: where mail goes, what it trusts, under
 * which policy. Built from the parsed relay's host and port, never its credentials, so the
 * relay password cannot reach the log.
 */
export function describeDelivery(config: Config): { summary: string; fields: Record<string, unknown> } {
  const relay = config.SMTP_RELAY_URL;
  const route = relay
    ? `through the relay ${relay.host}:${relay.port} (${relay.implicitTls ? "implicit TLS" : "STARTTLS"}, ${relay.auth ? "AUTH configured" : "no AUTH"})`
    : `direct to each domain's MX on port ${config.SMTP_MX_PORT} (${config.DNS_SERVERS ? `DNS servers ${config.DNS_SERVERS.join(", ")}` : "system DNS resolvers"})`;
  const ca = config.SMTP_CA_FILE ? `extra trusted CA ${config.SMTP_CA_FILE}` : "no extra CA (system roots)";
  return {
    summary: `mail goes ${route}; ${ca}; server TLS policy ${config.SMTP_TLS_POLICY}; up to ${config.WORKER_CONCURRENCY} deliveries at once`,
    fields: {
      route: relay ? "relay" : "mx",
      ...(relay ? { relay: `${relay.host}:${relay.port}`, relayAuth: Boolean(relay.auth) } : { mxPort: config.SMTP_MX_PORT, dnsServers: config.DNS_SERVERS ?? "system" }),
      smtpCaFile: config.SMTP_CA_FILE ?? null,
      tlsPolicy: config.SMTP_TLS_POLICY,
      concurrency: config.WORKER_CONCURRENCY,
    },
  };
}

/**
 * Writes when the claim loop last went round to DATA_DIR/worker.heartbeat every 10 s,
 * for `sealpost healthcheck worker` (a container health check). The time is the loop's,
 * not the timer's, so a loop that is stuck reads as stale while the process lives on.
 */
function startHeartbeat(config: Config, w: WorkerHandle, logger: Logger): () => void {
  const file = heartbeatFile(config);
  let warned = false;
  const beat = () => {
    try {
      mkdirSync(dirname(file), { recursive: true });
      writeAtomic(file, JSON.stringify({ at: w.lastLoopAt(), pid: process.pid, worker: w.id }) + "\n", 0o644);
    } catch (err) {
      if (!warned) logger.warn({ file, err: errorFields(err) }, "cannot write the worker heartbeat file; `sealpost healthcheck worker` will report unhealthy");
      warned = true;
    }
  };
  beat();
  const timer = setInterval(beat, 10_000);
  timer.unref();
  return () => {
    clearInterval(timer);
    rmSync(file, { force: true });
  };
}

/** `sealpost worker`: the delivery worker and the retention sweep. */
export function startWorker(rt: Runtime): WorkerHandle {
  const w = createDeliveryWorker({ config: rt.config, pool: rt.db.pool, cipher: rt.cipher, logger: rt.logger });
  const stopSweep = startRetentionSweep(rt.db.prisma, rt.config, rt.logger);
  const what = describeDelivery(rt.config);
  rt.logger.info({ component: "worker", worker: w.id, ...what.fields }, `delivery worker started: ${what.summary}`);
  const stopHeartbeat = startHeartbeat(rt.config, w, rt.logger);
  return {
    ...w,
    async stop(graceMs?: number) {
      stopSweep();
      await w.stop(graceMs);
      stopHeartbeat();
    },
  };
}
