// Reading messages back. A key sees only its own messages: every query is scoped by
// api_key_id, so another key's message is simply "not found".
import type { PolicySource, TlsPolicy } from "../domain/tls-policy.ts";
import type { PolicyDetail } from "../domain/evidence.ts";
import type { Db } from "../db/client.ts";
import { cancelUntouchedDeliveries, countDeliveriesOf } from "../db/deliveries.ts";
import {
  findMessageAttempts, findMessageSummaries, findStoredMessage, lockMessageStatus, markMessageCancelled,
  markRecipientsCancelled, messageOwnedBy, type MessageSummaryRow,
} from "../db/messages.ts";
import { AppError } from "../domain/errors.ts";
import { CANCELLABLE_STATUSES, FINAL_RECIPIENT_STATUSES, withLease, type MessagePriority, type MessageStatus, type RecipientStatus } from "../domain/message.ts";
import { lifetimeEnd } from "../domain/retry-lifetime.ts";
import { contentAad, ContentDecryptError, type ContentCipher } from "../security/content-cipher.ts";

export type AttemptRow = {
  attempt: number; startedAt: Date; durationMs: number; outcome: string; mxHost: string | null; ip: string | null;
  port: number | null; policy: string; tls: boolean; tlsVersion: string | null; cipher: string | null;
  verified: boolean | null; verifyError: string | null; certSubject: string | null; certIssuer: string | null;
  certNotAfter: Date | null; certFingerprint: string | null; dkimSelectors: string[]; replyCode: number | null; enhancedCode: string | null; replyText: string | null;
  policySource: string | null; policyDetail: unknown;
};

export function attemptView(a: AttemptRow) {
  const hasCert = a.certSubject !== null || a.certFingerprint !== null;
  return {
    attempt: a.attempt,
    started_at: a.startedAt.toISOString(),
    duration_ms: a.durationMs,
    outcome: a.outcome as "delivered" | "deferred" | "bounced",
    mx_host: a.mxHost,
    ip: a.ip,
    port: a.port,
    policy: a.policy as TlsPolicy,
    // Null for attempts recorded before sources were (issue 15).
    policy_source: a.policySource as PolicySource | null,
    policy_detail: (a.policyDetail ?? null) as PolicyDetail | null,
    tls: {
      used: a.tls,
      version: a.tlsVersion,
      cipher: a.cipher,
      verified: a.verified,
      verify_error: a.verifyError,
      certificate: hasCert
        ? { subject: a.certSubject, issuer: a.certIssuer, not_after: a.certNotAfter?.toISOString() ?? null, fingerprint_sha256: a.certFingerprint }
        : null,
    },
    dkim: { selectors: a.dkimSelectors ?? [] }, // a row written by hand may hold NULL
    smtp: { code: a.replyCode, enhanced_code: a.enhancedCode, text: a.replyText },
  };
}

/**
 * The subject, decrypted; or, when this server cannot decrypt it, null and why. The rest
 * of the view (addresses, statuses, evidence) is not encrypted and is still shown, so a
 * message under a key this process lacks, or a damaged value, never hides the others.
 */
function readSubject(m: MessageSummaryRow, cipher: ContentCipher) {
  if (!m.subject) return { subject: null, content_unreadable: null };
  try {
    return { subject: cipher.decrypt(m.subject, contentAad(m.id, "subject")).toString("utf8"), content_unreadable: null };
  } catch (err) {
    if (!(err instanceof ContentDecryptError)) throw err;
    const content_unreadable =
      err.reason === "unknown_key"
        ? { reason: "unknown_data_key" as const, data_key_id: err.keyId,
            detail: `the content is encrypted under data key ${err.keyId}, which this server does not hold (the operator adds it to SEALPOST_DATA_KEY)` }
        : { reason: "failed_authentication" as const, data_key_id: err.keyId,
            detail: "the stored content failed authentication: it was changed or damaged in storage and is not shown" };
    return { subject: null, content_unreadable };
  }
}

function summaryView(m: MessageSummaryRow, cipher: ContentCipher) {
  const { subject, content_unreadable } = readSubject(m, cipher);
  return {
    id: m.id,
    status: withLease(m.status as MessageStatus, m.deliveries.length > 0),
    tls_policy: m.tlsPolicy as TlsPolicy,
    priority: m.priority as MessagePriority,
    from: { address: m.fromAddress, name: m.fromName },
    subject,
    tags: m.tags,
    metadata: (m.metadata as Record<string, string> | null) ?? null,
    created_at: m.createdAt.toISOString(),
    send_at: m.sendAt?.toISOString() ?? null,
    content_purged: m.contentPurgedAt !== null,
    content_unreadable,
  };
}

/** What the message view needs from the delivery settings. */
export interface DeliverySchedule {
  /** SMTP_MAX_RETRY: how long a delivery is retried, counted from when it first became due. */
  maxRetryMs: number;
}

const WAITING_STATUSES: ReadonlySet<RecipientStatus> = new Set(["queued", "scheduled", "deferred"]);

/**
 * When a recipient's next attempt is due and when its retries end. The queue row holds
 * both inputs: next_attempt_at (while it is pending and not leased, which is when its
 * recipients are queued, scheduled or deferred) and created_at, from which the worker
 * counts SMTP_MAX_RETRY. Both are null once the recipient is final.
 */
function scheduleView(status: RecipientStatus, d: { state: string; nextAttemptAt: Date; createdAt: Date }, s: DeliverySchedule) {
  if (FINAL_RECIPIENT_STATUSES.has(status)) return { next_attempt_at: null, expires_at: null };
  return {
    next_attempt_at: WAITING_STATUSES.has(status) && d.state === "pending" ? d.nextAttemptAt.toISOString() : null,
    expires_at: lifetimeEnd(d.createdAt, s.maxRetryMs).toISOString(),
  };
}

export async function getMessage(db: Db, cipher: ContentCipher, apiKeyId: string, id: string, schedule: DeliverySchedule) {
  // Prisma reads the message, its recipients, their queue rows and attempts in separate
  // statements; one REPEATABLE READ snapshot keeps them consistent with each other (a
  // worker finishing or claiming in between would otherwise pair a deferred message with
  // a recipient already being retried, or a deferred recipient with its lease time).
  const now = new Date();
  const m = await db.$transaction((tx) => findStoredMessage(tx, apiKeyId, id, now), { isolationLevel: "RepeatableRead" });
  if (!m) throw new AppError("not_found", "no message with this id");
  return {
    ...summaryView(m, cipher),
    message_id: m.messageIdHeader,
    reply_to: (m.replyTo as Array<{ address: string; name: string | null }> | null) ?? [],
    updated_at: m.updatedAt.toISOString(),
    recipients: m.recipients.map((r) => {
      const d = r.delivery;
      const status = withLease(r.status as RecipientStatus, d.state === "pending" && d.leaseOwner !== null && d.nextAttemptAt > now);
      return {
        address: r.address,
        name: r.name,
        kind: r.kind as "to" | "cc" | "bcc",
        status,
        attempts: r.attempts,
        last_response: r.lastCode !== null || r.lastReply !== null ? { code: r.lastCode, enhanced_code: r.lastEnhanced, text: r.lastReply } : null,
        ...scheduleView(status, d, schedule),
        delivery_attempts: r.attemptLog.map(attemptView),
      };
    }),
  };
}

export async function getMessageEvents(db: Db, apiKeyId: string, id: string) {
  if (!(await messageOwnedBy(db, apiKeyId, id))) throw new AppError("not_found", "no message with this id");
  const rows = await findMessageAttempts(db, id);
  return { message_id: id, events: rows.map((a) => ({ ...attemptView(a), recipient: a.recipient.address })) };
}

export interface ListFilters {
  limit: number;
  cursor?: string | undefined;
  status?: MessageStatus | undefined;
  tag?: string | undefined;
  createdAfter?: Date | undefined;
  createdBefore?: Date | undefined;
}

// Cursor: the (created_at, id) of the last item, opaque to clients. Newest first.
export function encodeCursor(createdAt: Date, id: string): string {
  return Buffer.from(`${createdAt.toISOString()}|${id}`, "utf8").toString("base64url");
}

function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const raw = Buffer.from(cursor, "base64url").toString("utf8");
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)\|([0-9a-f-]{36})$/.exec(raw);
  if (!m) throw new AppError("invalid_request", "the cursor is not valid", { errors: [{ path: "query.cursor", message: "not a cursor returned by this API" }] });
  return { createdAt: new Date(m[1]!), id: m[2]! };
}

export async function listMessages(db: Db, cipher: ContentCipher, apiKeyId: string, f: ListFilters) {
  const after = f.cursor ? decodeCursor(f.cursor) : null;
  // One more than a page: whether it exists says whether there is a next page.
  const rows = await findMessageSummaries(db, apiKeyId, {
    limit: f.limit + 1, after, status: f.status, tag: f.tag, createdAfter: f.createdAfter, createdBefore: f.createdBefore,
  }, new Date());
  const page = rows.slice(0, f.limit);
  const last = page[page.length - 1];
  return {
    data: page.map((m) => summaryView(m, cipher)),
    next_cursor: rows.length > f.limit && last ? encodeCursor(last.createdAt, last.id) : null,
  };
}

/**
 * Cancel a message nobody has started sending. Takes the queue rows' locks: a worker
 * that claimed a row first makes the update find attempts > 0, and we answer 409.
 */
export async function cancelMessage(db: Db, apiKeyId: string, id: string) {
  return db.$transaction(async (tx) => {
    const status = await lockMessageStatus(tx, apiKeyId, id);
    if (status === null) throw new AppError("not_found", "no message with this id");
    if (status === "cancelled") return { id, status: "cancelled" as const };
    if (!CANCELLABLE_STATUSES.has(status as MessageStatus))
      throw new AppError("conflict", `the message is ${status}; only queued or scheduled messages can be cancelled`);
    const total = await countDeliveriesOf(tx, id);
    const cancelled = await cancelUntouchedDeliveries(tx, id);
    if (cancelled !== total) throw new AppError("conflict", "sending has already started for this message");
    const now = new Date();
    await markRecipientsCancelled(tx, id, now);
    await markMessageCancelled(tx, id, now);
    return { id, status: "cancelled" as const };
  });
}
