// The database is the queue (SPEC section 1). A delivery row is claimed by moving its
// next_attempt_at past a lease and stamping the worker id and attempt number, in one
// auto-committed statement with FOR UPDATE SKIP LOCKED: no transaction stays open
// while the worker talks SMTP, and a worker that dies simply lets its lease run out,
// after which the row is due again for anyone. Results are written under a fence
// (lease_owner and attempt number), so a worker whose lease expired cannot overwrite
// what a newer attempt recorded.
import type { Db } from "../db/client.ts";
import { deriveMessageStatus, FINAL_RECIPIENT_STATUSES, type RecipientStatus } from "../domain/message.ts";
import type { TlsEvidence } from "./smtp-attempt.ts";

export interface ClaimedDelivery {
  id: bigint;
  messageId: string;
  domain: string;
  attempt: number; // 1 for the first attempt
  createdAt: Date;
  tlsPolicy: "opportunistic" | "required";
}

const CLAIM_SQL = `
WITH due AS (
  SELECT id FROM deliveries
   WHERE state = 'pending' AND next_attempt_at <= now()
   ORDER BY next_attempt_at
   LIMIT $1
   FOR UPDATE SKIP LOCKED
), claimed AS (
  UPDATE deliveries d
     SET attempts = d.attempts + 1, lease_owner = $2, next_attempt_at = now() + make_interval(secs => $3::double precision / 1000)
    FROM due WHERE d.id = due.id
  RETURNING d.id, d.message_id, d.domain, d.attempts, d.created_at
), rcpt AS (
  UPDATE recipients r SET status = 'sending', updated_at = now()
    FROM claimed WHERE r.delivery_id = claimed.id AND r.status IN ('queued', 'scheduled', 'deferred', 'sending')
  RETURNING r.id
), msg AS (
  UPDATE messages m SET status = 'sending', updated_at = now()
    FROM (SELECT DISTINCT message_id FROM claimed) c
   WHERE m.id = c.message_id AND m.status IN ('queued', 'scheduled', 'deferred')
  RETURNING m.id
)
SELECT c.id, c.message_id::text AS message_id, c.domain, c.attempts, c.created_at, m.tls_policy
  FROM claimed c JOIN messages m ON m.id = c.message_id`;

export async function claimDeliveries(db: Db, workerId: string, limit: number, leaseMs: number): Promise<ClaimedDelivery[]> {
  const rows = await db.$queryRawUnsafe<
    Array<{ id: bigint; message_id: string; domain: string; attempts: number; created_at: Date; tls_policy: string }>
  >(CLAIM_SQL, limit, workerId, leaseMs);
  return rows.map((r) => ({
    id: BigInt(r.id),
    messageId: r.message_id,
    domain: r.domain,
    attempt: Number(r.attempts),
    createdAt: r.created_at,
    tlsPolicy: r.tls_policy === "required" ? "required" : "opportunistic",
  }));
}

export interface DeliveryRecipient {
  id: bigint;
  address: string;
}

/** Recipients of a claimed delivery that still need the message. */
export async function pendingRecipients(db: Db, deliveryId: bigint): Promise<DeliveryRecipient[]> {
  return db.recipient.findMany({
    where: { deliveryId, status: { notIn: [...FINAL_RECIPIENT_STATUSES] } },
    orderBy: { position: "asc" },
    select: { id: true, address: true },
  });
}

export interface AttemptEvidence extends TlsEvidence {
  mxHost: string | null;
  ip: string | null;
  port: number | null;
  policy: "opportunistic" | "required";
  startedAt: Date;
  durationMs: number;
}

export interface RecipientResult {
  recipientId: bigint;
  status: Extract<RecipientStatus, "delivered" | "deferred" | "bounced" | "failed">;
  replyCode: number | null;
  enhancedCode: string | null;
  replyText: string | null;
  /** Evidence of each host tried for this recipient in this attempt, in order. */
  attempts: Array<{ evidence: AttemptEvidence; outcome: "delivered" | "deferred" | "bounced"; replyCode: number | null; enhancedCode: string | null; replyText: string | null }>;
}

export interface Completion {
  delivery: ClaimedDelivery;
  workerId: string;
  results: RecipientResult[];
  /** When any recipient is still deferred: the next attempt time. */
  retryAt: Date | null;
}

/**
 * Records the outcome of one attempt. Returns false (and writes nothing) when the
 * lease was lost: another worker owns the row now and its result wins.
 */
export async function completeDelivery(db: Db, c: Completion): Promise<boolean> {
  const anyDeferred = c.results.some((r) => r.status === "deferred");
  return db.$transaction(async (tx) => {
    const fenced = await tx.$executeRawUnsafe(
      `UPDATE deliveries
          SET state = $4, lease_owner = NULL, next_attempt_at = COALESCE($5::timestamptz, next_attempt_at)
        WHERE id = $1 AND lease_owner = $2 AND attempts = $3`,
      c.delivery.id, c.workerId, c.delivery.attempt, anyDeferred ? "pending" : "done", anyDeferred ? c.retryAt : null,
    );
    if (fenced !== 1) return false;
    const now = new Date();
    for (const r of c.results) {
      await tx.recipient.update({
        where: { id: r.recipientId },
        data: { status: r.status, attempts: { increment: 1 }, lastCode: r.replyCode, lastEnhanced: r.enhancedCode, lastReply: r.replyText, updatedAt: now },
      });
    }
    const attemptRows = c.results.flatMap((r) =>
      r.attempts.map((a) => ({
        messageId: c.delivery.messageId,
        recipientId: r.recipientId,
        attempt: c.delivery.attempt,
        mxHost: a.evidence.mxHost,
        ip: a.evidence.ip,
        port: a.evidence.port,
        policy: a.evidence.policy,
        tls: a.evidence.tls,
        tlsVersion: a.evidence.tlsVersion,
        cipher: a.evidence.cipher,
        verified: a.evidence.verified,
        verifyError: a.evidence.verifyError,
        certSubject: a.evidence.certSubject,
        certIssuer: a.evidence.certIssuer,
        certNotAfter: a.evidence.certNotAfter,
        certFingerprint: a.evidence.certFingerprint,
        replyCode: a.replyCode,
        enhancedCode: a.enhancedCode,
        replyText: a.replyText,
        outcome: a.outcome,
        startedAt: a.evidence.startedAt,
        durationMs: a.evidence.durationMs,
      })),
    );
    if (attemptRows.length > 0) await tx.deliveryAttempt.createMany({ data: attemptRows });
    await refreshMessageStatus(tx as unknown as Db, c.delivery.messageId, now);
    return true;
  });
}

/** Derive the message status from its recipients; stamp finished_at once all are final. */
export async function refreshMessageStatus(db: Db, messageId: string, now: Date): Promise<void> {
  // Lock the message row so two workers finishing two domains of one message serialise here.
  // FOR NO KEY UPDATE, not FOR UPDATE: each of them already holds a FOR KEY SHARE lock on
  // this row (taken by the foreign key check of the delivery_attempts it inserted), and
  // FOR UPDATE conflicts with that, so both would wait for each other (deadlock 40P01).
  await db.$queryRawUnsafe(`SELECT 1 FROM messages WHERE id = $1::uuid FOR NO KEY UPDATE`, messageId);
  const rs = await db.recipient.findMany({ where: { messageId }, select: { status: true } });
  const statuses = rs.map((r) => r.status as RecipientStatus);
  const status = deriveMessageStatus(statuses);
  const final = statuses.every((s) => FINAL_RECIPIENT_STATUSES.has(s));
  await db.message.update({ where: { id: messageId }, data: { status, updatedAt: now, ...(final ? { finishedAt: now } : {}) } });
}

/** Give back this worker's leases (graceful shutdown): the rows become due at once. */
export async function releaseLeases(db: Db, workerId: string): Promise<number> {
  return db.$executeRawUnsafe(
    `UPDATE deliveries SET lease_owner = NULL, next_attempt_at = now() WHERE lease_owner = $1 AND state = 'pending'`,
    workerId,
  );
}
