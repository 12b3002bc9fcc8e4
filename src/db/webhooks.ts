// Webhook endpoints, their deliveries and attempts (issue 12). The API manages endpoints
// and reads deliveries through Prisma, scoped by api_key_id; the worker claims due
// deliveries under a lease and records each attempt behind a fence, on its pg.Pool. The
// deliveries themselves are written by the statements that write events (fanOutToWebhooks
// in events.ts).
import type pg from "pg";
import { isUuid } from "../domain/uuid.ts";
import type { Db, Tx } from "./client.ts";
import { underDataKeySql } from "./content.ts";
import { EVENT_SELECT, fanOutToWebhooks, type EventRow } from "./events.ts";

export interface WebhookEndpointRow {
  id: string; apiKeyId: string; url: string; description: string | null; eventTypes: string[]; enabled: boolean;
  disabledReason: string | null; secret: Uint8Array; previousSecret: Uint8Array | null; previousSecretUntil: Date | null;
  failingSince: Date | null; createdAt: Date; updatedAt: Date;
}

export function insertWebhookEndpoint(db: Db | Tx, row: Omit<WebhookEndpointRow, "enabled" | "disabledReason" | "previousSecret" | "previousSecretUntil" | "failingSince" | "updatedAt">): Promise<WebhookEndpointRow> {
  return db.webhookEndpoint.create({ data: { ...row, secret: new Uint8Array(row.secret), updatedAt: row.createdAt } });
}

/** One key's endpoints, oldest first; every key's for null (the owner, CLI). */
export function findWebhookEndpoints(db: Db | Tx, apiKeyId: string | null): Promise<WebhookEndpointRow[]> {
  return db.webhookEndpoint.findMany({ where: apiKeyId ? { apiKeyId } : {}, orderBy: [{ createdAt: "asc" }, { id: "asc" }] });
}

export function findWebhookEndpoint(db: Db | Tx, apiKeyId: string, id: string): Promise<WebhookEndpointRow | null> {
  return db.webhookEndpoint.findFirst({ where: { id, apiKeyId } });
}

export interface EndpointChanges {
  url?: string; description?: string | null; eventTypes?: string[];
  /** true re-enables (clearing the reason and the failing streak); false disables with `disabledReason`. */
  enabled?: boolean; disabledReason?: string | null;
  secret?: Uint8Array; previousSecret?: Uint8Array | null; previousSecretUntil?: Date | null;
}

/** Applies `changes` to the key's endpoint; null when it has none with this id. */
export async function updateWebhookEndpoint(db: Db | Tx, apiKeyId: string, id: string, changes: EndpointChanges, at: Date): Promise<WebhookEndpointRow | null> {
  const { secret, previousSecret, ...rest } = changes;
  const data = {
    ...rest,
    ...(changes.enabled === true ? { disabledReason: null, failingSince: null } : {}),
    ...(secret ? { secret: new Uint8Array(secret) } : {}),
    ...(previousSecret !== undefined ? { previousSecret: previousSecret && new Uint8Array(previousSecret) } : {}),
    updatedAt: at,
  };
  const { count } = await db.webhookEndpoint.updateMany({ where: { id, apiKeyId }, data });
  return count === 0 ? null : findWebhookEndpoint(db, apiKeyId, id);
}

/** For the owner (CLI): an endpoint by id, whoever's key it belongs to. */
export function findWebhookEndpointById(db: Db | Tx, id: string): Promise<WebhookEndpointRow | null> {
  return isUuid(id) ? db.webhookEndpoint.findUnique({ where: { id } }) : Promise.resolve(null);
}

export async function deleteWebhookEndpoint(db: Db | Tx, apiKeyId: string, id: string): Promise<boolean> {
  return (await db.webhookEndpoint.deleteMany({ where: { id, apiKeyId } })).count > 0;
}

/** A delivery of no event, sent at once: POST /webhooks/{id}/test. */
export async function insertTestDelivery(db: Db | Tx, endpointId: string, at: Date): Promise<bigint> {
  const row = await db.webhookDelivery.create({ data: { endpointId, state: "pending", nextAttemptAt: at, createdAt: at }, select: { id: true } });
  return row.id;
}

export interface DeliveryListFilters { after: bigint | null; limit: number }

/** An endpoint's deliveries, newest first, each with its attempts. */
export function findWebhookDeliveries(db: Db | Tx, endpointId: string, f: DeliveryListFilters) {
  return db.webhookDelivery.findMany({
    where: { endpointId, ...(f.after !== null ? { id: { lt: f.after } } : {}) },
    orderBy: { id: "desc" },
    take: f.limit,
    include: { attemptLog: { orderBy: { id: "asc" } } },
  });
}

/**
 * Makes failed deliveries of the endpoint due again now, for one more attempt each: the one
 * with `id`, or those created since `since`, or all. Returns how many.
 */
export async function retryFailedDeliveries(db: Db | Tx, endpointId: string, which: { id: bigint | null; since: Date | null }, at: Date): Promise<number> {
  const { count } = await db.webhookDelivery.updateMany({
    where: { endpointId, state: "failed", ...(which.id !== null ? { id: which.id } : {}), ...(which.since ? { createdAt: { gte: which.since } } : {}) },
    data: { state: "pending", nextAttemptAt: at, finishedAt: null },
  });
  return count;
}

export function findWebhookSecretsNotUnderKey(db: Db | Tx, keyId: string): Promise<Array<{ id: string; secret: Uint8Array; previousSecret: Uint8Array | null }>> {
  const under = (col: string) => `(${col} IS NULL OR ${underDataKeySql(col)})`;
  return db.$queryRawUnsafe(
    `SELECT id::text AS id, secret, previous_secret AS "previousSecret" FROM webhook_endpoints
      WHERE NOT (${under("secret")} AND ${under("previous_secret")}) ORDER BY id`,
    keyId,
  );
}

/** Replaces an endpoint's secrets' ciphertexts; 0 when they changed meanwhile (a rotation) or the endpoint is gone. */
export function rewriteWebhookSecrets(db: Db | Tx, id: string, from: { secret: Uint8Array; previousSecret: Uint8Array | null }, to: { secret: Uint8Array; previousSecret: Uint8Array | null }): Promise<number> {
  return db.$executeRawUnsafe(
    `UPDATE webhook_endpoints SET secret = $4, previous_secret = $5
      WHERE id = $1::uuid AND secret = $2 AND previous_secret IS NOT DISTINCT FROM $3`,
    id, from.secret, from.previousSecret, to.secret, to.previousSecret,
  );
}

// ---- the worker ------------------------------------------------------------------

export interface ClaimedWebhook {
  id: string;
  /** This attempt's number, 1 for the first. */
  attempt: number;
  endpointId: string;
  url: string;
  secret: Buffer;
  previousSecret: Buffer | null;
  previousSecretUntil: Date | null;
  failingSince: Date | null;
  /** Null for a test delivery. */
  event: EventRow | null;
  createdAt: Date;
}

// Due deliveries of enabled endpoints, oldest due first, leased to this worker for
// $3 ms (past the request timeout): a worker that dies mid-send leaves them to another
// once the lease ends, and the receiver may see the event twice under the same webhook-id.
const CLAIM_WEBHOOKS_SQL = `
WITH due AS (
  SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled
   WHERE d.state = 'pending' AND d.next_attempt_at <= now()
   ORDER BY d.next_attempt_at
   LIMIT $1
   FOR UPDATE OF d SKIP LOCKED
), claimed AS (
  UPDATE webhook_deliveries d
     SET lease_owner = $2, attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $3::double precision / 1000)
    FROM due WHERE d.id = due.id
  RETURNING d.id, d.attempts, d.endpoint_id, d.event_id, d.created_at
)
SELECT c.id::text AS id, c.attempts AS attempt, c.endpoint_id::text AS "endpointId", c.event_id::text AS "eventId", c.created_at AS "createdAt",
       w.url, w.secret, w.previous_secret AS "previousSecret", w.previous_secret_until AS "previousSecretUntil", w.failing_since AS "failingSince"
  FROM claimed c JOIN webhook_endpoints w ON w.id = c.endpoint_id`;

export async function claimWebhookDeliveries(pool: pg.Pool, workerId: string, limit: number, leaseMs: number): Promise<ClaimedWebhook[]> {
  const { rows } = await pool.query<Omit<ClaimedWebhook, "event"> & { eventId: string | null }>(CLAIM_WEBHOOKS_SQL, [limit, workerId, leaseMs]);
  const eventIds = rows.flatMap((r) => (r.eventId ? [r.eventId] : []));
  const events = new Map<string, EventRow>();
  if (eventIds.length > 0) {
    const { rows: evs } = await pool.query<EventRow>(`${EVENT_SELECT} WHERE e.id = ANY($1::bigint[])`, [eventIds]);
    for (const e of evs) events.set(e.id, e);
  }
  return rows.map(({ eventId, ...r }) => ({ ...r, event: eventId ? (events.get(eventId) ?? null) : null }));
}

export interface WebhookAttemptResult {
  delivery: ClaimedWebhook;
  workerId: string;
  startedAt: Date;
  durationMs: number;
  ip: string | null;
  statusCode: number | null;
  error: string | null;
  /** What follows: delivered; retried at retryAt; failed for good. */
  state: "delivered" | "pending" | "failed";
  retryAt: Date | null;
  /** Disable the endpoint (410 Gone, or failing past the limit), with this reason. */
  disable: string | null;
}

/**
 * Records one attempt behind the lease fence, in one transaction: the attempt row, the
 * delivery's next state, the endpoint's failing streak, and when it is disabled, a
 * webhook.disabled event (fanned out to the key's other endpoints). False, writing
 * nothing, when the lease was lost.
 */
export async function recordWebhookAttempt(pool: pg.Pool, r: WebhookAttemptResult): Promise<boolean> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const fenced = await client.query(
      `UPDATE webhook_deliveries
          SET state = $4, lease_owner = NULL, last_status = $5, last_error = $6,
              next_attempt_at = COALESCE($7::timestamptz, next_attempt_at), finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE now() END
        WHERE id = $1::bigint AND lease_owner = $2 AND attempts = $3`,
      [r.delivery.id, r.workerId, r.delivery.attempt, r.state, r.statusCode, r.error, r.retryAt],
    );
    if (fenced.rowCount !== 1) {
      await client.query("ROLLBACK");
      return false;
    }
    await client.query(
      `INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, ip, status_code, error) VALUES ($1::bigint, $2, $3, $4, $5, $6, $7)`,
      [r.delivery.id, r.delivery.attempt, r.startedAt, r.durationMs, r.ip, r.statusCode, r.error],
    );
    const ok = r.state === "delivered";
    await client.query(
      `UPDATE webhook_endpoints SET failing_since = CASE WHEN $2 THEN NULL ELSE COALESCE(failing_since, $3::timestamptz) END WHERE id = $1::uuid`,
      [r.delivery.endpointId, ok, r.startedAt],
    );
    // Disabled before its event is written, so the event goes to the key's other endpoints only.
    if (r.disable !== null) {
      const { rowCount } = await client.query(
        `UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now() WHERE id = $1::uuid AND enabled`,
        [r.delivery.endpointId, r.disable],
      );
      if (rowCount === 1)
        await client.query(
          `WITH evt AS (
             INSERT INTO events (type, api_key_id, endpoint_id, reply_text)
             SELECT 'webhook.disabled', api_key_id, id, $2 FROM webhook_endpoints WHERE id = $1::uuid
             RETURNING id, api_key_id, type
           )
           ${fanOutToWebhooks("evt")}`,
          [r.delivery.endpointId, r.disable],
        );
    }
    await client.query("COMMIT");
    return true;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

/** Gives back every webhook delivery this worker still holds (stopping): due again at once. */
export async function releaseWebhookLeases(pool: pg.Pool, workerId: string): Promise<number> {
  const { rowCount } = await pool.query(
    `UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = now(), attempts = attempts - 1 WHERE state = 'pending' AND lease_owner = $1`,
    [workerId],
  );
  return rowCount ?? 0;
}
