// The installation's keys that sign delivery receipts (issue 15, services/receipts.ts). One
// signs at a time (a partial unique index); retired ones stay published in the JWKS.
import type { Db, Tx } from "./client.ts";
import { underDataKeySql } from "./content.ts";

export interface ReceiptKeyRow {
  id: string;
  publicJwk: unknown;
  privateKey: Uint8Array;
  createdAt: Date;
  retiredAt: Date | null;
}

/** Every key, the signing one first, then retired ones newest first. */
export async function findReceiptKeys(db: Db | Tx): Promise<ReceiptKeyRow[]> {
  const rows = await db.receiptKey.findMany({ orderBy: { createdAt: "desc" } });
  return [...rows.filter((r) => r.retiredAt === null), ...rows.filter((r) => r.retiredAt !== null)];
}

/** Adds a signing key; false when another one signs already (someone else made it first). */
export async function insertReceiptKey(db: Db | Tx, row: Omit<ReceiptKeyRow, "retiredAt">): Promise<boolean> {
  const n = await db.$executeRawUnsafe(
    `INSERT INTO receipt_keys (id, public_jwk, private_key, created_at) VALUES ($1, $2::jsonb, $3, $4)
     ON CONFLICT DO NOTHING`,
    row.id, JSON.stringify(row.publicJwk), row.privateKey, row.createdAt,
  );
  return n > 0;
}

/** Retires the signing key (it keeps verifying what it signed); the caller adds the next one in the same transaction. */
export function retireReceiptKey(tx: Tx, at: Date): Promise<number> {
  return tx.$executeRawUnsafe(`UPDATE receipt_keys SET retired_at = $1 WHERE retired_at IS NULL`, at);
}

/** Receipt private keys whose ciphertext is not under data key `keyId` (data-key rotation). */
export function findReceiptKeysNotUnderKey(db: Db | Tx, keyId: string): Promise<Array<{ id: string; privateKey: Uint8Array }>> {
  return db.$queryRawUnsafe<Array<{ id: string; privateKey: Uint8Array }>>(
    `SELECT id, private_key AS "privateKey" FROM receipt_keys WHERE NOT ${underDataKeySql("private_key")} ORDER BY id`,
    keyId,
  );
}

/** Replaces a receipt private key's ciphertext `from` with `to`; 0 when it changed meanwhile. */
export function rewriteReceiptPrivateKey(db: Db | Tx, id: string, from: Uint8Array, to: Uint8Array): Promise<number> {
  return db.$executeRawUnsafe(`UPDATE receipt_keys SET private_key = $3 WHERE id = $1 AND private_key = $2`, id, from, to);
}
