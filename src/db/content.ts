// Statements on the encrypted content columns of messages (subject, bodies, custom
// headers, attachments): retention erases them, data-key rotation rewrites them, the
// data-key check samples them. Each stored value starts with a version byte (1), the
// length of the key id and the key id (see security/content-cipher.ts).
import type { Db, Tx } from "./client.ts";

export const CONTENT_COLUMNS = ["subject", "text_body", "html_body", "headers", "attachments"] as const;
export type ContentColumn = (typeof CONTENT_COLUMNS)[number];

// The key id sits at bytes 3..(2+len) of the stored value.
const keyIdOf = (col: string) => `substring(${col} from 3 for get_byte(${col}, 1))`;

/**
 * Erases the content of at most `limit` messages that reached a final state before
 * `cutoff` and still hold it, stamping content_purged_at; returns how many. Rows locked
 * by someone else are skipped, so a sweep never waits on a delivery.
 */
export function purgeContent(db: Db | Tx, cutoff: Date, now: Date, limit: number): Promise<number> {
  return db.$executeRawUnsafe(
    `UPDATE messages
        SET subject = NULL, text_body = NULL, html_body = NULL, headers = NULL, attachments = NULL,
            content_purged_at = $2::timestamptz, updated_at = $2::timestamptz
      WHERE id IN (SELECT id FROM messages
                    WHERE finished_at IS NOT NULL AND finished_at < $1::timestamptz AND content_purged_at IS NULL
                    LIMIT $3 FOR UPDATE SKIP LOCKED)`,
    cutoff, now, limit,
  );
}

export type ContentRow = Record<ContentColumn, Uint8Array | null> & { id: string };

/** The next `limit` messages after `afterId` (by id) with a content value under a key other than `keyId`. */
export function findContentNotUnderKey(db: Db | Tx, keyId: string, afterId: string, limit: number): Promise<ContentRow[]> {
  const stale = CONTENT_COLUMNS.map((c) => `(${c} IS NOT NULL AND ${keyIdOf(c)} <> convert_to($1, 'SQL_ASCII'))`).join(" OR ");
  return db.$queryRawUnsafe<ContentRow[]>(
    `SELECT id::text AS id, ${CONTENT_COLUMNS.join(", ")} FROM messages
      WHERE id > $2::uuid AND (${stale}) ORDER BY id LIMIT $3`,
    keyId, afterId, limit,
  );
}

/**
 * Replaces content values of one message, each only if the column still holds the value
 * that was read (a concurrent purge wins); returns 1 when the row was updated.
 */
export function rewriteContent(
  db: Db | Tx, id: string, changes: Array<{ column: ContentColumn; from: Uint8Array; to: Uint8Array }>,
): Promise<number> {
  const sets: string[] = [];
  const params: unknown[] = [id];
  for (const c of changes) {
    params.push(c.to, Buffer.from(c.from));
    sets.push(`${c.column} = CASE WHEN ${c.column} = $${params.length} THEN $${params.length - 1} ELSE ${c.column} END`);
  }
  return db.$executeRawUnsafe(`UPDATE messages SET ${sets.join(", ")} WHERE id = $1::uuid`, ...params);
}

/** Up to three stored content values under `keyId`, with their message id and column. */
export function findContentSamplesUnderKey(db: Db | Tx, keyId: string): Promise<Array<{ id: string; col: ContentColumn; v: Uint8Array }>> {
  return db.$queryRawUnsafe<Array<{ id: string; col: ContentColumn; v: Uint8Array }>>(
    `SELECT m.id::text AS id, c.col, c.v FROM messages m
      CROSS JOIN LATERAL (VALUES ${CONTENT_COLUMNS.map((c) => `('${c}', m.${c})`).join(", ")}) AS c(col, v)
      WHERE c.v IS NOT NULL AND length(c.v) > 2 AND get_byte(c.v, 0) = 1
        AND substring(c.v from 3 for get_byte(c.v, 1)) = convert_to($1, 'UTF8')
      LIMIT 3`,
    keyId,
  );
}

/**
 * Every key id some stored content value, DKIM private key or webhook secret is encrypted
 * under. Keys and secrets count so that rotation never retires a data key one of them still
 * needs (one it could not re-encrypt, say).
 */
/**
 * SQL: the ciphertext in `col` (content-cipher.ts: version byte 1, key id length, key id)
 * is under the data key given as parameter $1. The lookups of private keys and secrets
 * that a data-key rotation still has to re-encrypt share it.
 */
export const underDataKeySql = (col: string) =>
  `(length(${col}) > 2 AND get_byte(${col}, 0) = 1 AND substring(${col} from 3 for get_byte(${col}, 1)) = convert_to($1, 'UTF8'))`;

export async function findKeyIdsInUse(db: Db | Tx): Promise<string[]> {
  const rows = await db.$queryRawUnsafe<Array<{ id: string }>>(
    `SELECT DISTINCT encode(substring(c.v from 3 for get_byte(c.v, 1)), 'escape') AS id FROM messages m
      CROSS JOIN LATERAL (VALUES ${CONTENT_COLUMNS.map((c) => `(m.${c})`).join(", ")}) AS c(v)
      WHERE c.v IS NOT NULL AND length(c.v) > 2 AND get_byte(c.v, 0) = 1
     UNION
     SELECT encode(substring(private_key from 3 for get_byte(private_key, 1)), 'escape') FROM dkim_keys
      WHERE length(private_key) > 2 AND get_byte(private_key, 0) = 1
     UNION
     SELECT encode(substring(s.v from 3 for get_byte(s.v, 1)), 'escape') FROM webhook_endpoints w
      CROSS JOIN LATERAL (VALUES (w.secret), (w.previous_secret)) AS s(v)
      WHERE s.v IS NOT NULL AND length(s.v) > 2 AND get_byte(s.v, 0) = 1
     UNION
     SELECT encode(substring(private_key from 3 for get_byte(private_key, 1)), 'escape') FROM receipt_keys
      WHERE length(private_key) > 2 AND get_byte(private_key, 0) = 1`,
  );
  return rows.map((r) => r.id);
}
