// Statements on a message and the rows that hang off it (recipients, delivery
// attempts): the API writes and reads them. The worker's statements (the claim, which
// also loads the message to deliver, recipients and evidence) go with its queue rows, in
// db/deliveries.ts.
import type pg from "pg";
import type { Prisma } from "../generated/prisma/client.ts";
import type { Db, Tx } from "./client.ts";
import { fanOutToWebhooks } from "./events.ts";
import type { MessagePriority } from "../domain/message.ts";
import type { AcceptSource } from "../domain/tls-policy.ts";
import { senderDomainSql } from "./suppressions.ts";

// ---------------------------------------------------------------------------------
// Accepting: ONE statement inserts a batch of messages, each with its recipients, its
// queue rows (one per recipient domain) and its idempotency record, so either all of
// them exist or none do (ARCHITECTURE.md, "The database is the queue"). The batching
// of concurrent requests into one statement is services/message-writer.ts.
// ---------------------------------------------------------------------------------

/** A message as accepted, ready to insert with its recipients, queue rows and idempotency record. */
export interface NewMessageRow {
  id: string;
  apiKeyId: string;
  idempotencyKey: string | null;
  requestHash: string | null;
  response: string; // JSON of the 202 body, replayed for a repeated Idempotency-Key
  createdAt: Date;
  expiresAt: Date;
  status: "queued" | "scheduled";
  tlsPolicy: string;
  tlsPolicySource: AcceptSource;
  priority: MessagePriority;
  messageIdHeader: string;
  fromAddress: string;
  fromName: string | null;
  replyTo: string | null; // JSON
  subject: Buffer | null;
  textBody: Buffer | null;
  htmlBody: Buffer | null;
  headers: Buffer | null;
  attachments: Buffer | null;
  tags: string[];
  metadata: string | null; // JSON
  sendAt: Date | null;
  recipients: Array<{ kind: string; address: string; name: string | null; domain: string }>;
}

// Suppression list (issue 13): a recipient whose address the sender domain suppresses is
// written 'suppressed' (with its event) and given no queue work; its delivery row is 'done'
// when every recipient of that domain is suppressed, and the message is 'suppressed' and
// finished when every recipient is. The stored 202 answer (replayed for the Idempotency-Key)
// names them, as the first answer did.
const INSERT_MESSAGES_SQL = `
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], $7::timestamptz[],
                       $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::jsonb[], $14::text[], $15::text[],
                       $16::text[], $17::text[], $18::text[], $19::jsonb[], $20::jsonb[], $21::timestamptz[], $30::text[], $31::text[])
    AS u(id, api_key_id, idem_key, request_hash, response, created_at, expires_at, status, tls_policy, message_id_header,
         from_address, from_name, reply_to, subject, text_body, html_body, headers, attachments, tags, metadata, send_at, priority,
         tls_policy_source)
), rin AS (
  SELECT r.*, s.id IS NOT NULL AS suppressed
    FROM unnest($24::uuid[], $25::int[], $26::text[], $27::text[], $28::text[], $29::text[])
         AS r(message_id, position, kind, address, name, domain)
    JOIN input i ON i.id = r.message_id
    LEFT JOIN suppressions s ON s.sender_domain = ${senderDomainSql("i.from_address")} AND s.address = lower(r.address)
), sup AS (
  SELECT message_id, bool_and(suppressed) AS all_suppressed,
         COALESCE(jsonb_agg(address ORDER BY position) FILTER (WHERE suppressed), '[]'::jsonb) AS addresses
    FROM rin GROUP BY message_id
), answer AS (
  SELECT i.*, CASE WHEN jsonb_array_length(sup.addresses) = 0 THEN i.response
                   ELSE i.response || jsonb_build_object('suppressed', sup.addresses)
                        || CASE WHEN sup.all_suppressed THEN '{"status": "suppressed"}'::jsonb ELSE '{}'::jsonb END END AS answer,
         sup.all_suppressed, sup.addresses AS suppressed
    FROM input i JOIN sup ON sup.message_id = i.id
), idem AS (
  INSERT INTO idempotency_records (api_key_id, key, request_hash, status_code, response, message_id, created_at, expires_at)
  SELECT api_key_id, idem_key, request_hash, 202, answer, id, created_at, expires_at FROM answer WHERE idem_key IS NOT NULL
  ON CONFLICT (api_key_id, key) DO UPDATE
     SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code, response = EXCLUDED.response,
         message_id = EXCLUDED.message_id, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
   WHERE idempotency_records.expires_at <= EXCLUDED.created_at
  RETURNING message_id
), msg AS (
  INSERT INTO messages (id, api_key_id, status, tls_policy, tls_policy_source, priority, message_id_header, from_address, from_name, reply_to,
                        subject, text_body, html_body, headers, attachments, tags, metadata, send_at, created_at, updated_at, finished_at)
  SELECT id, api_key_id, CASE WHEN all_suppressed THEN 'suppressed' ELSE status END, tls_policy, tls_policy_source, priority, message_id_header, from_address, from_name, reply_to,
         decode(subject, 'base64'), decode(text_body, 'base64'), decode(html_body, 'base64'), decode(headers, 'base64'),
         decode(attachments, 'base64'), ARRAY(SELECT jsonb_array_elements_text(tags)), metadata,
         send_at, created_at, created_at, CASE WHEN all_suppressed THEN created_at END
    FROM answer WHERE idem_key IS NULL OR id IN (SELECT message_id FROM idem)
  RETURNING id
), dlv AS (
  INSERT INTO deliveries (message_id, api_key_id, high_priority, domain, state, next_attempt_at, created_at)
  SELECT d.message_id, i.api_key_id, i.priority = 'high', d.domain,
         CASE WHEN (SELECT bool_and(rin.suppressed) FROM rin WHERE rin.message_id = d.message_id AND rin.domain = d.domain) THEN 'done' ELSE 'pending' END,
         COALESCE(i.send_at, i.created_at), COALESCE(i.send_at, i.created_at)
    FROM unnest($22::uuid[], $23::text[]) AS d(message_id, domain)
    JOIN input i ON i.id = d.message_id
   WHERE d.message_id IN (SELECT id FROM msg)
  RETURNING id, message_id, domain
), rcp AS (
  INSERT INTO recipients (message_id, delivery_id, position, kind, address, name, status, updated_at)
  SELECT r.message_id, dlv.id, r.position, r.kind, r.address, r.name, CASE WHEN r.suppressed THEN 'suppressed' ELSE i.status END, i.created_at
    FROM rin r
    JOIN dlv ON dlv.message_id = r.message_id AND dlv.domain = r.domain
    JOIN input i ON i.id = r.message_id
  RETURNING id, message_id, status
), evt AS (
  INSERT INTO events (type, api_key_id, message_id, recipient_id, created_at)
  SELECT 'message.' || rcp.status, i.api_key_id, rcp.message_id, rcp.id, i.created_at
    FROM rcp JOIN input i ON i.id = rcp.message_id
  RETURNING id, api_key_id, type
), hooks AS (
  ${fanOutToWebhooks("evt")}
)
SELECT m.id::text AS id, (SELECT count(*) FROM rcp WHERE rcp.message_id = m.id)::int AS recipients,
       (SELECT a.suppressed FROM answer a WHERE a.id = m.id) AS suppressed
  FROM msg m`;

// Content travels as base64 text and is decoded by the statement: a third larger than
// the bytes, where node-postgres would send a bytea[] element as hex (twice as large) and
// escape it again as an array element. (Through Prisma's driver adapter, a bytea[] whose
// first element was null even made the later Buffers go as text.)
const b64 = (b: Buffer | null): string | null => (b === null ? null : b.toString("base64"));

function params(rows: NewMessageRow[]): unknown[] {
  const col = <T>(f: (r: NewMessageRow) => T) => rows.map(f);
  const dlv = rows.flatMap((r) => [...new Set(r.recipients.map((x) => x.domain))].map((domain) => ({ id: r.id, domain })));
  const rcp = rows.flatMap((r) => r.recipients.map((x, i) => ({ id: r.id, position: i + 1, ...x })));
  return [
    col((r) => r.id), col((r) => r.apiKeyId), col((r) => r.idempotencyKey), col((r) => r.requestHash), col((r) => r.response),
    col((r) => r.createdAt), col((r) => r.expiresAt), col((r) => r.status), col((r) => r.tlsPolicy), col((r) => r.messageIdHeader),
    col((r) => r.fromAddress), col((r) => r.fromName), col((r) => r.replyTo), col((r) => b64(r.subject)), col((r) => b64(r.textBody)),
    col((r) => b64(r.htmlBody)), col((r) => b64(r.headers)), col((r) => b64(r.attachments)), col((r) => JSON.stringify(r.tags)),
    col((r) => r.metadata), col((r) => r.sendAt),
    dlv.map((d) => d.id), dlv.map((d) => d.domain),
    rcp.map((x) => x.id), rcp.map((x) => x.position), rcp.map((x) => x.kind), rcp.map((x) => x.address),
    rcp.map((x) => x.name), rcp.map((x) => x.domain),
    col((r) => r.priority), col((r) => r.tlsPolicySource),
  ];
}

/**
 * Inserts rows in one auto-committed statement; returns the messages that were created (a
 * reused idempotency key creates nothing), each with its suppressed recipients. It runs on the process's pg.Pool, not through
 * Prisma: this is the accept path's only statement, and Prisma's $queryRaw path (request
 * building, its query engine, result mapping, and the garbage they leave) was the
 * largest library cost per request in the API's CPU profile (issue 10). It never runs inside a
 * transaction, so the embedded database's single session is held for this statement only.
 *
 * `prepared`: a named statement, parsed and planned once per connection instead of once
 * per call; that took about a quarter off Postgres' CPU per accepted message in bench:send.
 * Never on the embedded database: its one session is shared by every connection, and a
 * second connection preparing the same name fails (42P05). A pooler in front of Postgres
 * must keep prepared statements per client (session pooling, or PgBouncer 1.21+ with
 * max_prepared_statements).
 */
export async function insertMessages(pool: pg.Pool, rows: NewMessageRow[], opts: { prepared?: boolean } = {}): Promise<Map<string, Inserted>> {
  const values = params(rows);
  const { rows: out } = await pool.query<{ id: string; recipients: number; suppressed: string[] }>(
    opts.prepared ? { name: "sealpost_insert_messages", text: INSERT_MESSAGES_SQL, values } : { text: INSERT_MESSAGES_SQL, values },
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const o of out) {
    if (o.recipients !== byId.get(o.id)?.recipients.length) throw new Error(`message ${o.id}: recipient rows were not all written`);
  }
  return new Map(out.map((o) => [o.id, { suppressed: o.suppressed }]));
}

/** A message the statement created: the recipients it did not queue because the sender domain suppresses them. */
export interface Inserted {
  suppressed: string[];
}

// ---------------------------------------------------------------------------------
// Reading back. Every read is scoped by api_key_id: another key's message is simply
// not found.
// ---------------------------------------------------------------------------------

/** Queue rows a worker holds a lease on at `now`: their recipients are being sent (domain/message.ts withLease). */
const leased = (now: Date) => ({ state: "pending", leaseOwner: { not: null }, nextAttemptAt: { gt: now } }) satisfies Prisma.DeliveryWhereInput;

const summarySelect = (now: Date) => ({
  id: true, status: true, tlsPolicy: true, priority: true, fromAddress: true, fromName: true, subject: true, tags: true,
  metadata: true, createdAt: true, sendAt: true, contentPurgedAt: true,
  deliveries: { where: leased(now), select: { id: true }, take: 1 },
}) as const;

/** One message as GET /messages lists it (content: the encrypted subject only). `deliveries`: one it is being sent by, if any. */
export interface MessageSummaryRow {
  id: string; status: string; tlsPolicy: string; priority: string; fromAddress: string; fromName: string | null; subject: Uint8Array | null;
  tags: string[]; metadata: unknown; createdAt: Date; sendAt: Date | null; contentPurgedAt: Date | null; deliveries: Array<{ id: bigint }>;
}

const storedSelect = (now: Date) => ({
  ...summarySelect(now), messageIdHeader: true, replyTo: true, updatedAt: true,
  recipients: {
    orderBy: { position: "asc" },
    include: {
      attemptLog: { orderBy: [{ startedAt: "asc" }, { id: "asc" }] },
      delivery: { select: { state: true, nextAttemptAt: true, createdAt: true, leaseOwner: true } },
    },
  },
}) as const satisfies Prisma.MessageSelect;

/** A stored message with its recipients, each with its queue row's schedule and its attempts. */
type StoredMessage = Prisma.MessageGetPayload<{ select: ReturnType<typeof storedSelect> }>;

/**
 * The stored message as GET /messages/:id shows it, leases judged at `now`. Prisma reads it
 * in several statements: call it inside a REPEATABLE READ transaction for one consistent snapshot.
 */
export function findStoredMessage(db: Db | Tx, apiKeyId: string, id: string, now: Date): Promise<StoredMessage | null> {
  return db.message.findFirst({ where: { id, apiKeyId }, select: storedSelect(now) });
}

/** Whether `apiKeyId` owns a message with this id. */
export async function messageOwnedBy(db: Db | Tx, apiKeyId: string, id: string): Promise<boolean> {
  return (await db.message.findFirst({ where: { id, apiKeyId }, select: { id: true } })) !== null;
}

/** A message's delivery attempts, oldest first, each with its recipient's address. */
export function findMessageAttempts(db: Db | Tx, messageId: string) {
  return db.deliveryAttempt.findMany({
    where: { messageId },
    orderBy: [{ startedAt: "asc" }, { id: "asc" }],
    include: { recipient: { select: { address: true } } },
  });
}

export interface SummaryFilters {
  limit: number;
  /** Only messages before this (created_at, id) in newest-first order. */
  after?: { createdAt: Date; id: string } | null | undefined;
  status?: string | undefined;
  tag?: string | undefined;
  createdAfter?: Date | undefined;
  createdBefore?: Date | undefined;
}

/**
 * The filter for a status as the reads show it (withLease): `sending` is stored for a
 * message partly delivered with recipients still queued, and derived from a lease for a
 * waiting one; a waiting status is shown only without such a lease.
 */
function statusWhere(status: string, now: Date): Prisma.MessageWhereInput {
  if (status === "sending") return { OR: [{ status: "sending" }, { status: { in: ["queued", "scheduled", "deferred"] }, deliveries: { some: leased(now) } }] };
  if (["queued", "scheduled", "deferred"].includes(status)) return { status, deliveries: { none: leased(now) } };
  return { status };
}

/** A key's messages, newest first (created_at, id), at most `limit`, leases judged at `now`. */
export function findMessageSummaries(db: Db | Tx, apiKeyId: string, f: SummaryFilters, now: Date): Promise<MessageSummaryRow[]> {
  const after = f.after;
  return db.message.findMany({
    where: {
      apiKeyId,
      ...(f.status ? { AND: [statusWhere(f.status, now)] } : {}),
      ...(f.tag ? { tags: { has: f.tag } } : {}),
      ...(f.createdAfter || f.createdBefore
        ? { createdAt: { ...(f.createdAfter ? { gte: f.createdAfter } : {}), ...(f.createdBefore ? { lt: f.createdBefore } : {}) } }
        : {}),
      ...(after ? { OR: [{ createdAt: { lt: after.createdAt } }, { createdAt: after.createdAt, id: { lt: after.id } }] } : {}),
    },
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    take: f.limit,
    select: summarySelect(now),
  });
}

// ---------------------------------------------------------------------------------
// Cancelling (in one transaction, see services/messages.ts cancelMessage).
// ---------------------------------------------------------------------------------

/** Locks a key's message row (FOR UPDATE) and returns its status; null when there is none. */
export async function lockMessageStatus(tx: Db | Tx, apiKeyId: string, id: string): Promise<string | null> {
  const rows = await tx.$queryRawUnsafe<Array<{ status: string }>>(
    `SELECT status FROM messages WHERE id = $1::uuid AND api_key_id = $2 FOR UPDATE`, id, apiKeyId);
  return rows[0]?.status ?? null;
}

/** Cancels every recipient of the message, each with its event (issue 12), in one statement. */
export async function markRecipientsCancelled(tx: Db | Tx, messageId: string, at: Date): Promise<void> {
  await tx.$executeRawUnsafe(
    `WITH r AS (
       UPDATE recipients SET status = 'cancelled', updated_at = $2 WHERE message_id = $1::uuid RETURNING id, message_id
     ), evt AS (
       INSERT INTO events (type, api_key_id, message_id, recipient_id, created_at)
       SELECT 'message.cancelled', m.api_key_id, r.message_id, r.id, $2 FROM r JOIN messages m ON m.id = r.message_id
       RETURNING id, api_key_id, type
     )
     ${fanOutToWebhooks("evt")}`,
    messageId, at);
}

export async function markMessageCancelled(tx: Db | Tx, messageId: string, at: Date): Promise<void> {
  await tx.message.update({ where: { id: messageId }, data: { status: "cancelled", updatedAt: at, finishedAt: at } });
}
