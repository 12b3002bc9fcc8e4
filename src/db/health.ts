// Whether the database answers.
import type { DatabaseHandle } from "./client.ts";

/**
 * One round trip straight through the pool, not through Prisma: node-postgres names the
 * failure (ECONNREFUSED, 28P01, 3D000) where Prisma's wrapping keeps only "not reachable".
 */
export async function ping(db: Pick<DatabaseHandle, "pool">): Promise<void> {
  await db.pool.query("SELECT 1");
}
