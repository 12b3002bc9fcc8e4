// The delivery status notification `npm run sink` sends back for a mailbox it plays as
// missing (SINK_BOUNCE_TO): what an MTA writes when it took a message and its local delivery
// then failed, worded as Postfix words it. RFC 3464 inside RFC 6522's multipart/report: a
// human-readable part, the message/delivery-status part (per-message fields, a blank line,
// per-recipient fields), and the returned message's headers only (text/rfc822-headers),
// which is where a reader finds the original Message-ID. test/unit/sink-dsn.test.ts reads it
// with sealpost's own parser (src/inbound/report.ts).
import { randomUUID } from "node:crypto";

export interface SinkDsn {
  /** The envelope sender of the failed message: the DSN goes there, from <>. */
  to: string;
  /** The recipient whose delivery failed. */
  recipient: string;
  /** The failed message as received (only its header block is returned). */
  original: string;
  /** When the sink received it (Arrival-Date). */
  arrivedAt: Date;
  /** The reporting host (Reporting-MTA; default localhost). */
  reportingMta?: string;
}

/** RFC 5322 date-time, which is what Date#toUTCString writes apart from "GMT" for "+0000". */
const rfc5322Date = (d: Date) => d.toUTCString().replace(/GMT$/, "+0000");

export function sinkDsn(o: SinkDsn): string {
  const mta = o.reportingMta ?? "localhost";
  const end = o.original.search(/\r?\n\r?\n/);
  const headers = (end >= 0 ? o.original.slice(0, end) : o.original).replace(/\r?\n/g, "\r\n");
  const boundary = `sink-${randomUUID()}`;
  return [
    `From: Mail Delivery System <MAILER-DAEMON@${mta}>`,
    `To: <${o.to}>`,
    "Subject: Undelivered Mail Returned to Sender",
    `Date: ${rfc5322Date(new Date())}`,
    `Message-ID: <${randomUUID()}@${mta}>`,
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    "",
    `--${boundary}`,
    "Content-Description: Notification",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    `This is the mail system at host ${mta} (the sealpost sink).`,
    "",
    `Your message could not be delivered to <${o.recipient}>: the mailbox does not exist.`,
    "",
    `--${boundary}`,
    "Content-Description: Delivery report",
    "Content-Type: message/delivery-status",
    "",
    `Reporting-MTA: dns; ${mta}`,
    `Arrival-Date: ${rfc5322Date(o.arrivedAt)}`,
    "",
    `Final-Recipient: rfc822; ${o.recipient}`,
    `Original-Recipient: rfc822;${o.recipient}`,
    "Action: failed",
    "Status: 5.1.1",
    `Diagnostic-Code: smtp; 550 5.1.1 <${o.recipient}>: Recipient address rejected: User unknown in local recipient table`,
    "",
    `--${boundary}`,
    "Content-Description: Undelivered Message Headers",
    "Content-Type: text/rfc822-headers",
    "",
    headers,
    "",
    `--${boundary}--`,
    "",
  ].join("\r\n");
}
