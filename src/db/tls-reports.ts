// One UTC day of direct-delivery evidence per recipient domain, summed by what it says
// (domain/tls-report.ts builds RFC 8460 reports from it). Attempts through a relay and
// those recorded before attempts kept their policy detail are left out.
import type pg from "pg";
import type { AttemptGroup } from "../domain/tls-report.ts";

const DAY_SQL = `
SELECT d.domain,
       jsonb_build_object('state', a.policy_detail->'mta_sts'->'state', 'mode', a.policy_detail->'mta_sts'->'mode',
                          'id', a.policy_detail->'mta_sts'->'id', 'mx', a.policy_detail->'mta_sts'->'mx',
                          'mx_match', a.policy_detail->'mta_sts'->'mx_match') AS sts,
       jsonb_build_object('state', a.policy_detail->'dane'->'state', 'record', a.policy_detail->'dane'->'record') AS dane, a.mx_host AS "mxHost", a.ip, a.tls, a.verified, a.verify_error AS "verifyError",
       a.policy_detail->>'mx_name_check' AS "mxNameCheck", CASE WHEN a.mx_host IS NULL THEN a.reply_text END AS "replyText",
       -- Sessions, not messages: the attempts a pooled connection carried share its id (one without, decided before any connection, counts alone).
       count(DISTINCT COALESCE(a.policy_detail->>'session', a.id::text))::int AS count
  FROM delivery_attempts a
  JOIN recipients r ON r.id = a.recipient_id
  JOIN deliveries d ON d.id = r.delivery_id
 WHERE a.started_at >= $1 AND a.started_at < $1 + interval '1 day'
   AND a.policy_detail IS NOT NULL AND a.policy_detail->'mta_sts'->>'state' <> 'relay'
   AND ($2::text IS NULL OR d.domain = $2)
   -- A connection was made, or a policy ruled every host out (a local decision with no host is not a session).
   AND (a.mx_host IS NOT NULL OR a.policy_source IN ('mta-sts', 'map', 'dane'))
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
 ORDER BY 1`;

export async function findDayAttemptGroups(pool: pg.Pool, day: Date, domain: string | null): Promise<AttemptGroup[]> {
  const { rows } = await pool.query<AttemptGroup>(DAY_SQL, [day, domain]);
  return rows;
}

/** max_age of the cached MTA-STS policies, by domain and id, for the reports' policy strings. */
export async function findMtaStsMaxAges(pool: pg.Pool, domains: string[]): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ domain: string; policy_id: string; max_age: number }>(
    "SELECT domain, policy_id, max_age FROM mta_sts_policies WHERE domain = ANY($1)",
    [domains],
  );
  return new Map(rows.map((r) => [`${r.domain}\0${r.policy_id}`, r.max_age]));
}

/**
 * Takes the submission of one report to one rua for this worker: a new one, a failed one
 * with attempts left, or one whose sender's lease ran out (it died sending). Null when
 * another worker has it or it is done.
 */
export async function claimTlsReportSubmission(
  pool: pg.Pool, s: { day: string; domain: string; rua: string; reportId: string }, o: { leaseMs: number; maxAttempts: number },
): Promise<boolean> {
  const { rowCount } = await pool.query(
    `INSERT INTO tls_report_submissions (day, domain, rua, report_id, state, attempts, lease_until)
     VALUES ($1, $2, $3, $4, 'sending', 1, now() + $5 * interval '1 millisecond')
     ON CONFLICT (day, domain, rua) DO UPDATE
        SET state = 'sending', attempts = tls_report_submissions.attempts + 1, lease_until = EXCLUDED.lease_until, updated_at = now()
      WHERE tls_report_submissions.attempts < $6
        AND (tls_report_submissions.state = 'failed' OR (tls_report_submissions.state = 'sending' AND tls_report_submissions.lease_until < now()))`,
    [s.day, s.domain, s.rua, s.reportId, o.leaseMs, o.maxAttempts],
  );
  return (rowCount ?? 0) > 0;
}

export async function finishTlsReportSubmission(
  pool: pg.Pool, s: { day: string; domain: string; rua: string }, r: { state: "sent" | "failed" | "skipped"; status: number | null; error: string | null },
): Promise<void> {
  await pool.query(
    `UPDATE tls_report_submissions SET state = $4, last_status = $5, last_error = $6, lease_until = NULL, updated_at = now()
      WHERE day = $1 AND domain = $2 AND rua = $3`,
    [s.day, s.domain, s.rua, r.state, r.status, r.error],
  );
}
