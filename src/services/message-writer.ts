// Writes accepted messages: each message, its recipients, its queue rows (one per
// recipient domain) and its idempotency record are inserted by ONE statement, so
// either all of them exist or none do: no accepted message without queued work.
//
// Requests that arrive while a statement is running are written together by the next
// one (group commit, as Postgres does for WAL flushes): at low load every message is a
// statement of its own with no added latency; under load one statement and one commit
// carry many messages. A caller is answered only after the statement that carried its
// message has committed. Measured on two cores, this is what lets POST /send scale
// with concurrency instead of paying a full round trip, plan and commit per request.
import type { Db } from "../db/client.ts";
import { DatabaseUnavailableError } from "../db/errors.ts";

export interface MessageRow {
  id: string;
  apiKeyId: string;
  idempotencyKey: string | null;
  requestHash: string | null;
  response: string; // JSON of the 202 body, replayed for a repeated Idempotency-Key
  createdAt: Date;
  expiresAt: Date;
  status: "queued" | "scheduled";
  tlsPolicy: string;
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

const SQL = `
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], $7::timestamptz[],
                       $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::jsonb[], $14::text[], $15::text[],
                       $16::text[], $17::text[], $18::text[], $19::jsonb[], $20::jsonb[], $21::timestamptz[])
    AS u(id, api_key_id, idem_key, request_hash, response, created_at, expires_at, status, tls_policy, message_id_header,
         from_address, from_name, reply_to, subject, text_body, html_body, headers, attachments, tags, metadata, send_at)
), idem AS (
  INSERT INTO idempotency_records (api_key_id, key, request_hash, status_code, response, message_id, created_at, expires_at)
  SELECT api_key_id, idem_key, request_hash, 202, response, id, created_at, expires_at FROM input WHERE idem_key IS NOT NULL
  ON CONFLICT (api_key_id, key) DO UPDATE
     SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code, response = EXCLUDED.response,
         message_id = EXCLUDED.message_id, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
   WHERE idempotency_records.expires_at <= EXCLUDED.created_at
  RETURNING message_id
), msg AS (
  INSERT INTO messages (id, api_key_id, status, tls_policy, message_id_header, from_address, from_name, reply_to,
                        subject, text_body, html_body, headers, attachments, tags, metadata, send_at, created_at, updated_at)
  SELECT id, api_key_id, status, tls_policy, message_id_header, from_address, from_name, reply_to,
         decode(subject, 'base64'), decode(text_body, 'base64'), decode(html_body, 'base64'), decode(headers, 'base64'),
         decode(attachments, 'base64'), ARRAY(SELECT jsonb_array_elements_text(tags)), metadata,
         send_at, created_at, created_at
    FROM input WHERE idem_key IS NULL OR id IN (SELECT message_id FROM idem)
  RETURNING id
), dlv AS (
  INSERT INTO deliveries (message_id, domain, state, next_attempt_at, created_at)
  SELECT d.message_id, d.domain, 'pending', COALESCE(i.send_at, i.created_at), COALESCE(i.send_at, i.created_at)
    FROM unnest($22::uuid[], $23::text[]) AS d(message_id, domain)
    JOIN input i ON i.id = d.message_id
   WHERE d.message_id IN (SELECT id FROM msg)
  RETURNING id, message_id, domain
), rcp AS (
  INSERT INTO recipients (message_id, delivery_id, position, kind, address, name, status, updated_at)
  SELECT r.message_id, dlv.id, r.position, r.kind, r.address, r.name, i.status, i.created_at
    FROM unnest($24::uuid[], $25::int[], $26::text[], $27::text[], $28::text[], $29::text[])
         AS r(message_id, position, kind, address, name, domain)
    JOIN dlv ON dlv.message_id = r.message_id AND dlv.domain = r.domain
    JOIN input i ON i.id = r.message_id
  RETURNING message_id
)
SELECT m.id::text AS id, (SELECT count(*) FROM rcp WHERE rcp.message_id = m.id)::int AS recipients FROM msg m`;

// Content travels as base64 text and is decoded by the statement. Passed as bytea[],
// an array whose first element is null made the driver adapter take the later Buffers
// for text: they were stored as their base64 characters, and the worker could not read
// what the API had accepted.
const b64 = (b: Buffer | null): string | null => (b === null ? null : b.toString("base64"));

function params(rows: MessageRow[]): unknown[] {
  const col = <T>(f: (r: MessageRow) => T) => rows.map(f);
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
  ];
}

/** Inserts rows in one statement; returns the ids that were created (a reused idempotency key creates nothing). */
export async function insertMessages(db: Db, rows: MessageRow[]): Promise<Set<string>> {
  const out = await db.$queryRawUnsafe<Array<{ id: string; recipients: number }>>(SQL, ...params(rows));
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const o of out) {
    if (o.recipients !== byId.get(o.id)?.recipients.length) throw new Error(`message ${o.id}: recipient rows were not all written`);
  }
  return new Set(out.map((o) => o.id));
}

interface Pending {
  row: MessageRow;
  /** performance.now() after which the message may no longer be sent: it is answered 503 instead. */
  sendBy: number;
  timer: NodeJS.Timeout | undefined;
  resolve(created: boolean): void;
  reject(err: unknown): void;
}

/**
 * How long a message may wait in the writer's queue for a statement slot: a fifth of the
 * statement timeout, at most 1 s. Its own statement then runs for the statement timeout
 * at most, so a request is answered within about the statement timeout even when the
 * statements ahead of it are stuck on a lock or a silent database (they hold the slots
 * until their own timeout). Healthy queues drain in milliseconds; a queue this slow
 * means the database cannot keep up, and answering 503 at once is better than later.
 */
export function maxQueueWaitFor(statementTimeoutMs: number, singleSession = false): number {
  // The embedded database is one session that every statement waits its turn for: a
  // long queue there is the normal state under a burst of large messages, not an outage.
  if (singleSession) return Math.ceil(statementTimeoutMs / 5);
  return Math.min(1000, Math.ceil(statementTimeoutMs / 5));
}

export interface MessageWriterOptions {
  /** Messages per statement at most. */
  maxBatch?: number;
  /** Statements running at once; while they run, new messages queue up. */
  maxInFlight?: number;
  /** Longest wait in the queue before a message is answered 503 unsent (see maxQueueWaitFor). */
  maxQueueWaitMs?: number;
}

export class MessageWriter {
  #queue: Pending[] = [];
  #inFlight = 0;
  readonly #db: Db;
  readonly #maxBatch: number;
  readonly #maxInFlight: number;
  readonly #maxQueueWaitMs: number;

  constructor(db: Db, opts: MessageWriterOptions = {}) {
    this.#db = db;
    this.#maxBatch = opts.maxBatch ?? 64;
    this.#maxInFlight = opts.maxInFlight ?? 2;
    this.#maxQueueWaitMs = opts.maxQueueWaitMs ?? maxQueueWaitFor(5000);
  }

  /**
   * Resolves true once the message is committed, false if its Idempotency-Key was already
   * used. Rejects with the statement's error, or with DatabaseUnavailableError when no
   * statement could take the message within the queue wait: then it was never sent to
   * the database, and never will be.
   */
  write(row: MessageRow): Promise<boolean> {
    return new Promise((resolve, reject) => {
      const p: Pending = { row, sendBy: performance.now() + this.#maxQueueWaitMs, timer: undefined, resolve, reject };
      this.#queue.push(p);
      this.#pump();
      // Still queued (then it is the last one): answer it unsent if no statement takes it in time.
      if (this.#queue.at(-1) === p) p.timer = setTimeout(() => this.#expire(p), this.#maxQueueWaitMs);
    });
  }

  /** Takes a message that waited too long out of the queue, then answers it: it can no longer be sent. */
  #expire(p: Pending): void {
    const i = this.#queue.indexOf(p);
    if (i < 0) return; // already in a statement
    this.#queue.splice(i, 1);
    p.reject(this.#notSent());
  }

  #notSent(): DatabaseUnavailableError {
    return new DatabaseUnavailableError(`no database statement could take the message within ${this.#maxQueueWaitMs} ms; it was not sent`);
  }

  #pump(): void {
    while (this.#inFlight < this.#maxInFlight && this.#queue.length > 0) {
      // Two uses of one Idempotency-Key must not share a statement (ON CONFLICT cannot
      // touch a row twice); the later one waits for the next statement.
      const now = performance.now();
      const batch: Pending[] = [];
      const rest: Pending[] = [];
      const late: Pending[] = [];
      const keys = new Set<string>();
      for (const p of this.#queue) {
        const k = p.row.idempotencyKey === null ? null : `${p.row.apiKeyId}\n${p.row.idempotencyKey}`;
        // A message past its deadline whose timer has not run yet (a busy event loop):
        // the deadline decides, not the timer.
        if (p.sendBy <= now) late.push(p);
        else if (batch.length >= this.#maxBatch || (k !== null && keys.has(k))) rest.push(p);
        else {
          if (k !== null) keys.add(k);
          batch.push(p);
        }
      }
      this.#queue = rest;
      for (const p of late) {
        clearTimeout(p.timer);
        p.reject(this.#notSent());
      }
      if (batch.length === 0) return;
      for (const p of batch) clearTimeout(p.timer);
      this.#inFlight++;
      insertMessages(this.#db, batch.map((p) => p.row)).then(
        (created) => batch.forEach((p) => p.resolve(created.has(p.row.id))),
        (err) => batch.forEach((p) => p.reject(err)),
      ).finally(() => {
        this.#inFlight--;
        this.#pump();
      });
    }
  }
}
