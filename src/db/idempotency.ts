// Statements on idempotency_records. Records are inserted (or an expired one taken
// over) by the send statement, insertMessages in db/messages.ts.
import type { Db, Tx } from "./client.ts";

export interface IdempotencyRow {
  requestHash: string;
  statusCode: number;
  response: unknown;
}

/** The record of a key's Idempotency-Key, expired or not; null when there is none. */
export function findIdempotencyRecord(db: Db | Tx, apiKeyId: string, key: string): Promise<IdempotencyRow | null> {
  return db.idempotencyRecord.findUnique({
    where: { apiKeyId_key: { apiKeyId, key } },
    select: { requestHash: true, statusCode: true, response: true },
  });
}

/** Deletes at most `limit` records that expired before `now`; returns how many. */
export function deleteExpiredIdempotencyRecords(db: Db | Tx, now: Date, limit: number): Promise<number> {
  return db.$executeRawUnsafe(
    `DELETE FROM idempotency_records
      WHERE (api_key_id, key) IN (SELECT api_key_id, key FROM idempotency_records WHERE expires_at < $1::timestamptz LIMIT $2)`,
    now, limit,
  );
}
