// Accepting a message: the hot path of POST /send. The message, its recipients, its
// queue entries (one per recipient domain) and the idempotency record are written by
// ONE statement, so either all of them exist or none do: there is no window where an
// accepted message has no queued work, and no second round trip per request.
import { createHash, randomUUID } from "node:crypto";
import type { Db } from "../db/client.ts";
import { AppError } from "../domain/errors.ts";
import { domainOf } from "../domain/address.ts";
import { normalizeSendRequest, type Limits, type NewMessage, type SendRequest } from "../domain/message.ts";
import { strictest, type TlsPolicy } from "../domain/tls-policy.ts";
import { contentAad, type ContentCipher } from "../security/content-cipher.ts";
import type { ApiKeyRecord } from "./api-keys.ts";

export const IDEMPOTENCY_TTL_MS = 24 * 3_600_000;

export interface SendResponse {
  id: string;
  status: "queued" | "scheduled";
  tls_policy: TlsPolicy;
  created_at: string;
  send_at?: string;
}

export interface SendContext {
  db: Db;
  cipher: ContentCipher;
  serverTlsPolicy: TlsPolicy;
  now?: () => Date;
}

export interface AcceptOptions {
  idempotencyKey?: string | undefined;
  /** Canonical request body, hashed to tell a replay from a conflicting reuse of the key. */
  requestBody?: unknown;
}

export type AcceptResult = { replayed: boolean; statusCode: number; body: SendResponse };

export function checkSenderAllowed(key: ApiKeyRecord, fromAddress: string): void {
  if (key.allowedDomains.includes("*")) return;
  const domain = domainOf(fromAddress);
  if (!key.allowedDomains.includes(domain))
    throw new AppError("forbidden", `this API key may not send from the domain ${domain}`);
}

const SQL = `
WITH idem AS (
  INSERT INTO idempotency_records (api_key_id, key, request_hash, status_code, response, message_id, created_at, expires_at)
  SELECT $1, $2, $3, 202, $4::jsonb, $5::uuid, $6::timestamptz, $7::timestamptz
  WHERE $2::text IS NOT NULL
  ON CONFLICT (api_key_id, key) DO UPDATE
     SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code, response = EXCLUDED.response,
         message_id = EXCLUDED.message_id, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
   WHERE idempotency_records.expires_at <= EXCLUDED.created_at
  RETURNING 1
), msg AS (
  INSERT INTO messages (id, api_key_id, status, tls_policy, message_id_header, from_address, from_name, reply_to,
                        subject, text_body, html_body, headers, attachments, tags, metadata, send_at, created_at, updated_at)
  SELECT $5::uuid, $1, $8, $9, $10, $11, $12, $13::jsonb, $14, $15, $16, $17, $18, $19::text[], $20::jsonb,
         $21::timestamptz, $6::timestamptz, $6::timestamptz
  WHERE $2::text IS NULL OR EXISTS (SELECT 1 FROM idem)
  RETURNING id
), dlv AS (
  INSERT INTO deliveries (message_id, domain, state, next_attempt_at, created_at)
  SELECT msg.id, d.domain, 'pending', COALESCE($21::timestamptz, $6::timestamptz), COALESCE($21::timestamptz, $6::timestamptz)
    FROM msg CROSS JOIN unnest($22::text[]) AS d(domain)
  RETURNING id, domain
), rcp AS (
  INSERT INTO recipients (message_id, delivery_id, position, kind, address, name, status, updated_at)
  SELECT msg.id, dlv.id, r.pos, r.kind, r.address, r.name, $8, $6::timestamptz
    FROM msg
    CROSS JOIN unnest($23::text[], $24::text[], $25::text[], $26::text[]) WITH ORDINALITY AS r(kind, address, name, domain, pos)
    JOIN dlv ON dlv.domain = r.domain
  RETURNING 1
)
SELECT (SELECT count(*) FROM msg)::int AS created, (SELECT count(*) FROM rcp)::int AS recipients`;

/** Cross-field checks of a schema-valid request; throws the 413/422 AppError a client should see. */
export function prepareMessage(body: SendRequest, limits: Limits, now: Date): NewMessage {
  const n = normalizeSendRequest(body, limits, now);
  if (n.ok) return n.value;
  const tooBig = n.errors.some((e) => e.path.startsWith("attachments"));
  throw new AppError(tooBig ? "payload_too_large" : "invalid_request", tooBig ? "attachments exceed the size limit" : "the request is not valid", {
    errors: n.errors,
  });
}

export function requestHash(body: unknown): string {
  return createHash("sha256").update(JSON.stringify(body ?? null)).digest("hex");
}

export async function acceptMessage(
  ctx: SendContext,
  key: ApiKeyRecord,
  msg: NewMessage,
  opts: AcceptOptions = {},
): Promise<AcceptResult> {
  checkSenderAllowed(key, msg.from.address);
  const now = (ctx.now ?? (() => new Date()))();
  const id = randomUUID();
  const policy = strictest(ctx.serverTlsPolicy, key.tlsPolicy, msg.tls);
  const status = msg.sendAt ? "scheduled" : "queued";
  const body: SendResponse = { id, status, tls_policy: policy, created_at: now.toISOString() };
  if (msg.sendAt) body.send_at = msg.sendAt.toISOString();

  const enc = (column: string, value: string | null) =>
    value === null ? null : ctx.cipher.encrypt(value, contentAad(id, column));
  const hasHeaders = Object.keys(msg.headers).length > 0;
  const hasAttachments = msg.attachments.length > 0;
  const domains = [...new Set(msg.recipients.map((r) => r.domain))];
  const idemKey = opts.idempotencyKey ?? null;
  const hash = idemKey ? requestHash(opts.requestBody) : null;

  const rows = await ctx.db.$queryRawUnsafe<Array<{ created: number; recipients: number }>>(
    SQL,
    key.id, // $1
    idemKey, // $2
    hash, // $3
    JSON.stringify(body), // $4
    id, // $5
    now, // $6
    new Date(now.getTime() + IDEMPOTENCY_TTL_MS), // $7
    status, // $8
    policy, // $9
    `<${id}@${domainOf(msg.from.address)}>`, // $10 Message-ID, stable across retries (RFC 5322 3.6.4)
    msg.from.address, // $11
    msg.from.name, // $12
    msg.replyTo.length > 0 ? JSON.stringify(msg.replyTo) : null, // $13
    enc("subject", msg.subject), // $14
    enc("text_body", msg.text), // $15
    enc("html_body", msg.html), // $16
    hasHeaders ? enc("headers", JSON.stringify(msg.headers)) : null, // $17
    hasAttachments ? enc("attachments", JSON.stringify(msg.attachments)) : null, // $18
    msg.tags, // $19
    msg.metadata ? JSON.stringify(msg.metadata) : null, // $20
    msg.sendAt, // $21
    domains, // $22
    msg.recipients.map((r) => r.kind), // $23
    msg.recipients.map((r) => r.address), // $24
    msg.recipients.map((r) => r.name), // $25
    msg.recipients.map((r) => r.domain), // $26
  );
  const created = rows[0]?.created ?? 0;
  if (created === 1) {
    if (rows[0]!.recipients !== msg.recipients.length) throw new AppError("internal", "recipient rows were not all written");
    return { replayed: false, statusCode: 202, body };
  }
  // The key was used before: replay the first response, or refuse a different body.
  const prior = await ctx.db.idempotencyRecord.findUnique({ where: { apiKeyId_key: { apiKeyId: key.id, key: idemKey! } } });
  if (!prior) throw new AppError("conflict", "a request with this Idempotency-Key is being processed; retry shortly");
  if (prior.requestHash !== hash)
    throw new AppError("idempotency_conflict", "this Idempotency-Key was already used with a different request body");
  return { replayed: true, statusCode: prior.statusCode, body: prior.response as unknown as SendResponse };
}
