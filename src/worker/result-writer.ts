// Group commit of delivery results (the worker's side of what services/message-writer.ts
// does for POST /send): results that finish while a write is in flight wait for it and
// go together in the next statement, so at high rates one statement (and one WAL flush)
// records many deliveries, each still under its own lease fence. A delivery whose
// message has recipients at other domains is written on its own, under the message row
// lock (completeDelivery), where its message status is derived.
import type pg from "pg";
import { completeDeliveries, completeDelivery, type Completion } from "../db/deliveries.ts";

/** Results in one statement at most: bounds its size and the time a result waits. */
const MAX_BATCH = 200;

/**
 * The database refused the statement itself: SQLSTATE class 22 (data), 23 (integrity),
 * 42 (syntax or privilege) or 0A (unsupported). Anything else (no connection, shutdown,
 * statement or lock timeout, a full disk, a deadlock) passes once the database is back.
 * Kept here rather than in db/errors.ts on purpose: the API answers 503 only for what it
 * knows to be an outage, while the worker must keep trying through anything that is not
 * its own statement's fault.
 */
export function isStatementRejected(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^(22|23|42|0A)[0-9A-Z]{3}$/.test(code);
}

interface Pending {
  c: Completion;
  resolve(written: boolean): void;
  reject(err: unknown): void;
}

export class ResultWriter {
  readonly #pool: pg.Pool;
  #queue: Pending[] = [];
  #writing = false;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  /**
   * Writes one result: true when written, false when its fence refused it (the lease was
   * lost, nothing of it was written). Rejects when the statement failed; the caller retries.
   */
  write(c: Completion): Promise<boolean> {
    if (!c.message) return completeDelivery(this.#pool, c);
    return new Promise<boolean>((resolve, reject) => {
      this.#queue.push({ c, resolve, reject });
      if (!this.#writing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, MAX_BATCH);
        await this.#writeBatch(batch);
      }
    } finally {
      this.#writing = false;
    }
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    try {
      const written = await completeDeliveries(this.#pool, batch.map((p) => p.c));
      for (const p of batch) p.resolve(written.has(p.c.delivery.id));
    } catch (err) {
      if (batch.length > 1 && isStatementRejected(err)) {
        // One result the database refuses must not hold the others back: each on its own.
        for (const p of batch) await completeDelivery(this.#pool, p.c).then(p.resolve, p.reject);
      } else for (const p of batch) p.reject(err);
    }
  }
}
