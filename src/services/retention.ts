// Retention (ARCHITECTURE.md, "Content at rest"): content of messages that reached a final state more
// than RETENTION_DAYS ago is erased; addresses, statuses and delivery evidence stay,
// so "was it delivered, and how securely?" can still be answered. Expired
// idempotency records (24 h) are deleted. Runs in batches so a large backlog never
// holds long locks.
import type { Db } from "../db/client.ts";

export interface PurgeResult {
  messagesPurged: number;
  idempotencyRecordsDeleted: number;
}

export async function purgeExpired(db: Db, opts: { retentionDays: number; now: Date; batchSize?: number }): Promise<PurgeResult> {
  const cutoff = new Date(opts.now.getTime() - opts.retentionDays * 86_400_000);
  const batch = opts.batchSize ?? 500;
  let messagesPurged = 0;
  for (;;) {
    const n = await db.$executeRawUnsafe(
      `UPDATE messages
          SET subject = NULL, text_body = NULL, html_body = NULL, headers = NULL, attachments = NULL,
              content_purged_at = $2::timestamptz, updated_at = $2::timestamptz
        WHERE id IN (SELECT id FROM messages
                      WHERE finished_at IS NOT NULL AND finished_at < $1::timestamptz AND content_purged_at IS NULL
                      LIMIT $3 FOR UPDATE SKIP LOCKED)`,
      cutoff, opts.now, batch,
    );
    messagesPurged += n;
    if (n < batch) break;
  }
  let idempotencyRecordsDeleted = 0;
  for (;;) {
    const n = await db.$executeRawUnsafe(
      `DELETE FROM idempotency_records
        WHERE (api_key_id, key) IN (SELECT api_key_id, key FROM idempotency_records WHERE expires_at < $1::timestamptz LIMIT $2)`,
      opts.now, batch,
    );
    idempotencyRecordsDeleted += n;
    if (n < batch) break;
  }
  return { messagesPurged, idempotencyRecordsDeleted };
}
