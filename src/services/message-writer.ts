// Writes accepted messages: each message, its recipients, its queue rows (one per
// recipient domain) and its idempotency record are inserted by ONE statement
// (insertMessages in db/messages.ts), so either all of them exist or none do: no
// accepted message without queued work.
//
// Requests that arrive while a statement is running are written together by the next
// one (group commit, as Postgres does for WAL flushes): at low load every message is a
// statement of its own with no added latency; under load one statement and one commit
// carry many messages. A caller is answered only after the statement that carried its
// message has committed. Measured on two cores, this is what lets POST /send scale
// with concurrency instead of paying a full round trip, plan and commit per request.
import type pg from "pg";
import { insertMessages, type Inserted, type NewMessageRow } from "../db/messages.ts";
import { DatabaseUnavailableError } from "../db/errors.ts";

interface Pending {
  row: NewMessageRow;
  /** performance.now() after which the message may no longer be sent: it is answered 503 instead. */
  sendBy: number;
  timer: NodeJS.Timeout | undefined;
  resolve(created: Inserted | null): void;
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
  /** Prepare the statement once per connection (not on the embedded database, see insertMessages). */
  prepared?: boolean;
}

export class MessageWriter {
  #queue: Pending[] = [];
  #inFlight = 0;
  readonly #pool: pg.Pool;
  readonly #maxBatch: number;
  readonly #maxInFlight: number;
  readonly #maxQueueWaitMs: number;
  readonly #prepared: boolean;

  /** `pool`: the process's pg.Pool (DatabaseHandle.pool); statements are auto-committed. */
  constructor(pool: pg.Pool, opts: MessageWriterOptions = {}) {
    this.#pool = pool;
    this.#maxBatch = opts.maxBatch ?? 64;
    this.#maxInFlight = opts.maxInFlight ?? 2;
    this.#maxQueueWaitMs = opts.maxQueueWaitMs ?? maxQueueWaitFor(5000);
    this.#prepared = opts.prepared ?? false;
  }

  /**
   * Resolves once the message is committed, with the recipients it suppressed; null if its
   * Idempotency-Key was already used. Rejects with the statement's error, or with DatabaseUnavailableError when no
   * statement could take the message within the queue wait: then it was never sent to
   * the database, and never will be.
   */
  write(row: NewMessageRow): Promise<Inserted | null> {
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
      insertMessages(this.#pool, batch.map((p) => p.row), { prepared: this.#prepared }).then(
        (created) => batch.forEach((p) => p.resolve(created.get(p.row.id) ?? null)),
        (err) => batch.forEach((p) => p.reject(err)),
      ).finally(() => {
        this.#inFlight--;
        this.#pump();
      });
    }
  }
}
