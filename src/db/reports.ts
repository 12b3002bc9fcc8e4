// What a report that comes back later does to a recipient (issue 13): a delivery status
// notification that says a delivered message failed after all, or a complaint. Written by
// the bounce receiver (src/inbound/), under the message row lock like a result that does
// not hold all of a message's recipients (db/deliveries.ts underMessageLock).
import type pg from "pg";
import { FINAL_RECIPIENT_STATUSES, type RecipientStatus } from "../domain/message.ts";
import { fanOutToWebhooks } from "./events.ts";
import { refreshMessageStatus, underMessageLock } from "./deliveries.ts";
import { senderDomainSql } from "./suppressions.ts";

/** The recipient a bounce address names, with what a report about it is checked against. */
export interface ReportedRecipient {
  id: bigint;
  messageId: string;
  address: string;
  status: string;
  fromAddress: string;
  /**
   * When its status last changed: for a delivered recipient, when the worker recorded the
   * delivery. A bounce address quiet for longer than INBOUND_REPORT_MAX_AGE is refused.
   */
  lastChangedAt: Date;
}

export async function findReportedRecipient(pool: pg.Pool, id: bigint): Promise<ReportedRecipient | null> {
  const { rows } = await pool.query<{ id: string; message_id: string; address: string; status: string; from_address: string; updated_at: Date }>(
    `SELECT r.id::text AS id, r.message_id::text AS message_id, r.address, r.status, m.from_address, r.updated_at
       FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.id = $1`, [String(id)]);
  const r = rows[0];
  return r ? { id: BigInt(r.id), messageId: r.message_id, address: r.address, status: r.status, fromAddress: r.from_address, lastChangedAt: r.updated_at } : null;
}

const SENDER_DOMAIN = senderDomainSql("m.from_address");

/**
 * What a DSN's failure did: `bounced`; `unchanged` (the recipient is final already, e.g. a
 * replay); or `not delivered yet`: the recipient is still waiting or being sent, which is
 * what a report that overtakes the worker's own result looks like (a receiver can answer
 * 250 and send its DSN before the worker has written `delivered`).
 */
export type LateBounceOutcome = "bounced" | "unchanged" | "not delivered yet";

/**
 * A delivered recipient that a DSN reports failed: it becomes `bounced` with the report's
 * status and diagnostic, with its event (and webhooks), and, for an address failure, its
 * address goes on the sender domain's list. Only a `delivered` recipient changes: a second
 * report about it (a replay) writes nothing.
 */
export async function recordLateBounce(
  pool: pg.Pool, r: ReportedRecipient, report: { replyCode: number | null; enhancedCode: string; text: string; suppress: boolean },
): Promise<LateBounceOutcome> {
  let outcome: LateBounceOutcome = "unchanged";
  await underMessageLock(pool, r.messageId, async (client) => {
    const { rowCount } = await client.query(
      `WITH rcpt AS (
         UPDATE recipients SET status = 'bounced', last_code = $2, last_enhanced = $3, last_reply = $4, updated_at = now()
          WHERE id = $1 AND status = 'delivered'
         RETURNING id, message_id, address
       ), evt AS (
         INSERT INTO events (type, api_key_id, message_id, recipient_id, reply_code, enhanced_code, reply_text)
         SELECT 'message.bounced', m.api_key_id, rcpt.message_id, rcpt.id, $2, $3, $4 FROM rcpt JOIN messages m ON m.id = rcpt.message_id
         RETURNING id, api_key_id, type
       ), hooks AS (
         ${fanOutToWebhooks("evt")}
       ), suppress AS (
         INSERT INTO suppressions (sender_domain, address, reason, message_id, recipient_id, reply_code, enhanced_code, reply_text)
         SELECT ${SENDER_DOMAIN}, lower(rcpt.address), 'hard_bounce', rcpt.message_id, rcpt.id, $2, $3, $4
           FROM rcpt JOIN messages m ON m.id = rcpt.message_id WHERE $5
         ON CONFLICT (sender_domain, address) DO NOTHING
       )
       SELECT 1 FROM rcpt`,
      [String(r.id), report.replyCode, report.enhancedCode, report.text, report.suppress],
    );
    if (rowCount === 0) {
      const { rows } = await client.query<{ status: RecipientStatus }>(`SELECT status FROM recipients WHERE id = $1`, [String(r.id)]);
      if (rows[0] && !FINAL_RECIPIENT_STATUSES.has(rows[0].status)) outcome = "not delivered yet";
      return false;
    }
    await refreshMessageStatus(client, r.messageId);
    outcome = "bounced";
    return true;
  });
  return outcome;
}

/**
 * A complaint (an ARF report from a feedback loop) about mail to a recipient: its address
 * goes on the sender domain's list as a complaint, with a `message.complained` event. The
 * recipient's status stays what it was (the mail was delivered). A second report writes
 * nothing. Returns whether it changed anything.
 */
export async function recordComplaint(pool: pg.Pool, r: ReportedRecipient, feedbackType: string): Promise<boolean> {
  const { rowCount } = await pool.query(
    `WITH suppress AS (
       INSERT INTO suppressions (sender_domain, address, reason, message_id, recipient_id, reply_text)
       SELECT ${SENDER_DOMAIN}, lower(r.address), 'complaint', r.message_id, r.id, $2
         FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.id = $1
       ON CONFLICT (sender_domain, address) DO UPDATE SET reason = 'complaint', message_id = EXCLUDED.message_id,
         recipient_id = EXCLUDED.recipient_id, reply_text = EXCLUDED.reply_text, reply_code = NULL, enhanced_code = NULL
         WHERE suppressions.reason <> 'complaint'
       RETURNING message_id, recipient_id
     ), evt AS (
       INSERT INTO events (type, api_key_id, message_id, recipient_id, reply_text)
       SELECT 'message.complained', m.api_key_id, s.message_id, s.recipient_id, $2 FROM suppress s JOIN messages m ON m.id = s.message_id
       RETURNING id, api_key_id, type
     ), hooks AS (
       ${fanOutToWebhooks("evt")}
     )
     SELECT 1 FROM suppress`,
    [String(r.id), `feedback report: ${feedbackType}`],
  );
  return (rowCount ?? 0) > 0;
}
