// The MTA-STS policy cache every worker shares (mta_sts_policies; worker/mta-sts.ts).
import type pg from "pg";

export interface MtaStsPolicyRow {
  domain: string;
  policy_id: string;
  mode: "enforce" | "testing" | "none";
  mx: string[];
  max_age: number;
  fetched_at: Date;
  expires_at: Date;
  last_error: string | null;
}

export async function findMtaStsPolicy(pool: pg.Pool, domain: string): Promise<MtaStsPolicyRow | null> {
  const { rows } = await pool.query<MtaStsPolicyRow>(
    "SELECT domain, policy_id, mode, mx, max_age, fetched_at, expires_at, last_error FROM mta_sts_policies WHERE domain = $1",
    [domain],
  );
  return rows[0] ?? null;
}

/** A policy just fetched replaces what was cached for its domain. */
export async function saveMtaStsPolicy(pool: pg.Pool, p: Omit<MtaStsPolicyRow, "last_error">): Promise<void> {
  await pool.query(
    `INSERT INTO mta_sts_policies (domain, policy_id, mode, mx, max_age, fetched_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (domain) DO UPDATE
        SET policy_id = EXCLUDED.policy_id, mode = EXCLUDED.mode, mx = EXCLUDED.mx, max_age = EXCLUDED.max_age,
            fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at, last_error = NULL, last_error_at = NULL`,
    [p.domain, p.policy_id, p.mode, p.mx, p.max_age, p.fetched_at, p.expires_at],
  );
}

/** A refresh failed while the cached policy stays in force: say why, for the evidence and the operator. */
export async function noteMtaStsError(pool: pg.Pool, domain: string, error: string): Promise<void> {
  await pool.query("UPDATE mta_sts_policies SET last_error = $2, last_error_at = now() WHERE domain = $1 AND last_error IS DISTINCT FROM $2", [domain, error]);
}
