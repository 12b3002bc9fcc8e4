// Accepting a message: the hot path of POST /send. Checks the sender domain, fixes the
// effective TLS policy, encrypts the content bound to the new row, and hands the row to
// the message writer (message-writer.ts), which stores message, recipients, queue rows
// and idempotency record in one statement.
import { createHash, randomUUID } from "node:crypto";
import type { Db } from "../db/client.ts";
import { findIdempotencyRecord } from "../db/idempotency.ts";
import type { NewMessageRow } from "../db/messages.ts";
import { AppError, summarizeFieldErrors } from "../domain/errors.ts";
import { domainOf } from "../domain/address.ts";
import { normalizeSendRequest, type Limits, type NewMessage, type SendRequest } from "../domain/message.ts";
import { strictestLayer, type TlsPolicy } from "../domain/tls-policy.ts";
import { contentAad, type ContentCipher } from "../security/content-cipher.ts";
import type { ApiKeyRecord } from "./api-keys.ts";
import type { MessageWriter } from "./message-writer.ts";
import type { SenderDomainGate } from "./sender-domain-gate.ts";

const IDEMPOTENCY_TTL_MS = 24 * 3_600_000;

interface SendResponse {
  id: string;
  status: "queued" | "scheduled" | "suppressed";
  tls_policy: TlsPolicy;
  created_at: string;
  send_at?: string;
  suppressed?: string[];
}

export interface SendContext {
  db: Db;
  /** Writes messages, grouping concurrent ones into one statement. */
  writer: MessageWriter;
  cipher: ContentCipher;
  serverTlsPolicy: TlsPolicy;
  limits: Limits;
  /** Set when only verified sender domains may send (SENDER_DOMAINS=verified). */
  senderDomains?: SenderDomainGate | undefined;
  now?: () => Date;
}

export interface AcceptOptions {
  /** The same key with the same request replays the first response for 24 h. */
  idempotencyKey?: string | undefined;
}

export type AcceptResult = { replayed: boolean; statusCode: number; body: SendResponse };

function checkSenderAllowed(key: ApiKeyRecord, fromAddress: string): void {
  if (key.allowedDomains.includes("*")) return;
  const domain = domainOf(fromAddress);
  if (!key.allowedDomains.includes(domain))
    throw new AppError("forbidden", `this API key may not send from the domain ${domain}`);
}

/** Cross-field checks of a schema-valid request; throws the 413/422 AppError a client should see. */
function prepareMessage(body: SendRequest, limits: Limits, now: Date): NewMessage {
  const n = normalizeSendRequest(body, limits, now);
  if (n.ok) return n.value;
  throw new AppError(n.tooLarge ? "payload_too_large" : "invalid_request", summarizeFieldErrors(n.errors), { errors: n.errors });
}

/**
 * A new message id: a UUIDv7 (RFC 9562 section 5.7), the millisecond of acceptance in
 * its first 48 bits and 74 random bits after. Ids that grow with time land at the right
 * edge of every index keyed by message id (messages, recipients, deliveries): random
 * (v4) ids dirtied a random page of each of those indexes per message: on a database of
 * a million messages, each page's first change after a checkpoint is a full-page image, and
 * a message wrote 19 KiB of WAL instead of 3 KiB, its statement taking twice as long.
 * It reveals when the message was accepted, which created_at already says.
 */
export function newMessageId(nowMs: number): string {
  const v4 = randomUUID(); // the random bits, from Node's pooled CSPRNG
  const ms = nowMs.toString(16).padStart(12, "0");
  // xxxxxxxx-xxxx-4xxx-yxxx-...: time in the first 12 hex digits, version 7, the variant (y) as v4 has it.
  return `${ms.slice(0, 8)}-${ms.slice(8, 12)}-7${v4.slice(15)}`;
}

/** Hash of the request, to tell a replay from a conflicting reuse of an Idempotency-Key. */
function requestHash(req: SendRequest): string {
  return createHash("sha256").update(JSON.stringify(req)).digest("hex");
}

/**
 * Accepts one schema-valid send request for `key`: 413/422 for cross-field problems, 403
 * for a sender domain the key may not use, then stored; a reused Idempotency-Key replays
 * the first response or is refused (409) for a different request.
 */
export async function acceptMessage(ctx: SendContext, key: ApiKeyRecord, req: SendRequest, opts: AcceptOptions = {}): Promise<AcceptResult> {
  const now = (ctx.now ?? (() => new Date()))();
  const msg = prepareMessage(req, ctx.limits, now);
  checkSenderAllowed(key, msg.from.address);
  if (ctx.senderDomains) await ctx.senderDomains.check(msg.from.address);
  const id = newMessageId(now.getTime());
  const { policy, source: policySource } = strictestLayer([
    { policy: ctx.serverTlsPolicy, source: "server" as const },
    { policy: key.tlsPolicy, source: "key" as const },
    { policy: msg.tls, source: "message" as const },
  ]);
  const status = msg.sendAt ? "scheduled" : "queued";
  const body: SendResponse = { id, status, tls_policy: policy, created_at: now.toISOString() };
  if (msg.sendAt) body.send_at = msg.sendAt.toISOString();

  const enc = (column: string, value: string | null) =>
    value === null ? null : ctx.cipher.encrypt(value, contentAad(id, column));
  const idemKey = opts.idempotencyKey ?? null;
  const hash = idemKey ? requestHash(req) : null;
  const row: NewMessageRow = {
    id,
    apiKeyId: key.id,
    idempotencyKey: idemKey,
    requestHash: hash,
    response: JSON.stringify(body),
    createdAt: now,
    expiresAt: new Date(now.getTime() + IDEMPOTENCY_TTL_MS),
    status,
    tlsPolicy: policy,
    tlsPolicySource: policySource,
    priority: msg.priority,
    messageIdHeader: `<${id}@${domainOf(msg.from.address)}>`, // stable across retries (RFC 5322 3.6.4)
    fromAddress: msg.from.address,
    fromName: msg.from.name,
    replyTo: msg.replyTo.length > 0 ? JSON.stringify(msg.replyTo) : null,
    subject: enc("subject", msg.subject),
    textBody: enc("text_body", msg.text),
    htmlBody: enc("html_body", msg.html),
    headers: Object.keys(msg.headers).length > 0 ? enc("headers", JSON.stringify(msg.headers)) : null,
    attachments: msg.attachments.length > 0 ? enc("attachments", JSON.stringify(msg.attachments)) : null,
    tags: msg.tags,
    metadata: msg.metadata ? JSON.stringify(msg.metadata) : null,
    sendAt: msg.sendAt,
    recipients: msg.recipients.map((r) => ({ kind: r.kind, address: r.address, name: r.name, domain: r.domain })),
  };
  const created = await ctx.writer.write(row);
  if (created) {
    // The same answer the statement stored for the Idempotency-Key (db/messages.ts).
    if (created.suppressed.length > 0) {
      body.suppressed = created.suppressed;
      if (created.suppressed.length === msg.recipients.length) body.status = "suppressed";
    }
    return { replayed: false, statusCode: 202, body };
  }
  // The key was used before: replay the first response, or refuse a different body.
  const prior = await findIdempotencyRecord(ctx.db, key.id, idemKey!);
  if (!prior) throw new AppError("conflict", "a request with this Idempotency-Key is being processed; retry shortly");
  if (prior.requestHash !== hash)
    throw new AppError("idempotency_conflict", "this Idempotency-Key was already used with a different request body");
  return { replayed: true, statusCode: prior.statusCode, body: prior.response as unknown as SendResponse };
}
