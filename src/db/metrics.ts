// The queue figures /metrics reports (metrics.ts), read when scraped.
import type pg from "pg";
import type { QueueStats } from "../metrics.ts";

export async function queueStats(pool: pg.Pool): Promise<QueueStats> {
  const { rows } = await pool.query<{ due: string; oldest: number | null; hooks: string }>(
    `SELECT (SELECT count(*) FROM deliveries WHERE state = 'pending' AND next_attempt_at <= now() AND lease_owner IS NULL) AS due,
            (SELECT extract(epoch FROM now() - min(next_attempt_at))::float8 FROM deliveries
              WHERE state = 'pending' AND next_attempt_at <= now() AND lease_owner IS NULL) AS oldest,
            (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending') AS hooks`,
  );
  const r = rows[0]!;
  return { due: Number(r.due), oldestDueSeconds: Math.max(0, r.oldest ?? 0), webhookBacklog: Number(r.hooks) };
}
