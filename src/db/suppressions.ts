// The suppression list (issue 13): read and managed through Prisma, scoped to the sender
// domains a key may send from. Entries are also written by the statements that accept a
// message (matching it, db/messages.ts) and record results (hard bounces, db/deliveries.ts).
import type { Prisma } from "../generated/prisma/client.ts";
import type { Db } from "./client.ts";
import type { SuppressionReason } from "../domain/suppression.ts";

/**
 * SQL for the sender domain a list belongs to, from a From address column: the part after
 * its last "@", lower case. The one definition the statements that match, add and report
 * suppressions share.
 */
export const senderDomainSql = (fromAddress: string) => `lower(substring(${fromAddress} from '@([^@]*)$'))`;

export interface SuppressionRow {
  id: bigint;
  senderDomain: string;
  address: string;
  reason: string;
  messageId: string | null;
  replyCode: number | null;
  enhancedCode: string | null;
  replyText: string | null;
  description: string | null;
  createdAt: Date;
}

const SELECT = {
  id: true, senderDomain: true, address: true, reason: true, messageId: true, replyCode: true, enhancedCode: true, replyText: true,
  description: true, createdAt: true,
} satisfies Prisma.SuppressionSelect;

export interface SuppressionFilter {
  /** null: every domain (a key that may send from any). */
  domains: string[] | null;
  reason?: SuppressionReason | undefined;
  address?: string | undefined;
  /** Entries older than this id (newest first). */
  beforeId?: bigint | undefined;
  limit: number;
}

/** Newest first; one more than `limit` when there is a next page. */
export function findSuppressions(db: Db, f: SuppressionFilter): Promise<SuppressionRow[]> {
  return db.suppression.findMany({
    where: {
      ...(f.domains ? { senderDomain: { in: f.domains } } : {}),
      ...(f.reason ? { reason: f.reason } : {}),
      ...(f.address ? { address: f.address } : {}),
      ...(f.beforeId !== undefined ? { id: { lt: f.beforeId } } : {}),
    },
    orderBy: { id: "desc" },
    take: f.limit + 1,
    select: SELECT,
  });
}

/** Adds a manual entry; an entry already there (whatever its reason) is kept and returned with `created: false`. */
export async function addManualSuppression(
  db: Db, e: { senderDomain: string; address: string; apiKeyId: string | null; description: string | null },
): Promise<{ row: SuppressionRow; created: boolean }> {
  const inserted = await db.suppression.createManyAndReturn({
    data: [{ senderDomain: e.senderDomain, address: e.address, reason: "manual", apiKeyId: e.apiKeyId, description: e.description }],
    skipDuplicates: true,
    select: SELECT,
  });
  if (inserted[0]) return { row: inserted[0], created: true };
  const row = await db.suppression.findUniqueOrThrow({ where: { senderDomain_address: { senderDomain: e.senderDomain, address: e.address } }, select: SELECT });
  return { row, created: false };
}

/** Removes the address from each of `domains` (null: every domain); returns the domains it was removed from. */
export async function removeSuppression(db: Db, address: string, domains: string[] | null): Promise<string[]> {
  const rows = await db.suppression.findMany({
    where: { address, ...(domains ? { senderDomain: { in: domains } } : {}) },
    select: { id: true, senderDomain: true },
  });
  if (rows.length === 0) return [];
  await db.suppression.deleteMany({ where: { id: { in: rows.map((r) => r.id) } } });
  return rows.map((r) => r.senderDomain).sort();
}
