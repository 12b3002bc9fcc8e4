// The delivery worker: claims due deliveries in batches, runs up to
// WORKER_CONCURRENCY of them at once, records each result under its lease fence, and
// polls again. SIGTERM (stop()) stops claiming, lets in-flight deliveries finish for
// a grace period, then hands back the leases it still holds.
import { hostname } from "node:os";
import { randomBytes, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { Runtime } from "../runtime.ts";
import { ConfigError, type Config } from "../config.ts";
import { claimDeliveries, completeDelivery, releaseLeases, returnUnstarted, type ClaimedDelivery } from "./queue.ts";
import { runDelivery, type DeliveryDeps, type DeliverySettings, type RelaySettings } from "./deliver.ts";
import type pg from "pg";
import type { ContentCipher } from "../security/content-cipher.ts";
import { cachingResolver, createMxResolver, type MxResolverOptions } from "./mx.ts";
import { SmtpSessionPool } from "./smtp-pool.ts";
import { purgeExpired } from "../services/retention.ts";
import { errorFields } from "../logger.ts";

export function relayFromUrl(url: string | undefined): RelaySettings | null {
  if (!url) return null;
  const u = new URL(url);
  const implicitTls = u.protocol === "smtps:";
  const relay: RelaySettings = { host: u.hostname.replace(/^\[|\]$/g, ""), port: u.port ? Number(u.port) : implicitTls ? 465 : 587, implicitTls };
  if (u.username) relay.auth = { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) };
  return relay;
}

function readCaFile(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (err) {
    throw ConfigError.unreadableFile("SMTP_CA_FILE", file, err);
  }
  try {
    new X509Certificate(pem);
  } catch (err) {
    throw new ConfigError(`SMTP_CA_FILE: ${file} is not a PEM certificate: point it at the CA certificate to trust for SMTP peers, or unset it`, { cause: err });
  }
  return pem;
}

export function deliverySettings(config: Config): DeliverySettings {
  return {
    serverPolicy: config.SMTP_TLS_POLICY,
    relay: relayFromUrl(config.SMTP_RELAY_URL),
    mxPort: config.SMTP_MX_PORT,
    heloName: config.SMTP_HELO_NAME ?? hostname(),
    ca: config.SMTP_CA_FILE ? [readCaFile(config.SMTP_CA_FILE)] : [],
    connectTimeoutMs: config.SMTP_CONNECT_TIMEOUT_MS,
    maxRetryMs: config.SMTP_MAX_RETRY,
    retryMinMs: config.SMTP_RETRY_MIN,
    retryMaxMs: config.SMTP_RETRY_MAX,
    maxHostsPerAttempt: 5,
  };
}

/**
 * The SMTP work is done; losing its result to a database blip would send the message
 * again when the lease expires. So the write is retried for about half a minute
 * (a fenced write is idempotent: a retry after a commit whose reply was lost finds the
 * lease gone and returns false, which is logged, not re-sent).
 */
async function recordWithRetries(write: () => Promise<boolean>, stopping: () => boolean, log: Logger): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (err) {
      if (attempt >= 6 || stopping()) throw err;
      log.warn({ attempt, err: errorFields(err) }, "recording a delivery result failed; retrying");
      await new Promise((r) => setTimeout(r, 500 * 2 ** (attempt - 1)));
    }
  }
}

export interface WorkerHandle {
  readonly id: string;
  /** Resolves when the worker has no delivery in flight and nothing is due right now. */
  idle(): Promise<void>;
  stop(graceMs?: number): Promise<void>;
}

export interface WorkerOptions {
  concurrency: number;
  batchSize: number;
  leaseMs: number;
  pollMs: number;
  id?: string;
}

export function createWorker(deps: DeliveryDeps, opts: WorkerOptions, logger: Logger): WorkerHandle {
  const id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const log = logger.child({ component: "worker", worker: id });
  const inFlight = new Set<Promise<void>>();
  let stopping = false;
  let wake: (() => void) | null = null;
  let idleWaiters: Array<() => void> = [];

  const process1 = async (d: ClaimedDelivery) => {
    try {
      const completion = await runDelivery(deps, d, id);
      const ok = await recordWithRetries(() => completeDelivery(deps.pool, completion), () => stopping, log);
      const summary = completion.results.map((r) => r.status);
      if (ok) log.info({ delivery: String(d.id), message: d.messageId, domain: d.domain, attempt: d.attempt, outcomes: summary }, "delivery attempt recorded");
      else log.warn({ delivery: String(d.id), attempt: d.attempt }, "lease lost before the result was recorded; the newer attempt wins");
    } catch (err) {
      // Leave the row leased: it becomes due again when the lease expires.
      log.error({ delivery: String(d.id), err: errorFields(err) }, "delivery attempt failed");
    }
  };

  // Claimed but not yet started: one claim statement serves many deliveries, and a
  // freed slot starts the next delivery at once instead of waiting for a round trip.
  // Kept small (about two rounds of work) because every row in it is already leased.
  const backlog: ClaimedDelivery[] = [];
  const backlogTarget = Math.max(opts.concurrency, Math.min(opts.batchSize, 2 * opts.concurrency));

  const startDelivery = (d: ClaimedDelivery) => {
    const p = process1(d).finally(() => {
      inFlight.delete(p);
      wake?.();
    });
    inFlight.add(p);
  };

  const loop = async () => {
    while (!stopping) {
      let claimed = 0;
      if (backlog.length < opts.concurrency) {
        try {
          const got = await claimDeliveries(deps.pool, id, backlogTarget - backlog.length, opts.leaseMs);
          backlog.push(...got);
          claimed = got.length;
        } catch (err) {
          log.warn({ err: errorFields(err) }, "claiming failed; retrying after the poll interval");
        }
      }
      while (!stopping && inFlight.size < opts.concurrency && backlog.length > 0) startDelivery(backlog.shift()!);
      const nothingToDo = claimed === 0 && backlog.length === 0;
      if (nothingToDo && inFlight.size === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        waiters.forEach((w) => w());
      }
      if (nothingToDo || inFlight.size >= opts.concurrency) {
        // Wait for the poll interval, or until a slot frees up.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, nothingToDo ? opts.pollMs : 60_000);
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
    async stop(graceMs = 25_000) {
      stopping = true;
      wake?.();
      await running;
      // Deliveries claimed but never started go back to the queue at once.
      const notStarted = backlog.splice(0);
      await returnUnstarted(deps.pool, id, notStarted).catch(() => 0);
      const all = Promise.allSettled([...inFlight]);
      const timedOut = await Promise.race([all.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), graceMs).unref())]);
      if (timedOut) {
        const n = await releaseLeases(deps.pool, id).catch(() => 0);
        log.warn({ released: n }, "stopped with deliveries in flight; their leases were handed back");
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
    { concurrency: c.WORKER_CONCURRENCY, batchSize: c.WORKER_BATCH_SIZE, leaseMs: c.WORKER_LEASE_MS, pollMs: c.WORKER_POLL_MS, ...(c.WORKER_ID ? { id: c.WORKER_ID } : {}) },
    o.logger,
  );
  return {
    id: w.id,
    idle: () => w.idle(),
    async stop(graceMs?: number) {
      await w.stop(graceMs);
      await sessions.close();
    },
  };
}

/**
 * What the worker will do, for its start-up line: where mail goes, what it trusts, under
 * which policy. Built from the parsed settings, never from SMTP_RELAY_URL itself, so the
 * relay password cannot reach the log.
 */
export function describeDelivery(config: Config): { summary: string; fields: Record<string, unknown> } {
  const relay = relayFromUrl(config.SMTP_RELAY_URL);
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

/** `sealpost worker`: the delivery worker and the retention sweep. */
export function startWorker(rt: Runtime): WorkerHandle {
  const w = createDeliveryWorker({ config: rt.config, pool: rt.db.pool, cipher: rt.cipher, logger: rt.logger });
  const stopSweep = startRetentionSweep(rt.db.prisma, rt.config, rt.logger);
  const what = describeDelivery(rt.config);
  rt.logger.info({ component: "worker", worker: w.id, ...what.fields }, `delivery worker started: ${what.summary}`);
  return {
    ...w,
    async stop(graceMs?: number) {
      stopSweep();
      await w.stop(graceMs);
    },
  };
}
