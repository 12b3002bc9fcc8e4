// One UTC day of direct-delivery evidence per recipient domain, summed by what it says
// (domain/tls-report.ts builds RFC 8460 reports from it). Attempts through a relay and
// those recorded before attempts kept their policy detail are left out.
import type pg from "pg";
import type { AttemptGroup } from "../domain/tls-report.ts";

const DAY_SQL = `
SELECT d.domain,
       jsonb_build_object('state', a.policy_detail->'mta_sts'->'state', 'mode', a.policy_detail->'mta_sts'->'mode',
                          'id', a.policy_detail->'mta_sts'->'id', 'mx', a.policy_detail->'mta_sts'->'mx',
                          'mx_match', a.policy_detail->'mta_sts'->'mx_match') AS sts, a.mx_host AS "mxHost", a.ip, a.tls, a.verified, a.verify_error AS "verifyError",
       a.policy_detail->>'mx_name_check' AS "mxNameCheck", CASE WHEN a.mx_host IS NULL THEN a.reply_text END AS "replyText",
       count(*)::int AS count
  FROM delivery_attempts a
  JOIN recipients r ON r.id = a.recipient_id
  JOIN deliveries d ON d.id = r.delivery_id
 WHERE a.started_at >= $1 AND a.started_at < $1 + interval '1 day'
   AND a.policy_detail IS NOT NULL AND a.policy_detail->'mta_sts'->>'state' <> 'relay'
   AND ($2::text IS NULL OR d.domain = $2)
   -- A connection was made, or a policy ruled every host out (a local decision with no host is not a session).
   AND (a.mx_host IS NOT NULL OR a.policy_source IN ('mta-sts', 'map'))
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
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
