// Prometheus metrics (issue 12) with prom-client: one registry per process. The API counts
// what it accepts and every request it answers; the worker counts deliveries by outcome
// and by TLS, times each SMTP attempt, and counts webhook deliveries; queue depth, the age
// of the oldest due delivery and the webhook backlog are read from the database when
// scraped. Served on /metrics of the HTTPS port with METRICS_TOKEN, or on a loopback
// listener (METRICS_LISTEN); never open by default (api/metrics.ts).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { AttemptEvidence } from "./domain/evidence.ts";

export const registry = new Registry();

const accepted = new Counter({ name: "sealpost_messages_accepted_total", help: "Messages accepted (202) by POST /send and /send/batch", registers: [registry] });

const deliveries = new Counter({
  name: "sealpost_deliveries_total",
  help: "Recipient results recorded by workers, by outcome and by the TLS of the last attempt (verified, unverified, cleartext, or none when no server was reached)",
  labelNames: ["outcome", "tls"] as const,
  registers: [registry],
});

const attemptSeconds = new Histogram({
  name: "sealpost_smtp_attempt_duration_seconds",
  help: "Duration of each SMTP attempt to one host, connect to the reply to the final dot",
  buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers: [registry],
});

const webhooks = new Counter({
  name: "sealpost_webhook_deliveries_total",
  help: "Webhook attempts by what followed: delivered, retried, or failed for good",
  labelNames: ["outcome"] as const,
  registers: [registry],
});

const http = new Counter({
  name: "sealpost_http_requests_total",
  help: "HTTP requests answered by the API, by route (its path template) and status",
  labelNames: ["method", "route", "status"] as const,
  registers: [registry],
});

export const countAccepted = (n: number) => accepted.inc(n);

/** TLS of an attempt as a label: verified, unverified, cleartext; none without an attempt. */
export function tlsLabel(e: Pick<AttemptEvidence, "tls" | "verified"> | undefined): "verified" | "unverified" | "cleartext" | "none" {
  if (!e) return "none";
  return !e.tls ? "cleartext" : e.verified ? "verified" : "unverified";
}

export function countDelivery(outcome: string, tls: ReturnType<typeof tlsLabel>): void {
  deliveries.inc({ outcome, tls });
}

export const observeAttempt = (ms: number) => attemptSeconds.observe(ms / 1000);

export const countWebhook = (outcome: "delivered" | "retried" | "failed") => webhooks.inc({ outcome });

export const countHttp = (method: string, route: string, status: number) => http.inc({ method, route, status: String(status) });

export interface QueueStats {
  /** Deliveries due now and not leased. */
  due: number;
  /** Seconds since the oldest of them became due; 0 when none is. */
  oldestDueSeconds: number;
  /** Webhook deliveries waiting (pending). */
  webhookBacklog: number;
}

let statsOf: (() => Promise<QueueStats>) | null = null;
/**
 * Called when this process serves metrics (METRICS_TOKEN or METRICS_LISTEN): the queue
 * gauges read through `read` when scraped (db/metrics.ts queueStats on the process's pool),
 * and prom-client's process metrics start. A process that serves none pays for neither
 * (the process metrics watch every GC and the event loop).
 */
export function enableMetrics(read: () => Promise<QueueStats>): void {
  if (statsOf === null) collectDefaultMetrics({ register: registry });
  statsOf = read;
}

// One read per scrape serves the three gauges.
let scrape: Promise<QueueStats | null> | null = null;
const current = () => (scrape ??= (statsOf ? statsOf().catch(() => null) : Promise.resolve(null)).finally(() => setImmediate(() => (scrape = null))));

new Gauge({
  name: "sealpost_queue_due", help: "Deliveries due now and not being sent", registers: [registry],
  async collect() { const s = await current(); if (s) this.set(s.due); },
});
new Gauge({
  name: "sealpost_queue_oldest_due_age_seconds", help: "How long the oldest due delivery has waited; 0 when none is due", registers: [registry],
  async collect() { const s = await current(); if (s) this.set(s.oldestDueSeconds); },
});
new Gauge({
  name: "sealpost_webhook_backlog", help: "Webhook deliveries waiting to be sent or retried", registers: [registry],
  async collect() { const s = await current(); if (s) this.set(s.webhookBacklog); },
});
