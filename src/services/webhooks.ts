// Webhook endpoints (issue 12): registering, listing, changing, removing, rotating the
// secret, a test delivery, the delivery log and retrying by hand. A key sees and manages
// only its own endpoints; another key's is "not found", as its messages are. The secret is
// shown once, when it is made, and stored encrypted.
import { randomUUID } from "node:crypto";
import { lookup } from "node:dns/promises";
import { z } from "zod";
import type { Db } from "../db/client.ts";
import {
  deleteWebhookEndpoint, findWebhookDeliveries, findWebhookEndpoint, findWebhookEndpoints, insertTestDelivery, insertWebhookEndpoint,
  retryFailedDeliveries, updateWebhookEndpoint, type WebhookEndpointRow,
} from "../db/webhooks.ts";
import { AppError } from "../domain/errors.ts";
import { EVENT_TYPES, eventId } from "../domain/event.ts";
import type { ContentCipher } from "../security/content-cipher.ts";
import { newWebhookSecret, webhookSecretAad } from "../security/webhook-secrets.ts";
import { refusedAddress, refusedUrl, type TargetPolicy } from "../security/webhook-targets.ts";

/** How long the previous secret keeps signing after a rotation, so receivers can switch over. */
const PREVIOUS_SECRET_VALID_MS = 86_400_000;

const eventTypes = z
  .array(z.enum(EVENT_TYPES))
  .max(EVENT_TYPES.length)
  .transform((a) => [...new Set(a)])
  .meta({ description: "The event types to send; empty or absent: all of them" });
const url = z.url({ protocol: /^https?$/, error: "must be an https:// URL, such as https://shop.example/hooks/sealpost" }).max(2000);
const description = z.string().max(500).nullable();

export const CreateWebhookSchema = z
  .strictObject({ url, event_types: eventTypes.optional(), description: description.optional() })
  .meta({ id: "CreateWebhookRequest" });
export type CreateWebhook = z.infer<typeof CreateWebhookSchema>;

export const UpdateWebhookSchema = z
  .strictObject({
    url: url.optional(),
    event_types: eventTypes.optional(),
    description: description.optional(),
    enabled: z.boolean().optional().meta({ description: "false pauses deliveries (they wait); true resumes them, also after the endpoint was disabled for failing" }),
  })
  .meta({ id: "UpdateWebhookRequest" });
export type UpdateWebhook = z.infer<typeof UpdateWebhookSchema>;

export const RetryWebhookSchema = z
  .strictObject({
    delivery_id: z.string().regex(/^\d{1,19}$/, "must be a delivery id from GET /webhooks/{id}/deliveries").optional(),
    since: z.iso.datetime({ offset: true, error: 'must be an ISO 8601 time with a time zone, such as "2030-01-01T00:00:00Z"' }).optional(),
  })
  .meta({ id: "RetryWebhookRequest", description: "One failed delivery (delivery_id), or every failed delivery created since a time, or every failed delivery" });

function webhookView(row: WebhookEndpointRow, now = new Date()) {
  return {
    id: row.id,
    url: row.url,
    description: row.description,
    event_types: row.eventTypes,
    enabled: row.enabled,
    disabled_reason: row.disabledReason,
    failing_since: row.failingSince?.toISOString() ?? null,
    previous_secret_valid_until: row.previousSecretUntil && row.previousSecretUntil > now ? row.previousSecretUntil.toISOString() : null,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}

/**
 * Refuses a URL the worker would refuse to call (webhook-http.ts): not https, a private or
 * loopback target in production. In production a name is also resolved now, so a name of a
 * private address is refused here rather than at its first delivery; the worker checks
 * again on every connection.
 */
async function checkTarget(raw: string, policy: TargetPolicy): Promise<void> {
  const u = new URL(raw);
  const bad = (message: string) => new AppError("invalid_request", `url: ${message}`, { errors: [{ path: "url", message }] });
  const refused = refusedUrl(u, policy);
  if (refused) throw bad(refused);
  if (!policy.production) return;
  const addrs = await lookup(u.hostname.replace(/^\[|\]$/g, ""), { all: true }).catch(() => []);
  const r = addrs.map((a) => refusedAddress(a.address, policy)).find((x) => x !== null);
  if (r) throw bad(`${u.hostname} resolves to ${r}`);
}

const notFound = () => new AppError("not_found", "no webhook endpoint with this id");

async function endpointOf(db: Db, keyId: string, id: string): Promise<WebhookEndpointRow> {
  const row = await findWebhookEndpoint(db, keyId, id);
  if (!row) throw notFound();
  return row;
}

export async function createWebhook(db: Db, cipher: ContentCipher, keyId: string, input: CreateWebhook, policy: TargetPolicy, now = new Date()) {
  await checkTarget(input.url, policy);
  const id = randomUUID();
  const secret = newWebhookSecret();
  const row = await insertWebhookEndpoint(db, {
    id, apiKeyId: keyId, url: input.url, description: input.description ?? null, eventTypes: input.event_types ?? [],
    secret: cipher.encrypt(Buffer.from(secret), webhookSecretAad(id, "secret")), createdAt: now,
  });
  return { ...webhookView(row, now), secret };
}

export async function listWebhooks(db: Db, keyId: string) {
  const now = new Date();
  return { data: (await findWebhookEndpoints(db, keyId)).map((r) => webhookView(r, now)) };
}

export async function getWebhook(db: Db, keyId: string, id: string) {
  return webhookView(await endpointOf(db, keyId, id));
}

export async function updateWebhook(db: Db, keyId: string, id: string, input: UpdateWebhook, policy: TargetPolicy, now = new Date()) {
  if (input.url !== undefined) await checkTarget(input.url, policy);
  const row = await updateWebhookEndpoint(db, keyId, id, {
    ...(input.url !== undefined ? { url: input.url } : {}),
    ...(input.event_types !== undefined ? { eventTypes: input.event_types } : {}),
    ...(input.description !== undefined ? { description: input.description } : {}),
    ...(input.enabled !== undefined ? { enabled: input.enabled, disabledReason: input.enabled ? null : "disabled through the API" } : {}),
  }, now);
  if (!row) throw notFound();
  return webhookView(row, now);
}

export async function removeWebhook(db: Db, keyId: string, id: string) {
  if (!(await deleteWebhookEndpoint(db, keyId, id))) throw notFound();
  return { id, deleted: true as const };
}

/**
 * A new secret, shown once. The previous one keeps signing beside it (two signatures in
 * webhook-signature) for PREVIOUS_SECRET_VALID_MS, so a receiver can switch without
 * dropping a delivery.
 */
export async function rotateWebhookSecret(db: Db, cipher: ContentCipher, keyId: string, id: string, now = new Date()) {
  const row = await endpointOf(db, keyId, id);
  const previous = cipher.decrypt(row.secret, webhookSecretAad(id, "secret"));
  const secret = newWebhookSecret();
  const updated = await updateWebhookEndpoint(db, keyId, id, {
    secret: cipher.encrypt(Buffer.from(secret), webhookSecretAad(id, "secret")),
    previousSecret: cipher.encrypt(previous, webhookSecretAad(id, "previous_secret")),
    previousSecretUntil: new Date(now.getTime() + PREVIOUS_SECRET_VALID_MS),
  }, now);
  if (!updated) throw notFound();
  return { ...webhookView(updated, now), secret };
}

/** Queues a `webhook.test` delivery to the endpoint, sent at once by a worker. */
export async function testWebhook(db: Db, keyId: string, id: string, now = new Date()) {
  const row = await endpointOf(db, keyId, id);
  if (!row.enabled) throw new AppError("conflict", `the endpoint is disabled (${row.disabledReason ?? "by the API"}): enable it first with PATCH`);
  return { delivery_id: String(await insertTestDelivery(db, id, now)) };
}

export async function listWebhookDeliveries(db: Db, keyId: string, id: string, q: { limit: number; cursor?: string | undefined }) {
  await endpointOf(db, keyId, id);
  if (q.cursor !== undefined && !/^\d{1,19}$/.test(q.cursor))
    throw new AppError("invalid_request", "the cursor is not valid", { errors: [{ path: "query.cursor", message: "not a cursor returned by this API" }] });
  const rows = await findWebhookDeliveries(db, id, { after: q.cursor ? BigInt(q.cursor) : null, limit: q.limit + 1 });
  const page = rows.slice(0, q.limit);
  return {
    data: page.map((d) => ({
      id: String(d.id),
      event_id: d.eventId === null ? null : eventId(d.eventId),
      state: d.state as "pending" | "delivered" | "failed",
      attempts: d.attempts,
      next_attempt_at: d.state === "pending" ? d.nextAttemptAt.toISOString() : null,
      last_status: d.lastStatus,
      last_error: d.lastError,
      created_at: d.createdAt.toISOString(),
      finished_at: d.finishedAt?.toISOString() ?? null,
      attempt_log: d.attemptLog.map((a) => ({
        attempt: a.attempt, started_at: a.startedAt.toISOString(), duration_ms: a.durationMs, ip: a.ip, status_code: a.statusCode, error: a.error,
      })),
    })),
    next_cursor: rows.length > q.limit && page.length > 0 ? String(page[page.length - 1]!.id) : null,
  };
}

/** Makes failed deliveries due again for one more attempt each: one by id, or all (since a time). */
export async function retryWebhookDeliveries(db: Db, keyId: string, id: string, input: z.infer<typeof RetryWebhookSchema>, now = new Date()) {
  const row = await endpointOf(db, keyId, id);
  if (!row.enabled) throw new AppError("conflict", `the endpoint is disabled (${row.disabledReason ?? "by the API"}): enable it first with PATCH`);
  const retried = await retryFailedDeliveries(db, id, {
    id: input.delivery_id !== undefined ? BigInt(input.delivery_id) : null, since: input.since ? new Date(input.since) : null,
  }, now);
  if (input.delivery_id !== undefined && retried === 0)
    throw new AppError("not_found", "no failed delivery with this id at this endpoint", { errors: [{ path: "delivery_id", message: "names no failed delivery of this endpoint" }] });
  return { retried };
}
