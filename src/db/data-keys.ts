// Statements on data_keys: one row per data key id sealpost has seen, with a check value
// (security/data-key-check.ts says what the columns mean and when they are written).
import type { Db, Tx } from "./client.ts";

export interface DataKeyRow {
  id: string;
  checkValue: Uint8Array | null;
  encryptingSince: Date | null;
  retiredAt: Date | null;
}

/** Every recorded key; when `ids` is given, only those. */
export function findDataKeys(db: Db | Tx, ids?: string[]): Promise<DataKeyRow[]> {
  return ids === undefined ? db.dataKey.findMany() : db.dataKey.findMany({ where: { id: { in: ids } } });
}

/** Records new key ids with their check values; ids another process recorded first are left as they are. */
export async function insertDataKeys(db: Db | Tx, keys: Array<{ id: string; checkValue: Uint8Array<ArrayBuffer> }>): Promise<void> {
  await db.dataKey.createMany({ data: keys, skipDuplicates: true });
}

/** Fills the check value of a key recorded without one (by the migration). */
export async function fillCheckValue(db: Db | Tx, id: string, checkValue: Uint8Array<ArrayBuffer>): Promise<void> {
  await db.dataKey.updateMany({ where: { id, checkValue: null }, data: { checkValue } });
}

/** Marks a key as encrypting new content (since now, unless it already was and is not retired) and not retired. */
export async function markKeyEncrypting(db: Db | Tx, id: string): Promise<void> {
  await db.$executeRaw`UPDATE data_keys
                          SET encrypting_since = CASE WHEN encrypting_since IS NULL OR retired_at IS NOT NULL THEN now() ELSE encrypting_since END,
                              retired_at = NULL
                        WHERE id = ${id}`;
}

/** Marks retired the keys other than `current` that encrypted, are not retired and are not in `inUse`; returns their ids. */
export async function retireKeysNotIn(db: Db | Tx, current: string, inUse: string[]): Promise<string[]> {
  const rows = await db.$queryRawUnsafe<Array<{ id: string }>>(
    `UPDATE data_keys SET retired_at = now()
      WHERE id <> $1 AND encrypting_since IS NOT NULL AND retired_at IS NULL AND NOT (id = ANY($2::text[]))
      RETURNING id`,
    current, inUse,
  );
  return rows.map((r) => r.id);
}
