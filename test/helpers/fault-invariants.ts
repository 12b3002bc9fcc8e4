// The invariant check run after every fault scenario (issue 8), against the database
// and what the sink received:
//   - every 202 has its row, and no Idempotency-Key made two rows;
//   - no answer was a 5xx other than 503, and every 503 says when to retry;
//   - every recipient ends delivered, bounced or failed (waited for with a deadline);
//   - duplicates (copies the sink kept beyond one per Message-ID) are at most the
//     messages in flight at a crash, zero when nothing crashed;
//   - no lease is left expired and unclaimed;
//   - the sink holds a copy of every message the database calls delivered.
import type { SentMessage } from "./senders.ts";
import type { SinkCopy } from "./fault-sink.ts";
import { waitFor } from "./wait.ts";

export const FINAL = ["delivered", "bounced", "failed"] as const;

/** What the checker needs of a database connection (a pg.Pool or pg.Client). */
interface Queryable {
  query<R extends Record<string, unknown> = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: R[] }>;
}

export interface InvariantInput {
  db: Queryable;
  /** Every message the senders tried, with every answer. */
  sent: SentMessage[];
  copies: ReadonlyArray<Pick<SinkCopy, "messageId" | "kept">>;
  /** Messages in flight in processes killed with SIGKILL; 0 when nothing crashed. */
  crashedInFlight: number;
  /** How long to wait for every recipient to reach a final status. */
  settleMs: number;
  /** A lease this long past its expiry without a new claim counts as stuck (default 2 s). */
  leaseGraceMs?: number;
  /** The metadata field the senders put the Idempotency-Key in (default fault_key). */
  keyField?: string;
  /** Per Idempotency-Key, the final recipient status the scenario expects (e.g. 552 -> bounced). */
  expected?: ReadonlyMap<string, (typeof FINAL)[number]>;
}

export interface Figures {
  sent: number;
  accepted: number;
  answers503: number;
  answers500: number;
  /** Requests that got no answer at all (connection refused while restarting, timeouts). */
  unanswered: number;
  rows: number;
  recipients: number;
  delivered: number;
  bounced: number;
  failed: number;
  copies: number;
  duplicates: number;
  /** Recipients not final at the deadline, or whose delivery holds an expired lease. */
  stuck: number;
  /** Slowest answer, ms. */
  maxAnswerMs: number;
}

export interface InvariantReport {
  figures: Figures;
  /** One line per broken invariant; empty when all hold. */
  failures: string[];
}

export async function checkInvariants(input: InvariantInput): Promise<InvariantReport> {
  const { db, sent } = input;
  const keyField = input.keyField ?? "fault_key";
  const failures: string[] = [];
  const answers = sent.flatMap((m) => m.answers);

  // Answers.
  const wrong5xx = answers.filter((a) => a.status >= 500 && a.status !== 503);
  if (wrong5xx.length > 0) {
    const byCode = new Map<number, number>();
    for (const a of wrong5xx) byCode.set(a.status, (byCode.get(a.status) ?? 0) + 1);
    failures.push(`${wrong5xx.length} answers were 5xx other than 503 (${[...byCode].map(([c, n]) => `${n}x${c}`).join(", ")})`);
  }
  const odd = answers.filter((a) => a.status > 0 && a.status < 500 && a.status !== 202);
  if (odd.length > 0) failures.push(`${odd.length} answers were neither 202 nor 503 (e.g. ${odd[0]!.status})`);
  const no503Header = answers.filter((a) => a.status === 503 && a.retryAfter === null).length;
  if (no503Header > 0) failures.push(`${no503Header} 503 answers without Retry-After`);

  // Every 202 has its row; one row per key.
  const acceptedIds = [...new Set(sent.filter((m) => m.id !== null).map((m) => m.id!))];
  const { rows: found } = await db.query<{ id: string }>(`SELECT id::text AS id FROM messages WHERE id = ANY($1::uuid[])`, [acceptedIds]);
  const missing = acceptedIds.length - found.length;
  if (missing > 0) failures.push(`${missing} messages answered 202 have no row`);
  const { rows: perKey } = await db.query<{ k: string | null; n: number }>(
    `SELECT metadata->>$1 AS k, count(*)::int AS n FROM messages GROUP BY 1 HAVING count(*) > 1`,
    [keyField],
  );
  if (perKey.length > 0) failures.push(`${perKey.length} Idempotency-Keys made more than one row (e.g. ${perKey[0]!.k ?? "no key"}: ${perKey[0]!.n})`);

  // Every recipient ends final: wait for it, with a deadline.
  const nonFinal = async () =>
    (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM recipients WHERE status <> ALL($1::text[])`, [FINAL])).rows[0]!.n;
  let open = await nonFinal();
  if (open > 0) {
    // A timeout is reported below with the count, as one failure among the others.
    await waitFor(async () => (open = await nonFinal()) === 0, { timeoutMs: input.settleMs, intervalMs: 200 }).catch(() => undefined);
  }
  if (open > 0) failures.push(`${open} recipients not delivered, bounced or failed after ${(input.settleMs / 1000).toFixed(1)} s`);

  const grace = input.leaseGraceMs ?? 2000;
  const { rows: leaseRows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM deliveries
      WHERE state = 'pending' AND lease_owner IS NOT NULL AND next_attempt_at < now() - make_interval(secs => $1::double precision / 1000)`,
    [grace],
  );
  const expiredLeases = leaseRows[0]!.n;
  if (expiredLeases > 0) failures.push(`${expiredLeases} leases expired more than ${grace} ms ago and were not claimed again`);

  const { rows: stuckRows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM recipients r JOIN deliveries d ON d.id = r.delivery_id
      WHERE r.status <> ALL($1::text[])
         OR (d.state = 'pending' AND d.lease_owner IS NOT NULL AND d.next_attempt_at < now() - make_interval(secs => $2::double precision / 1000))`,
    [FINAL, grace],
  );

  // Copies.
  const kept = new Map<string, number>();
  for (const c of input.copies) if (c.kept && c.messageId) kept.set(c.messageId, (kept.get(c.messageId) ?? 0) + 1);
  const duplicates = [...kept.values()].reduce((a, n) => a + n - 1, 0);
  if (duplicates > input.crashedInFlight) {
    failures.push(
      input.crashedInFlight === 0
        ? `${duplicates} duplicate copies where nothing crashed`
        : `${duplicates} duplicate copies, more than the ${input.crashedInFlight} messages in flight at the crash`,
    );
  }
  const { rows: deliveredRows } = await db.query<{ mid: string }>(
    `SELECT DISTINCT m.message_id_header AS mid FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.status = 'delivered'`,
  );
  const uncovered = deliveredRows.filter((r) => !kept.has(r.mid));
  if (uncovered.length > 0) failures.push(`${uncovered.length} delivered messages the sink never kept (e.g. ${uncovered[0]!.mid})`);

  // What the scenario expects of particular messages.
  if (input.expected && input.expected.size > 0) {
    const { rows } = await db.query<{ k: string; status: string; reply: string | null }>(
      `SELECT m.metadata->>$1 AS k, r.status, r.last_reply AS reply FROM recipients r JOIN messages m ON m.id = r.message_id WHERE m.metadata->>$1 = ANY($2::text[])`,
      [keyField, [...input.expected.keys()]],
    );
    const wrong = rows.filter((r) => input.expected!.get(r.k) !== r.status);
    if (wrong.length > 0) failures.push(`${wrong.length} recipients ended other than expected (e.g. ${wrong[0]!.k}: ${wrong[0]!.status}, expected ${input.expected.get(wrong[0]!.k)}; last reply ${JSON.stringify(wrong[0]!.reply)})`);
  }

  const { rows: counts } = await db.query<{ rows: number; recipients: number; delivered: number; bounced: number; failed: number }>(
    `SELECT (SELECT count(*) FROM messages)::int AS rows, count(*)::int AS recipients,
            (count(*) FILTER (WHERE status = 'delivered'))::int AS delivered,
            (count(*) FILTER (WHERE status = 'bounced'))::int AS bounced,
            (count(*) FILTER (WHERE status = 'failed'))::int AS failed
       FROM recipients`,
  );
  const c = counts[0]!;
  return {
    figures: {
      sent: sent.length,
      accepted: sent.filter((m) => m.id !== null).length,
      answers503: answers.filter((a) => a.status === 503).length,
      answers500: wrong5xx.length,
      unanswered: answers.filter((a) => a.status === 0).length,
      rows: c.rows,
      recipients: c.recipients,
      delivered: c.delivered,
      bounced: c.bounced,
      failed: c.failed,
      copies: input.copies.length,
      duplicates,
      stuck: stuckRows[0]!.n,
      maxAnswerMs: answers.reduce((a, x) => Math.max(a, x.ms), 0),
    },
    failures,
  };
}
