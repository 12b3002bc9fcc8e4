// Sends webhook deliveries from the Postgres queue (issue 12), per the Standard Webhooks
// specification: a JSON body {type, created_at, data}, signed with the endpoint's secret
// (and, for a day after a rotation, its previous one too), at least once. A delivery that
// fails is retried on the specification's schedule, later when the receiver asks for it
// with Retry-After; 410 Gone disables the endpoint at once, and so do five days of nothing
// but failures. Each attempt is recorded behind the delivery's lease (db/webhooks.ts).
import type pg from "pg";
import type { Logger } from "pino";
import { claimWebhookDeliveries, recordWebhookAttempt, releaseWebhookLeases, type ClaimedWebhook, type WebhookAttemptResult } from "../db/webhooks.ts";
import { errorFields } from "../logger.ts";
import { countWebhook } from "../metrics.ts";
import type { ContentCipher } from "../security/content-cipher.ts";
import { signWebhook, webhookSecretAad } from "../security/webhook-secrets.ts";
import { eventView } from "../services/events.ts";
import type { TargetPolicy } from "../security/webhook-targets.ts";
import { postWebhook } from "./webhook-http.ts";

/** Delay after each failed attempt (Standard Webhooks' suggested schedule): attempt n+1 waits RETRY_SCHEDULE_MS[n-1]. */
export const RETRY_SCHEDULE_MS = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 50_400_000, 72_000_000, 86_400_000];
/** Attempts in all: the first, then one per step of the schedule. */
export const MAX_WEBHOOK_ATTEMPTS = RETRY_SCHEDULE_MS.length + 1;
/** An endpoint whose every attempt failed for this long is disabled. */
const DISABLE_AFTER_FAILING_MS = 5 * 86_400_000;
/**
 * A claimed delivery's lease: the request's timeout plus this, for signing and recording.
 * A worker that dies mid-request leaves the delivery due again this long after its claim.
 */
const WEBHOOK_LEASE_MARGIN_MS = 10_000;
/** A Retry-After beyond this is taken as this. */
const MAX_RETRY_AFTER_MS = 86_400_000;

export interface WebhookSenderOptions {
  pool: pg.Pool;
  cipher: ContentCipher;
  logger: Logger;
  workerId: string;
  concurrency: number;
  pollMs: number;
  timeoutMs: number;
  policy: TargetPolicy;
  ca?: string[] | undefined;
}

/** What follows an attempt that got `status` (or none) at `at`: pure, so the schedule is tested on its own. */
export function nextStep(d: Pick<ClaimedWebhook, "attempt" | "failingSince">, status: number | null, retryAfterSeconds: number | null, at: Date):
  Pick<WebhookAttemptResult, "state" | "retryAt" | "disable"> {
  if (status !== null && status >= 200 && status < 300) return { state: "delivered", retryAt: null, disable: null };
  if (status === 410) return { state: "failed", retryAt: null, disable: "the endpoint answered 410 Gone" };
  const since = d.failingSince ?? at;
  if (at.getTime() - since.getTime() >= DISABLE_AFTER_FAILING_MS)
    return { state: "failed", retryAt: null, disable: `every attempt failed for 5 days, since ${since.toISOString()}` };
  if (d.attempt >= MAX_WEBHOOK_ATTEMPTS) return { state: "failed", retryAt: null, disable: null };
  const scheduled = RETRY_SCHEDULE_MS[d.attempt - 1]!;
  const asked = retryAfterSeconds === null ? 0 : Math.min(retryAfterSeconds * 1000, MAX_RETRY_AFTER_MS);
  return { state: "pending", retryAt: new Date(at.getTime() + Math.max(scheduled, asked)), disable: null };
}

/** The body and the id of what a delivery sends. */
function payloadOf(d: ClaimedWebhook): { id: string; body: string } {
  if (!d.event) return { id: `whtest_${d.id}`, body: JSON.stringify({ type: "webhook.test", created_at: d.createdAt.toISOString(), data: { endpoint_id: d.endpointId } }) };
  const { id, ...rest } = eventView(d.event);
  return { id, body: JSON.stringify(rest) };
}

export class WebhookSender {
  readonly #o: WebhookSenderOptions;
  readonly #log: Logger;
  readonly #inFlight = new Set<Promise<void>>();
  #running = false;
  #timer: NodeJS.Timeout | null = null;
  #busy = false;
  #again = false;
  #loop: Promise<void> = Promise.resolve();

  constructor(o: WebhookSenderOptions) {
    this.#o = o;
    this.#log = o.logger.child({ component: "webhooks" });
  }

  start(): this {
    this.#running = true;
    this.#schedule(0);
    return this;
  }

  #schedule(ms: number): void {
    if (!this.#running || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#loop = this.#round();
    }, ms);
  }

  /** A slot came free: go round now rather than at the next poll. */
  #wake(): void {
    if (!this.#running) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#schedule(0);
  }

  /** Claims what fits in the free slots and sends it; comes round again at once while there may be more, else after pollMs. */
  async #round(): Promise<void> {
    this.#busy = true;
    const free = this.#o.concurrency - this.#inFlight.size;
    let claimed: ClaimedWebhook[] = [];
    if (free > 0) {
      try {
        claimed = await claimWebhookDeliveries(this.#o.pool, this.#o.workerId, free, this.#o.timeoutMs + WEBHOOK_LEASE_MARGIN_MS);
      } catch (err) {
        this.#log.warn({ err: errorFields(err) }, "cannot claim webhook deliveries; will retry");
      }
    }
    for (const d of claimed) {
      const p = this.#send(d).finally(() => {
        this.#inFlight.delete(p);
        this.#wake();
      });
      this.#inFlight.add(p);
    }
    this.#busy = false;
    const full = this.#inFlight.size >= this.#o.concurrency;
    if (this.#again && !full) this.#schedule(0);
    else if (!full) this.#schedule(claimed.length > 0 && claimed.length === free ? 0 : this.#o.pollMs);
    this.#again = false; // with every slot busy, the next completion wakes the loop
  }

  async #send(d: ClaimedWebhook): Promise<void> {
    const startedAt = new Date();
    const t0 = performance.now();
    let result: Pick<WebhookAttemptResult, "statusCode" | "error" | "ip"> & { retryAfterSeconds: number | null };
    try {
      const { id, body } = payloadOf(d);
      const ts = Math.floor(startedAt.getTime() / 1000);
      const signatures = this.#secretsOf(d, startedAt).map((s) => signWebhook(s, id, ts, body));
      const r = await postWebhook(new URL(d.url), {
        "content-type": "application/json",
        "user-agent": "sealpost-webhooks/1",
        "webhook-id": id,
        "webhook-timestamp": String(ts),
        "webhook-signature": signatures.join(" "),
      }, body, { policy: this.#o.policy, timeoutMs: this.#o.timeoutMs, ca: this.#o.ca });
      result = { statusCode: r.status, error: r.error, ip: r.ip, retryAfterSeconds: r.retryAfterSeconds };
    } catch (err) {
      // The secret did not decrypt (a data key this process lacks), or the event is gone: retried like a failure.
      result = { statusCode: null, error: (err as Error).message, ip: null, retryAfterSeconds: null };
    }
    const step = nextStep(d, result.error === null ? result.statusCode : null, result.retryAfterSeconds, startedAt);
    const outcome: WebhookAttemptResult = {
      delivery: d, workerId: this.#o.workerId, startedAt, durationMs: Math.round(performance.now() - t0),
      ip: result.ip, statusCode: result.statusCode, error: result.error, ...step,
    };
    try {
      const written = await recordWebhookAttempt(this.#o.pool, outcome);
      const fields = { delivery: d.id, endpoint: d.endpointId, attempt: d.attempt, status: result.statusCode, state: step.state };
      if (written) countWebhook(step.state === "pending" ? "retried" : step.state);
      if (!written) this.#log.warn(fields, "webhook attempt not recorded: its lease was lost");
      else if (step.disable) this.#log.warn({ ...fields, reason: step.disable }, "webhook endpoint disabled");
      else if (step.state !== "delivered") this.#log.info({ ...fields, error: result.error, retryAt: step.retryAt }, "webhook attempt failed");
    } catch (err) {
      this.#log.warn({ delivery: d.id, err: errorFields(err) }, "cannot record a webhook attempt; it will be sent again once its lease ends");
    }
  }

  /** The secrets to sign with: the current one, and the previous one while it is still valid. */
  #secretsOf(d: ClaimedWebhook, at: Date): string[] {
    const current = this.#o.cipher.decrypt(d.secret, webhookSecretAad(d.endpointId, "secret")).toString("utf8");
    if (!d.previousSecret || !d.previousSecretUntil || d.previousSecretUntil <= at) return [current];
    return [current, this.#o.cipher.decrypt(d.previousSecret, webhookSecretAad(d.endpointId, "previous_secret")).toString("utf8")];
  }

  /** Stops claiming; waits for the attempts in flight up to `graceMs`, then hands back what is still held. */
  async stop(graceMs: number): Promise<void> {
    this.#running = false;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#loop;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.#inFlight]), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    if (this.#inFlight.size > 0) await releaseWebhookLeases(this.#o.pool, this.#o.workerId).catch(() => {});
  }
}

