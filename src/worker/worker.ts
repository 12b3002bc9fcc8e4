// The delivery worker wired from the configuration, as `sealpost worker` runs it: the MX
// resolver, the SMTP session pool and the delivery settings around a claim loop
// (claim-loop.ts), plus what the process adds around it: the heartbeat file for
// `sealpost healthcheck worker`, the retention sweep and the start-up line.
import { mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { writeAtomic } from "../files.ts";
import { heartbeatFile } from "../healthcheck.ts";
import type { Logger } from "pino";
import type { Runtime } from "../runtime.ts";
import { heloName, readCaFile, type Config } from "../config.ts";
import { DkimSigner } from "./dkim.ts";
import { ClaimLoop, type WorkerHandle } from "./claim-loop.ts";
import type { DeliveryDeps, DeliverySettings } from "./deliver.ts";
import type pg from "pg";
import type { ContentCipher } from "../security/content-cipher.ts";
import { cachingResolver, createMxResolver, createTxtResolver, type MxResolverOptions } from "./mx.ts";
import { SmtpSessionPool } from "./smtp-pool.ts";
import { DestinationGate, destinationSettings } from "./destinations.ts";
import { EnvelopeSenders } from "./envelope-sender.ts";
import { purgeExpired } from "../services/retention.ts";
import { errorFields } from "../logger.ts";
import tls from "node:tls";
import { WebhookSender } from "./webhook-sender.ts";
import { webhookTargetPolicy } from "../security/webhook-targets.ts";
import { MtaStsPolicies, policyHostGuard } from "./mta-sts.ts";
import { TlsPolicyMap } from "./policy-layers.ts";
import { createDaneResolver, type DaneResolver } from "./dane.ts";
import { DomainCache } from "./domain-cache.ts";
import { startTlsReportSender, type TlsReportSenderOptions } from "./tls-report-sender.ts";
import { attemptDelivery } from "./smtp-attempt.ts";
import { reportSettings } from "../services/tls-reports.ts";
import { findTlsPolicyRules } from "../db/tls-policies.ts";

export type { WorkerHandle } from "./claim-loop.ts";

/** SMTP_CA_FILE certificates already added to Node's default store (once per process). */
const addedToDefaultStore = new Set<string>();

function deliverySettings(config: Config): DeliverySettings {
  return {
    serverPolicy: config.SMTP_TLS_POLICY,
    relay: config.SMTP_RELAY_URL ?? null,
    mxPort: config.SMTP_MX_PORT,
    heloName: heloName(config),
    ca: config.SMTP_CA_FILE ? [readCaFile("SMTP_CA_FILE", config.SMTP_CA_FILE)] : [],
    connectTimeoutMs: config.SMTP_CONNECT_TIMEOUT_MS,
    maxRetryMs: config.SMTP_MAX_RETRY,
    retryMinMs: config.SMTP_RETRY_MIN,
    retryMaxMs: config.SMTP_RETRY_MAX,
    maxHostsPerAttempt: 5,
  };
}

/** Purges expired content now and every RETENTION_SWEEP_INTERVAL; returns a stop function. */
function startRetentionSweep(db: Runtime["db"]["prisma"], config: Config, logger: Logger): () => void {
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
  const settings = deliverySettings(c);
  const tlsMap = new TlsPolicyMap(
    c.SMTP_TLS_POLICY_MAP,
    async () => (await findTlsPolicyRules(o.pool)).map((r) => ({ pattern: r.pattern, mx: r.mx, fingerprints: r.fingerprints, origin: "api" as const })),
    Math.min(c.DNS_CACHE_TTL, 60_000),
  );
  const dane = c.DANE_RESOLVER && !c.SMTP_RELAY_URL ? cachedTlsa(createDaneResolver(c.DANE_RESOLVER), c.DNS_CACHE_TTL) : undefined;
  let mtaSts: MtaStsPolicies | undefined;
  if (c.MTA_STS === "on" && !c.SMTP_RELAY_URL) {
    // mailauth fetches policies with Node's default trust store: SMTP_CA_FILE joins it, as
    // it joins the SMTP sessions', for a private CA that also issues the policy hosts'.
    const added = settings.ca.filter((pem) => !addedToDefaultStore.has(pem));
    if (added.length > 0) {
      tls.setDefaultCACertificates([...tls.getCACertificates("default"), ...added]);
      for (const pem of added) addedToDefaultStore.add(pem);
    }
    const txt = createTxtResolver({ ...o.resolver, ...(c.DNS_SERVERS ? { servers: c.DNS_SERVERS } : {}) });
    mtaSts = new MtaStsPolicies({ pool: o.pool, resolve: policyHostGuard(txt.resolve, webhookTargetPolicy(c)), ttlMs: c.DNS_CACHE_TTL, fetchTimeoutMs: c.MTA_STS_TIMEOUT, logger: o.logger });
  }
  const w = new ClaimLoop(
    {
      pool: o.pool,
      cipher: o.cipher,
      settings,
      layers: { rules: () => tlsMap.rules(), ...(mtaSts ? { mtaSts } : {}), ...(dane ? { dane } : {}) },
      resolveMx: cachingResolver((d) => resolver.resolve(d), c.DNS_CACHE_TTL),
      attempt: o.attempt ?? ((a) => sessions.attempt(a)),
      destinations: new DestinationGate(destinationSettings(c), o.logger),
      ...(c.DKIM_SIGNING === "on" ? { signer: new DkimSigner(o.pool, o.cipher) } : {}),
      envelopeSenders: new EnvelopeSenders(o.pool, o.cipher),
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
  ).start();
  const hooks = new WebhookSender({
    pool: o.pool,
    cipher: o.cipher,
    logger: o.logger,
    workerId: w.id,
    concurrency: c.WEBHOOK_CONCURRENCY,
    pollMs: c.WORKER_POLL_MS,
    timeoutMs: c.WEBHOOK_TIMEOUT_MS,
    policy: webhookTargetPolicy(c),
    // Always explicit: the process's default store may hold SMTP_CA_FILE (for MTA-STS), which webhooks must not trust.
    ca: [...tls.rootCertificates, ...(c.WEBHOOK_CA_FILE ? [readCaFile("WEBHOOK_CA_FILE", c.WEBHOOK_CA_FILE)] : [])],
  }).start();
  return {
    id: w.id,
    idle: () => w.idle(),
    lastLoopAt: () => w.lastLoopAt(),
    async stop(graceMs?: number) {
      await Promise.all([w.stop(graceMs), hooks.stop(graceMs ?? c.SHUTDOWN_GRACE)]);
      await sessions.close();
    },
  };
}

/** How the worker sends TLS reports: DNS_SERVERS, the webhooks' target rules, the SMTP trust store. */
export function tlsReportSenderOptions(rt: Pick<Runtime, "config" | "db" | "logger" | "cipher">): TlsReportSenderOptions {
  const c = rt.config;
  const ca = c.SMTP_CA_FILE ? [readCaFile("SMTP_CA_FILE", c.SMTP_CA_FILE)] : [];
  const mx = createMxResolver(c.DNS_SERVERS ? { servers: c.DNS_SERVERS } : {});
  const signer = c.DKIM_SIGNING === "on" ? new DkimSigner(rt.db.pool, rt.cipher) : null;
  return {
    mail: {
      from: c.TLS_REPORT_FROM ?? `tlsrpt@${heloName(c).toLowerCase()}`,
      resolveMx: (d) => mx.resolve(d),
      attempt: (a) => attemptDelivery({ ...a, ca }),
      ...(signer ? { sign: (raw: Buffer, from: string) => signer.sign(raw, from) } : {}),
      mxPort: c.SMTP_MX_PORT,
      heloName: heloName(c),
      connectTimeoutMs: c.SMTP_CONNECT_TIMEOUT_MS,
    },
    pool: rt.db.pool,
    logger: rt.logger,
    settings: reportSettings(c),
    dns: createTxtResolver(c.DNS_SERVERS ? { servers: c.DNS_SERVERS } : {}),
    policy: webhookTargetPolicy(c),
    ca: [...tls.rootCertificates, ...ca],
    timeoutMs: c.WEBHOOK_TIMEOUT_MS,
  };
}

/** TLSA answers reused for DNS_CACHE_TTL per host and shared by concurrent deliveries; a deferral is asked again. */
function cachedTlsa(r: DaneResolver, ttlMs: number): Pick<DaneResolver, "tlsa"> {
  const cache = new DomainCache(ttlMs, (host) => r.tlsa(host), { forget: (v) => v.kind === "defer" });
  return { tlsa: (host) => cache.of(host.toLowerCase()) };
}

/**
 * What the worker will do, for its start-up line: where mail goes, what it trusts, under
 * which policy. Built from the parsed relay's host and port, never its credentials, so the
 * relay password cannot reach the log.
 */
function describeDelivery(config: Config): { summary: string; fields: Record<string, unknown> } {
  const relay = config.SMTP_RELAY_URL;
  const route = relay
    ? `through the relay ${relay.host}:${relay.port} (${relay.implicitTls ? "implicit TLS" : "STARTTLS"}, ${relay.auth ? "AUTH configured" : "no AUTH"})`
    : `direct to each domain's MX on port ${config.SMTP_MX_PORT} (${config.DNS_SERVERS ? `DNS servers ${config.DNS_SERVERS.join(", ")}` : "system DNS resolvers"})`;
  const ca = config.SMTP_CA_FILE ? `extra trusted CA ${config.SMTP_CA_FILE}` : "no extra CA (system roots)";
  return {
    summary:
      `mail goes ${route}; ${ca}; server TLS policy ${config.SMTP_TLS_POLICY}` +
      (relay ? "" : `; MTA-STS ${config.MTA_STS}; DANE ${config.DANE_RESOLVER ? `through the validating resolver ${config.DANE_RESOLVER.host}:${config.DANE_RESOLVER.port}` : "off"}`) +
      `; ${config.SMTP_TLS_POLICY_MAP.length} TLS policy map rules in the configuration; up to ${config.WORKER_CONCURRENCY} deliveries at once`,
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
  const stopReports = rt.config.TLS_REPORTS_SEND === "on" ? startTlsReportSender(tlsReportSenderOptions(rt)) : () => {};
  const what = describeDelivery(rt.config);
  rt.logger.info({ component: "worker", worker: w.id, ...what.fields }, `delivery worker started: ${what.summary}`);
  const stopHeartbeat = startHeartbeat(rt.config, w, rt.logger);
  return {
    ...w,
    async stop(graceMs?: number) {
      stopSweep();
      stopReports();
      await w.stop(graceMs);
      stopHeartbeat();
    },
  };
}
