// Statements on the queue rows (deliveries): the API's (counting and cancelling a
// message's rows) and the worker's (claiming, renewing, recording results, handing rows
// back). New rows are inserted with their message by insertMessages (db/messages.ts).
import type pg from "pg";
import { deriveMessageStatus, FINAL_RECIPIENT_STATUSES, type MessageStatus, type RecipientStatus } from "../domain/message.ts";
import type { AcceptSource, TlsPolicy } from "../domain/tls-policy.ts";
import type { AttemptEvidence, ReplyVerdict } from "../domain/evidence.ts";
import type { Db, Tx } from "./client.ts";
import { fanOutToWebhooks } from "./events.ts";
import type { Mailbox } from "../domain/address.ts";
import { isAddressFailure } from "../domain/suppression.ts";
import { senderDomainSql } from "./suppressions.ts";

export function countDeliveriesOf(tx: Db | Tx, messageId: string): Promise<number> {
  return tx.delivery.count({ where: { messageId } });
}

/**
 * Moves a message's queue rows that no worker has started (pending, attempts = 0) to
 * 'cancelled'; returns how many. A worker's claim raises attempts under the row lock,
 * so a claimed row is not counted.
 */
export function cancelUntouchedDeliveries(tx: Db | Tx, messageId: string): Promise<number> {
  return tx.$executeRawUnsafe(
    `UPDATE deliveries SET state = 'cancelled', lease_owner = NULL
      WHERE message_id = $1::uuid AND state = 'pending' AND attempts = 0`, messageId);
}

// ---------------------------------------------------------------------------------
// The worker's statements (ARCHITECTURE.md, "Leases and fences"). A delivery row is
// claimed by moving its next_attempt_at past a lease and stamping the worker id and
// attempt number, in one auto-committed statement with FOR UPDATE SKIP LOCKED: no transaction stays open
// while the worker talks SMTP, and a worker that dies simply lets its lease run out,
// after which the row is due again for anyone. Results are written under a fence
// (lease_owner and attempt number), so a worker whose lease expired cannot overwrite
// what a newer attempt recorded.
//
// Leases: a claim takes a short claim lease (WORKER_CLAIM_LEASE_MS), so rows a dead
// worker claimed ahead but never started are due again within seconds. A delivery
// runs under WORKER_LEASE_MS: the claim gives it to the rows that start at once, and
// starting one that waited extends its lease first (renewLeases, fenced: a row someone
// else has claimed since is not started) unless its claim lease surely outlasts two
// heartbeats (worker/claim-loop.ts), and a worker renews every lease it holds in
// one statement every WORKER_LEASE_RENEW_MS, so a peer slower than the lease, or a
// result write waiting for the database to come back, keeps its row. A lease that ran
// out while nobody else claimed the row is still the owner's: every fence is owner +
// attempt number, which only a new claim changes.
//
// These statements go through the process's pg.Pool (the one Prisma's adapter uses),
// not Prisma's query builder: they are the worker's hot path, and measured on two
// cores a Prisma interactive transaction recording one result cost ~5 ms of Node CPU
// against ~0.7 ms for the same statements over pg, which capped a worker at ~130
// messages/s.
// ---------------------------------------------------------------------------------

interface DeliveryRecipient {
  id: bigint;
  address: string;
}

/**
 * The message of a claimed delivery as the worker needs it: content still encrypted (the
 * worker decrypts it), every recipient of the message with its status and queue row.
 */
export interface MessageToDeliver {
  id: string; message_id_header: string; created_at: Date; from_address: string; from_name: string | null;
  reply_to: Mailbox[] | null; subject: Buffer | null; text_body: Buffer | null; html_body: Buffer | null; headers: Buffer | null;
  attachments: Buffer | null; content_purged_at: Date | null;
  recipients: Array<{ id: string; kind: string; address: string; name: string | null; status: RecipientStatus; delivery_id: string }>;
}

export interface ClaimedDelivery {
  id: bigint;
  messageId: string;
  domain: string;
  attempt: number; // 1 for the first attempt
  createdAt: Date;
  tlsPolicy: TlsPolicy;
  /** The layer that made tlsPolicy what it is, at acceptance. */
  tlsPolicySource: AcceptSource;
  /** Recipients of this delivery still to be delivered, in request order. */
  recipients: DeliveryRecipient[];
  /** The message, loaded by the claim itself so that a delivery costs no further read. */
  message: MessageToDeliver;
  /** Claimed under the full delivery lease (it starts at once), not the short claim lease. */
  started: boolean;
  /** Its message was sent with "priority": "high": it goes ahead of the backlog's normal rows. */
  highPriority: boolean;
}

// The claim reads the message with its content in the same statement, so a delivery needs
// no read of its own. Of the rows claimed, the first $5 start at once and take the full
// delivery lease here, which saves renewLeases a statement per delivery; the rest wait in
// the worker's backlog under the short claim lease ($3).
//
// Fair queueing (issue 14): due rows are taken in turns across API keys ("lanes"): each
// key's oldest due row, then each key's second, and so on, so one key's burst of 10,000
// delays another key's single message by one claim, not by the burst. Within a key, a
// "high" priority row goes first, so a password reset overtakes its own key's newsletter
// but never another key's turn: a key cannot buy precedence over other tenants by marking
// everything high. A key alone takes the whole batch in due order, as before: the turns
// cost a burst nothing when nobody else is waiting.
//
// Cost: the lanes are the keys with pending rows, found by a loose index scan (one probe
// per key: Postgres 15 has no skip scan); each lane is read by two range scans on the
// partial claim index (high, then normal, each bounded by next_attempt_at <= now()), so
// rows leased or deferred into the future are never walked. The outer LIMIT stops the
// normal scan once the high one filled the batch, so at most $1 rows per lane are locked;
// rows locked and not taken are free again when the statement commits.
const CLAIM_SQL = `
WITH RECURSIVE lanes AS (
  (SELECT api_key_id FROM deliveries WHERE state = 'pending' ORDER BY api_key_id LIMIT 1)
  UNION ALL
  SELECT (SELECT d.api_key_id FROM deliveries d WHERE d.state = 'pending' AND d.api_key_id > lanes.api_key_id
           ORDER BY d.api_key_id LIMIT 1)
    FROM lanes WHERE lanes.api_key_id IS NOT NULL
), due AS (
  SELECT p.* FROM lanes CROSS JOIN LATERAL (
    SELECT * FROM (SELECT d.id, d.api_key_id, d.high_priority, d.next_attempt_at FROM deliveries d
                    WHERE d.state = 'pending' AND d.api_key_id = lanes.api_key_id AND d.high_priority
                      AND d.next_attempt_at <= now() AND d.id <> ALL($4::bigint[])
                    ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) high
    UNION ALL
    SELECT * FROM (SELECT d.id, d.api_key_id, d.high_priority, d.next_attempt_at FROM deliveries d
                    WHERE d.state = 'pending' AND d.api_key_id = lanes.api_key_id AND NOT d.high_priority
                      AND d.next_attempt_at <= now() AND d.id <> ALL($4::bigint[])
                    ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) normal
    LIMIT $1) p
), ranked AS (
  -- LIMIT, not a filter on rn: it also tells the planner how few rows follow, which keeps
  -- the statement's estimated cost under jit_above_cost (compiling it took 50 ms a claim).
  SELECT id, rn FROM (
    SELECT id, row_number() OVER (ORDER BY turn, high_priority DESC, next_attempt_at, id) AS rn
      FROM (SELECT *, row_number() OVER (PARTITION BY api_key_id ORDER BY high_priority DESC, next_attempt_at, id) AS turn FROM due) t
  ) r ORDER BY rn LIMIT $1
), claimed AS (
  UPDATE deliveries d
     SET attempts = d.attempts + 1, lease_owner = $2,
         next_attempt_at = now() + make_interval(secs => (CASE WHEN ranked.rn <= $5 THEN $6 ELSE $3 END)::double precision / 1000)
    FROM ranked WHERE d.id = ranked.id
  RETURNING d.id, d.message_id, d.domain, d.attempts, d.created_at, d.high_priority, ranked.rn
), rcpt AS (
  -- 'sending' is not written here: the lease says it, and the reads derive it (db/messages.ts).
  -- A row written 'sending' by an earlier version is still one to deliver.
  SELECT r.id, r.delivery_id, r.address, r.position FROM recipients r JOIN claimed ON r.delivery_id = claimed.id
   WHERE r.status IN ('queued', 'scheduled', 'deferred', 'sending')
)
SELECT c.id::text AS id, c.message_id::text AS message_id, c.domain, c.attempts, c.created_at, m.tls_policy, m.tls_policy_source, c.rn <= $5 AS started,
       c.high_priority,
       COALESCE((SELECT json_agg(json_build_object('id', r.id::text, 'address', r.address) ORDER BY r.position)
                   FROM rcpt r WHERE r.delivery_id = c.id), '[]'::json) AS pending,
       m.message_id_header, m.from_address, m.from_name, m.reply_to, m.subject, m.text_body, m.html_body, m.headers,
       m.attachments, m.content_purged_at, m.created_at AS message_created_at,
       (SELECT json_agg(json_build_object('id', r.id::text, 'kind', r.kind, 'address', r.address, 'name', r.name,
                                          'status', r.status, 'delivery_id', r.delivery_id::text) ORDER BY r.position)
          FROM recipients r WHERE r.message_id = m.id) AS all_recipients
  FROM claimed c JOIN messages m ON m.id = c.message_id
 ORDER BY c.rn`;

interface ClaimRow {
  id: string; message_id: string; domain: string; attempts: number; created_at: Date; tls_policy: string; tls_policy_source: AcceptSource | null; started: boolean; high_priority: boolean;
  pending: Array<{ id: string; address: string }>;
  message_id_header: string; from_address: string; from_name: string | null; reply_to: Mailbox[] | null;
  subject: Buffer | null; text_body: Buffer | null; html_body: Buffer | null; headers: Buffer | null; attachments: Buffer | null;
  content_purged_at: Date | null; message_created_at: Date; all_recipients: MessageToDeliver["recipients"];
}

/**
 * Claims up to `limit` due deliveries, each with its message, in turns across API keys
 * (CLAIM_SQL). The first `startNow` take the full lease `leaseMs`, being started at once; the others the claim
 * lease `claimLeaseMs`. `holding` are the rows this worker is still working on: a lease of
 * one of them that ran out (the database was away longer than it) is renewed, never
 * claimed a second time by the same worker.
 */
export async function claimDeliveries(
  pool: pg.Pool, workerId: string, limit: number, leases: { claimLeaseMs: number; leaseMs: number; startNow: number }, holding: Iterable<bigint> = [],
): Promise<ClaimedDelivery[]> {
  const { rows } = await pool.query<ClaimRow>(CLAIM_SQL, [limit, workerId, leases.claimLeaseMs, [...holding].map(String), leases.startNow, leases.leaseMs]);
  return rows.map((r) => ({
    id: BigInt(r.id),
    messageId: r.message_id,
    domain: r.domain,
    attempt: Number(r.attempts),
    createdAt: r.created_at,
    tlsPolicy: r.tls_policy === "required" ? "required" : "opportunistic",
    // A message accepted before the column: its policy came from the key or the message.
    tlsPolicySource: r.tls_policy_source ?? (r.tls_policy === "required" ? "message" : "default"),
    recipients: r.pending.map((x) => ({ id: BigInt(x.id), address: x.address })),
    started: r.started,
    highPriority: r.high_priority,
    message: {
      id: r.message_id, message_id_header: r.message_id_header, created_at: r.message_created_at, from_address: r.from_address,
      from_name: r.from_name, reply_to: r.reply_to, subject: r.subject, text_body: r.text_body, html_body: r.html_body,
      headers: r.headers, attachments: r.attachments, content_purged_at: r.content_purged_at, recipients: r.all_recipients ?? [],
    },
  }));
}

// Never shortens a lease: a renewal of a row as "not started" may cross the statement
// that started it. Committed without waiting for the WAL flush (synchronous_commit off for
// this transaction only, which Postgres allows per transaction): it runs for deliveries
// that waited in the backlog when they start, and at every heartbeat; a renewal lost if the database crashes leaves the lease it extended (at least
// the claim lease) and is redone by the next one, while results stay durable.
const RENEW_SQL = `
UPDATE deliveries d
   SET next_attempt_at = GREATEST(d.next_attempt_at, now() + make_interval(secs => u.lease_ms::double precision / 1000))
  FROM unnest($2::bigint[], $3::int[], $4::int[]) AS u(id, attempts, lease_ms)
 CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
 WHERE d.id = u.id AND d.lease_owner = $1 AND d.attempts = u.attempts AND d.state = 'pending'
RETURNING d.id::text AS id`;

/**
 * Extends the lease of each delivery to at least `leaseMs` from now, in one statement,
 * fenced by owner and attempt number. Returns the ids still held: a missing one was
 * claimed by another worker or handed back, and must not be (or no longer be) worked on.
 */
export async function renewLeases(pool: pg.Pool, workerId: string, leases: Array<{ delivery: ClaimedDelivery; leaseMs: number }>): Promise<Set<bigint>> {
  if (leases.length === 0) return new Set();
  // Not a named (prepared) statement, though it runs often: the
  // embedded database is one session shared by every connection, where a second
  // connection preparing the same name fails (42P05).
  const { rows } = await pool.query<{ id: string }>(RENEW_SQL, [
    workerId, leases.map((l) => String(l.delivery.id)), leases.map((l) => l.delivery.attempt), leases.map((l) => l.leaseMs),
  ]);
  return new Set(rows.map((r) => BigInt(r.id)));
}

export interface RecipientResult {
  recipientId: bigint;
  status: Extract<RecipientStatus, "delivered" | "deferred" | "bounced" | "failed">;
  replyCode: number | null;
  enhancedCode: string | null;
  replyText: string | null;
  /** Evidence of each host tried for this recipient in this attempt, in order. */
  attempts: Array<ReplyVerdict & { evidence: AttemptEvidence }>;
}

export interface Completion {
  delivery: ClaimedDelivery;
  workerId: string;
  results: RecipientResult[];
  /** When any recipient is still deferred: the next attempt time. */
  retryAt: Date | null;
  /**
   * The message's new status, when this delivery holds all of its recipients (the
   * caller could then compute it); otherwise it is derived under the message row lock.
   */
  message?: { status: MessageStatus; final: boolean };
}

/** The delivery_attempts rows of one recipient's result, as the statements' JSON input. */
function evidenceRows(r: RecipientResult) {
  return r.attempts.map((a) => ({
    recipient_id: String(r.recipientId),
    mx_host: a.evidence.mxHost,
    ip: a.evidence.ip,
    port: a.evidence.port,
    policy: a.evidence.policy,
    tls: a.evidence.tls,
    tls_version: a.evidence.tlsVersion,
    cipher: a.evidence.cipher,
    verified: a.evidence.verified,
    verify_error: a.evidence.verifyError,
    cert_subject: a.evidence.certSubject,
    cert_issuer: a.evidence.certIssuer,
    cert_not_after: a.evidence.certNotAfter?.toISOString() ?? null,
    cert_fingerprint: a.evidence.certFingerprint,
    dkim_selectors: a.evidence.dkimSelectors ?? [],
    message_sha256: a.evidence.messageSha256 ?? null,
    policy_source: a.evidence.policySource ?? null,
    policy_detail: a.evidence.policyDetail ?? null,
    reply_code: a.replyCode,
    enhanced_code: a.enhancedCode,
    reply_text: a.replyText,
    outcome: a.outcome,
    started_at: a.evidence.startedAt.toISOString(),
    duration_ms: a.evidence.durationMs,
  }));
}

// Results of one or many deliveries in one statement (group commit). The fence is per
// delivery: a row whose lease was lost is left out of the fence CTE, and its recipients,
// evidence and message are written only through a join with the rows the fence kept, so a
// fenced-out delivery writes nothing while the others in the same statement are written.
// A delivery without a message status (its message has recipients at other domains)
// leaves the message row to its caller, which derives the status under the row lock.
// Each recipient's new status is also an event (the outbox, issue 12), naming the last
// attempt made for it, whose evidence the event carries.
const COMPLETE_SQL = `
WITH input AS (
  SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::text[], $7::boolean[])
    AS u(id, owner, attempts, state, retry_at, msg_status, msg_final)
), fence AS (
  UPDATE deliveries d
     SET state = i.state, lease_owner = NULL, next_attempt_at = COALESCE(i.retry_at, d.next_attempt_at)
    FROM input i
   WHERE d.id = i.id AND d.lease_owner = i.owner AND d.attempts = i.attempts
  RETURNING d.id, d.message_id, d.attempts, d.next_attempt_at, i.msg_status, i.msg_final
), rcpt AS (
  UPDATE recipients r
     SET status = u.status, attempts = r.attempts + 1, last_code = u.code, last_enhanced = u.enhanced,
         last_reply = u.reply, updated_at = now()
    FROM unnest($8::bigint[], $9::bigint[], $10::text[], $11::int[], $12::text[], $13::text[]) AS u(id, delivery_id, status, code, enhanced, reply)
    JOIN fence f ON f.id = u.delivery_id
   WHERE r.id = u.id AND r.delivery_id = u.delivery_id
  RETURNING r.id, r.message_id, r.delivery_id, r.address, r.status, r.last_code, r.last_enhanced, r.last_reply
), suppress AS (
  -- A permanent address failure (isAddressFailure, $15) puts the address on the sender
  -- domain's suppression list, with the reply as evidence; an entry already there stays.
  INSERT INTO suppressions (sender_domain, address, reason, message_id, recipient_id, reply_code, enhanced_code, reply_text)
  SELECT ${senderDomainSql("m.from_address")}, lower(r.address), 'hard_bounce', r.message_id, r.id, r.last_code, r.last_enhanced, r.last_reply
    FROM rcpt r
    JOIN unnest($8::bigint[], $15::boolean[]) AS s(id, suppress) ON s.id = r.id AND s.suppress
    JOIN messages m ON m.id = r.message_id
  ON CONFLICT (sender_domain, address) DO NOTHING
  RETURNING 1
), evidence AS (
  INSERT INTO delivery_attempts (message_id, recipient_id, attempt, mx_host, ip, port, policy, tls, tls_version, cipher,
                                 verified, verify_error, cert_subject, cert_issuer, cert_not_after, cert_fingerprint, dkim_selectors, message_sha256,
                                 policy_source, policy_detail, reply_code, enhanced_code, reply_text, outcome, started_at, duration_ms)
  SELECT f.message_id, a.recipient_id, f.attempts, a.mx_host, a.ip, a.port, a.policy, a.tls, a.tls_version, a.cipher,
         a.verified, a.verify_error, a.cert_subject, a.cert_issuer, a.cert_not_after, a.cert_fingerprint, COALESCE(a.dkim_selectors, '{}'), a.message_sha256,
         a.policy_source, a.policy_detail, a.reply_code, a.enhanced_code, a.reply_text, a.outcome, a.started_at, a.duration_ms
    FROM json_to_recordset($14::json) AS a(delivery_id bigint, recipient_id bigint, mx_host text, ip text, port int, policy text, tls boolean,
         tls_version text, cipher text, verified boolean, verify_error text, cert_subject text, cert_issuer text,
         cert_not_after timestamptz, cert_fingerprint text, dkim_selectors text[], message_sha256 text, policy_source text, policy_detail jsonb,
         reply_code int, enhanced_code text, reply_text text, outcome text, started_at timestamptz, duration_ms int)
    JOIN fence f ON f.id = a.delivery_id
  RETURNING id, recipient_id, started_at
), evt AS (
  INSERT INTO events (type, api_key_id, message_id, recipient_id, attempt_id, reply_code, enhanced_code, reply_text, retry_at)
  SELECT 'message.' || r.status, m.api_key_id, r.message_id, r.id, last.id, r.last_code, r.last_enhanced, r.last_reply,
         CASE WHEN r.status = 'deferred' THEN f.next_attempt_at END
    FROM rcpt r
    JOIN fence f ON f.id = r.delivery_id
    JOIN messages m ON m.id = r.message_id
    LEFT JOIN (SELECT DISTINCT ON (recipient_id) recipient_id, id FROM evidence ORDER BY recipient_id, started_at DESC, id DESC) last
      ON last.recipient_id = r.id
  RETURNING id, api_key_id, type
), hooks AS (
  ${fanOutToWebhooks("evt")}
), msg AS (
  UPDATE messages m SET status = f.msg_status, updated_at = now(), finished_at = CASE WHEN f.msg_final THEN now() ELSE m.finished_at END
    FROM fence f
   WHERE m.id = f.message_id AND f.msg_status IS NOT NULL
  RETURNING 1
)
SELECT id::text AS id FROM fence`;

/**
 * Records the outcomes of many attempts in one statement, each under its own fence, on the
 * pool or on a client inside a transaction. Returns the ids written: one missing had lost
 * its lease, and nothing of it was written.
 */
export async function completeDeliveries(db: pg.Pool | pg.PoolClient, cs: Completion[]): Promise<Set<bigint>> {
  const rcpt = cs.flatMap((c) => c.results.map((r) => ({ c, r })));
  const evidence = cs.flatMap((c) => c.results.flatMap((r) => evidenceRows(r).map((e) => ({ delivery_id: String(c.delivery.id), ...e }))));
  const deferred = (c: Completion) => c.results.some((r) => r.status === "deferred");
  const { rows } = await db.query<{ id: string }>(COMPLETE_SQL, [
    cs.map((c) => String(c.delivery.id)), cs.map((c) => c.workerId), cs.map((c) => c.delivery.attempt),
    cs.map((c) => (deferred(c) ? "pending" : "done")), cs.map((c) => (deferred(c) ? c.retryAt : null)),
    cs.map((c) => c.message?.status ?? null), cs.map((c) => c.message?.final ?? false),
    rcpt.map(({ r }) => String(r.recipientId)), rcpt.map(({ c }) => String(c.delivery.id)), rcpt.map(({ r }) => r.status),
    rcpt.map(({ r }) => r.replyCode), rcpt.map(({ r }) => r.enhancedCode), rcpt.map(({ r }) => r.replyText),
    JSON.stringify(evidence),
    rcpt.map(({ r }) => isAddressFailure(r)),
  ]);
  return new Set(rows.map((r) => BigInt(r.id)));
}

/**
 * Records the outcome of one attempt. Returns false (and writes nothing) when the
 * lease was lost: another worker owns the row now and its result wins. A delivery that
 * does not hold all of its message's recipients is written under the message row lock,
 * where the message status is derived from every recipient.
 */
export async function completeDelivery(pool: pg.Pool, c: Completion): Promise<boolean> {
  // One statement, so atomic without an explicit transaction.
  if (c.message) return (await completeDeliveries(pool, [c])).has(c.delivery.id);
  return underMessageLock(pool, c.delivery.messageId, async (client) => {
    if (!(await completeDeliveries(client, [c])).has(c.delivery.id)) return false; // rolled back: nothing written
    await refreshMessageStatus(client, c.delivery.messageId);
    return true;
  });
}

/**
 * Runs `fn` in a transaction holding the message row's lock, so two workers finishing two
 * domains of one message serialise. FOR NO KEY UPDATE, not FOR UPDATE: an evidence insert
 * takes a FOR KEY SHARE lock on this row (its foreign key), and FOR UPDATE would conflict
 * with the other worker's, so both would wait for each other (deadlock 40P01). Commits
 * when `fn` returns true, rolls back when it returns false or throws.
 */
export async function underMessageLock(pool: pg.Pool, messageId: string, fn: (client: pg.PoolClient) => Promise<boolean>): Promise<boolean> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query(`SELECT 1 FROM messages WHERE id = $1::uuid FOR NO KEY UPDATE`, [messageId]);
    const ok = await fn(client);
    await client.query(ok ? "COMMIT" : "ROLLBACK");
    return ok;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

/** Derive the message status from its recipients; stamp finished_at once all are final. Caller holds the row lock. */
export async function refreshMessageStatus(client: pg.PoolClient, messageId: string): Promise<void> {
  const { rows } = await client.query<{ status: RecipientStatus }>(`SELECT status FROM recipients WHERE message_id = $1::uuid`, [messageId]);
  const statuses = rows.map((r) => r.status);
  const final = statuses.every((s) => FINAL_RECIPIENT_STATUSES.has(s));
  await client.query(
    `UPDATE messages SET status = $2, updated_at = now(), finished_at = CASE WHEN $3 THEN now() ELSE finished_at END WHERE id = $1::uuid`,
    [messageId, deriveMessageStatus(statuses), final],
  );
}

/** Give back every lease this worker holds (graceful shutdown ran out of time): the rows become due at once. */
export async function releaseLeases(pool: pg.Pool, workerId: string): Promise<number> {
  const r = await pool.query(`UPDATE deliveries SET lease_owner = NULL, next_attempt_at = now() WHERE lease_owner = $1 AND state = 'pending'`, [workerId]);
  return r.rowCount ?? 0;
}

/**
 * Give back deliveries that were claimed but never attempted. The claim counted an
 * attempt; nothing was sent, so the count goes back and the lease is released, which
 * also lets a queued message be cancelled again (its recipients never left `queued`:
 * `sending` is derived from the lease). Returns the number of deliveries given back.
 */
export async function returnUnstarted(pool: pg.Pool, workerId: string, deliveries: ClaimedDelivery[]): Promise<number> {
  if (deliveries.length === 0) return 0;
  const r = await pool.query(
    `UPDATE deliveries d SET lease_owner = NULL, next_attempt_at = now(), attempts = d.attempts - 1
       FROM unnest($2::bigint[], $3::int[]) AS u(id, attempts)
      WHERE d.id = u.id AND d.attempts = u.attempts AND d.lease_owner = $1 AND d.state = 'pending'`,
    [workerId, deliveries.map((d) => String(d.id)), deliveries.map((d) => d.attempt)],
  );
  return r.rowCount ?? 0;
}
