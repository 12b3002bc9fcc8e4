// Statements on api_keys. Keys are created, listed and revoked by the owner (CLI); the
// API only reads them (prisma/roles.sql).
import type { Db, Tx } from "./client.ts";

export interface ApiKeyRow {
  id: string;
  name: string;
  secretHash: string;
  scopes: string[];
  allowedDomains: string[];
  tlsPolicy: string | null;
  rateLimitPerMinute: number | null;
  createdAt: Date;
  revokedAt: Date | null;
}

export type NewApiKeyRow = Pick<ApiKeyRow, "id" | "name" | "secretHash" | "scopes" | "allowedDomains" | "tlsPolicy" | "rateLimitPerMinute">;

export function insertApiKey(db: Db | Tx, row: NewApiKeyRow): Promise<ApiKeyRow> {
  return db.apiKey.create({ data: row });
}

/** Every key, revoked ones included, oldest first. */
export function findAllApiKeys(db: Db | Tx): Promise<ApiKeyRow[]> {
  return db.apiKey.findMany({ orderBy: { createdAt: "asc" } });
}

export function findApiKeyById(db: Db | Tx, id: string): Promise<ApiKeyRow | null> {
  return db.apiKey.findUnique({ where: { id } });
}

/** Stamps revoked_at on a key not yet revoked; false when there is no such key. */
export async function markApiKeyRevoked(db: Db | Tx, id: string, at: Date): Promise<boolean> {
  const r = await db.apiKey.updateMany({ where: { id, revokedAt: null }, data: { revokedAt: at } });
  return r.count > 0;
}

export function countActiveApiKeys(db: Db | Tx): Promise<number> {
  return db.apiKey.count({ where: { revokedAt: null } });
}
