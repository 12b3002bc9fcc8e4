// Re-encrypts stored content under the newest data key (the first of
// SEALPOST_DATA_KEY), a batch at a time, so an old key can then be removed. Each row
// is rewritten only if it still holds the ciphertext that was read (a concurrent purge
// wins). It runs only once the serving processes encrypt with that key themselves
// (assertRotationAllowed), so they can read every row it rewrites; afterwards the keys
// no stored value uses any more are marked retired and are no longer required at start.
import type { Db } from "../db/client.ts";
import { contentAad, ContentDecryptError, type ContentCipher } from "../security/content-cipher.ts";
import { assertRotationAllowed, retireUnusedKeys } from "../security/data-key-check.ts";

const COLUMNS = ["subject", "text_body", "html_body", "headers", "attachments"] as const;

// The key id sits at bytes 3..(2+len) of the stored value (see content-cipher.ts).
const keyIdOf = (col: string) => `substring(${col} from 3 for get_byte(${col}, 1))`;

export interface RotationResult {
  rewritten: number;
  /** Rows whose content did not authenticate (tampered, or under a key no longer configured): left as they are. */
  unreadable: string[];
  /** Key ids that no stored value uses any more: they may be removed from SEALPOST_DATA_KEY once no process encrypts with them. */
  retired: string[];
}

export async function rotateDataKey(db: Db, cipher: ContentCipher, opts: { batchSize?: number; onBatch?: (done: number) => void } = {}): Promise<RotationResult> {
  await assertRotationAllowed(db, cipher);
  const current = cipher.currentKeyId;
  const batch = opts.batchSize ?? 200;
  const stale = COLUMNS.map((c) => `(${c} IS NOT NULL AND ${keyIdOf(c)} <> convert_to($1, 'SQL_ASCII'))`).join(" OR ");
  let rewritten = 0;
  const unreadable: string[] = [];
  let lastId = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const rows = await db.$queryRawUnsafe<Array<Record<(typeof COLUMNS)[number], Uint8Array | null> & { id: string }>>(
      `SELECT id::text AS id, ${COLUMNS.join(", ")} FROM messages
        WHERE id > $2::uuid AND (${stale}) ORDER BY id LIMIT $3`,
      current, lastId, batch,
    );
    if (rows.length === 0) break;
    for (const row of rows) {
      const sets: string[] = [];
      const params: unknown[] = [row.id];
      try {
        for (const col of COLUMNS) {
          const v = row[col];
          if (v === null || cipher.keyIdOf(v) === current) continue;
          const plain = cipher.decrypt(v, contentAad(row.id, col));
          params.push(cipher.encrypt(plain, contentAad(row.id, col)), Buffer.from(v));
          sets.push(`${col} = CASE WHEN ${col} = $${params.length} THEN $${params.length - 1} ELSE ${col} END`);
        }
      } catch (err) {
        if (!(err instanceof ContentDecryptError)) throw err;
        unreadable.push(row.id);
        continue;
      }
      if (sets.length === 0) continue;
      rewritten += await db.$executeRawUnsafe(`UPDATE messages SET ${sets.join(", ")} WHERE id = $1::uuid`, ...params);
    }
    lastId = rows[rows.length - 1]!.id;
    opts.onBatch?.(rewritten);
  }
  return { rewritten, unreadable, retired: await retireUnusedKeys(db, current) };
}
