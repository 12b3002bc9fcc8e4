// Reading the event log (issue 12). Events are written by the statements that change a
// recipient's status (insertMessages, markRecipientsCancelled in db/messages.ts,
// completeDeliveries in db/deliveries.ts).
import type { EventPosition, EventType } from "../domain/event.ts";
import type { Db } from "./client.ts";

/**
 * The webhook fan-out of the events a statement has just written (a CTE named `events`
 * returning id, api_key_id, type): one pending delivery for each of the key's enabled
 * endpoints that wants the type. Part of the statement that writes the events, so an
 * event and its deliveries commit together.
 */
export function fanOutToWebhooks(events: string): string {
  return `INSERT INTO webhook_deliveries (endpoint_id, event_id, state, next_attempt_at)
  SELECT w.id, e.id, 'pending', now()
    FROM ${events} e
    JOIN webhook_endpoints w ON w.api_key_id = e.api_key_id AND w.enabled
     AND (w.event_types IS NULL OR cardinality(w.event_types) = 0 OR e.type = ANY(w.event_types))`;
}

/** An event with what its view shows: the recipient, the message's tags and metadata, the attempt's evidence. */
export const EVENT_SELECT = `SELECT e.id::text AS id, e.txid::text AS txid, e.type, e.message_id::text AS "messageId", e.endpoint_id::text AS "endpointId",
            e.created_at AS "createdAt",
            e.reply_code AS "replyCode", e.enhanced_code AS "enhancedCode", e.reply_text AS "replyText", e.retry_at AS "retryAt",
            r.address, r.kind, m.tags, m.metadata,
            a.id::text AS "attemptId", a.attempt, a.started_at AS "startedAt", a.duration_ms AS "durationMs", a.outcome,
            a.mx_host AS "mxHost", a.ip, a.port, a.policy, a.tls, a.tls_version AS "tlsVersion", a.cipher, a.verified,
            a.verify_error AS "verifyError", a.cert_subject AS "certSubject", a.cert_issuer AS "certIssuer",
            a.cert_not_after AS "certNotAfter", a.cert_fingerprint AS "certFingerprint", a.dkim_selectors AS "dkimSelectors",
            a.policy_source AS "policySource", a.policy_detail AS "policyDetail",
            a.reply_code AS "attemptReplyCode", a.enhanced_code AS "attemptEnhancedCode", a.reply_text AS "attemptReplyText"
       FROM events e
       LEFT JOIN recipients r ON r.id = e.recipient_id
       LEFT JOIN messages m ON m.id = e.message_id
       LEFT JOIN delivery_attempts a ON a.id = e.attempt_id`;

export interface EventFilters {
  after: EventPosition | null;
  types: readonly EventType[] | null;
  messageId: string | null;
  since: Date | null;
  limit: number;
}

export interface EventRow {
  id: string; txid: string; type: EventType; createdAt: Date;
  replyCode: number | null; enhancedCode: string | null; replyText: string | null; retryAt: Date | null;
  /** Null for an event of no message (webhook.disabled), which names its endpoint instead. */
  messageId: string | null; endpointId: string | null;
  address: string | null; kind: string | null; tags: string[] | null; metadata: unknown;
  /** The attempt whose evidence the event carries; its columns are null without one. */
  attemptId: string | null; attempt: number | null; startedAt: Date | null; durationMs: number | null; outcome: string | null;
  mxHost: string | null; ip: string | null; port: number | null; policy: string | null; tls: boolean | null;
  tlsVersion: string | null; cipher: string | null; verified: boolean | null; verifyError: string | null;
  certSubject: string | null; certIssuer: string | null; certNotAfter: Date | null; certFingerprint: string | null;
  dkimSelectors: string[] | null; policySource: string | null; policyDetail: unknown; attemptReplyCode: number | null; attemptEnhancedCode: string | null; attemptReplyText: string | null;
}

/**
 * A key's events after `after`, in the order they were committed. Only events of
 * transactions older than every one still running are read (pg_snapshot_xmin): a later
 * page can then never find an event that belongs before the cursor.
 */
export function findEvents(db: Db, apiKeyId: string, f: EventFilters): Promise<EventRow[]> {
  const values: unknown[] = [apiKeyId];
  const where = ["e.api_key_id = $1", "e.txid < pg_snapshot_xmin(pg_current_snapshot())"];
  const param = (v: unknown) => `$${values.push(v)}`;
  if (f.after) where.push(`(e.txid, e.id) > (${param(f.after.txid)}::xid8, ${param(f.after.id)}::bigint)`);
  if (f.types) where.push(`e.type = ANY(${param(f.types)}::text[])`);
  if (f.messageId) where.push(`e.message_id = ${param(f.messageId)}::uuid`);
  if (f.since) where.push(`e.created_at >= ${param(f.since)}::timestamptz`);
  return db.$queryRawUnsafe<EventRow[]>(
    `${EVENT_SELECT}
      WHERE ${where.join(" AND ")}
      ORDER BY e.txid, e.id
      LIMIT ${param(f.limit)}`,
    ...values,
  );
}
