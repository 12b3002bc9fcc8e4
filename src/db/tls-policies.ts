// The operator's per-domain TLS policy map kept in the database (tls_policies), managed
// with /tls-policies; SMTP_TLS_POLICY_MAP holds the rules of the configuration.
import type pg from "pg";

export interface TlsPolicyRuleRow {
  id: string;
  pattern: string;
  policy: "required";
  mx: string[];
  fingerprints: string[];
  description: string | null;
  created_at: Date;
}

const COLUMNS = "id::text, pattern, policy, mx, fingerprints, description, created_at";

export async function findTlsPolicyRules(pool: pg.Pool): Promise<TlsPolicyRuleRow[]> {
  const { rows } = await pool.query<TlsPolicyRuleRow>(`SELECT ${COLUMNS} FROM tls_policies ORDER BY pattern`);
  return rows;
}

export async function findTlsPolicyRule(pool: pg.Pool, id: string): Promise<TlsPolicyRuleRow | null> {
  const { rows } = await pool.query<TlsPolicyRuleRow>(`SELECT ${COLUMNS} FROM tls_policies WHERE id = $1`, [id]);
  return rows[0] ?? null;
}

/** The new rule, or null when a rule for the same pattern exists already. */
export async function insertTlsPolicyRule(
  pool: pg.Pool, r: { id: string; pattern: string; mx: string[]; fingerprints: string[]; description: string | null; createdByKeyId: string | null },
): Promise<TlsPolicyRuleRow | null> {
  const { rows } = await pool.query<TlsPolicyRuleRow>(
    `INSERT INTO tls_policies (id, pattern, policy, mx, fingerprints, description, created_by_key_id)
     VALUES ($1, $2, 'required', $3, $4, $5, $6)
     ON CONFLICT (pattern) DO NOTHING
     RETURNING ${COLUMNS}`,
    [r.id, r.pattern, r.mx, r.fingerprints, r.description, r.createdByKeyId],
  );
  return rows[0] ?? null;
}

export async function findTlsPolicyRuleByPattern(pool: pg.Pool, pattern: string): Promise<TlsPolicyRuleRow | null> {
  const { rows } = await pool.query<TlsPolicyRuleRow>(`SELECT ${COLUMNS} FROM tls_policies WHERE pattern = $1`, [pattern]);
  return rows[0] ?? null;
}

export async function deleteTlsPolicyRule(pool: pg.Pool, id: string): Promise<boolean> {
  const r = await pool.query("DELETE FROM tls_policies WHERE id = $1", [id]);
  return (r.rowCount ?? 0) > 0;
}
