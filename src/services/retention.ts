// Retention (ARCHITECTURE.md, "Content at rest"): content of messages that reached a final state more
// than RETENTION_DAYS ago is erased; addresses, statuses and delivery evidence stay,
// so "was it delivered, and how securely?" can still be answered. Expired
// idempotency records (24 h) are deleted. Runs in batches so a large backlog never
// holds long locks.
import type { Db } from "../db/client.ts";
import { purgeContent } from "../db/content.ts";
import { deleteExpiredIdempotencyRecords } from "../db/idempotency.ts";

export interface PurgeResult {
  messagesPurged: number;
  idempotencyRecordsDeleted: number;
}

export async function purgeExpired(db: Db, opts: { retentionDays: number; now: Date; batchSize?: number }): Promise<PurgeResult> {
  const cutoff = new Date(opts.now.getTime() - opts.retentionDays * 86_400_000);
  const batch = opts.batchSize ?? 500;
  let messagesPurged = 0;
  for (;;) {
    const n = await purgeContent(db, cutoff, opts.now, batch);
    messagesPurged += n;
    if (n < batch) break;
  }
  let idempotencyRecordsDeleted = 0;
  for (;;) {
    const n = await deleteExpiredIdempotencyRecords(db, opts.now, batch);
    idempotencyRecordsDeleted += n;
    if (n < batch) break;
  }
  return { messagesPurged, idempotencyRecordsDeleted };
}
