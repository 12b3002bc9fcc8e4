// The bounce receiver (issue 13, item 4): an SMTP server (smtp-server) for the verified
// bounce domains, where delivery status notifications (RFC 3464) and complaints (ARF,
// RFC 5965) come back to the envelope sender bounce+<token>@<bounce domain>.
//
// Everything here comes from the internet, so it is refused as early as it can be:
// - RCPT: only bounce+<token>@<verified bounce domain> whose token authenticates under a
//   data key (security/bounce-token.ts) and names a recipient that exists; anything else
//   is 550 5.1.1 and the message never starts;
// - at most INBOUND_MAX_BYTES per message (announced as SIZE, and a message that grows past
//   it anyway is 552 and dropped), INBOUND_MAX_CLIENTS connections, INBOUND_RATE_PER_MINUTE
//   messages per client address, and an idle or stalled connection is closed after 30 s;
// - what it cannot parse as a report is logged (without its content) and dropped with 250,
//   as receivers of bounces do (a bounce of a bounce helps no one);
// - a report can change only the recipient its token names, and only when the report is
//   about that recipient's own address: a DSN naming another message's recipient changes
//   nothing;
// - a DSN's failure that comes before the worker has recorded the delivery (a receiver may
//   answer 250 and bounce within milliseconds) is answered 451, so its sender tries again.
// STARTTLS is offered with the server certificate (the API's).
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from "smtp-server";
import type { Logger } from "pino";
import type pg from "pg";
import { BounceTokens } from "../security/bounce-token.ts";
import type { ContentCipher } from "../security/content-cipher.ts";
import { isVerifiedBounceDomain } from "../db/sender-domains.ts";
import { findReportedRecipient, recordComplaint, recordLateBounce, type ReportedRecipient } from "../db/reports.ts";
import { isAddressFailure } from "../domain/suppression.ts";
import { errorFields } from "../logger.ts";
import type { InboundReport } from "./report.ts";

const DEFAULT_REPORT_MAX_AGE_MS = 30 * 86_400_000;

export interface InboundOptions {
  pool: pg.Pool;
  cipher: ContentCipher;
  logger: Logger;
  /** The server certificate and key (PEM), for STARTTLS. */
  tls: { cert: Buffer | string; key: Buffer | string };
  name: string;
  maxBytes: number;
  maxClients: number;
  ratePerMinute: number;
  /**
   * A bounce address whose recipient has not changed for longer than this (for a delivered
   * one: delivered longer ago) is refused like an unknown one (INBOUND_REPORT_MAX_AGE;
   * default 30 days): bounce tokens do not expire by themselves, and a DSN or complaint that
   * late says nothing a merchant can still act on. Counted from the delivery, not from when
   * the message was accepted: a message scheduled 30 days ahead is only then sent.
   */
  reportMaxAgeMs?: number;
  /** A connection that sends nothing for this long is closed (default 30 s). */
  idleMs?: number;
  /** Parses a report; the default loads inbound/report.ts (mailparser) on first use. */
  parse?: (raw: Buffer) => Promise<InboundReport>;
}

export interface InboundServer {
  address(): { host: string; port: number };
  close(): Promise<void>;
}

const IDLE_MS = 30_000;

/** Recipients of one SMTP transaction, as the RCPT checks resolved them. */
type Envelope = Map<string, ReportedRecipient>;

export async function startInboundServer(opts: InboundOptions, listen: { host: string; port: number }): Promise<InboundServer> {
  const log = opts.logger.child({ component: "inbound" });
  const tokens = new BounceTokens(opts.cipher);
  // mailparser is loaded with the first message, not at start.
  const parse = opts.parse ?? (async (raw: Buffer) => (await import("./report.ts")).parseReport(raw, { maxBytes: opts.maxBytes }));
  const envelopes = new WeakMap<SMTPServerSession, Envelope>();
  const recent = new Map<string, number[]>(); // client address -> times of its recent messages

  const refuse = (code: number, message: string) => Object.assign(new Error(message), { responseCode: code });

  async function recipientFor(address: SMTPServerAddress): Promise<ReportedRecipient | null> {
    const at = address.address.lastIndexOf("@");
    if (at <= 0) return null;
    const id = tokens.recipientOf(address.address.slice(0, at));
    if (id === null) return null;
    if (!(await isVerifiedBounceDomain(opts.pool, address.address.slice(at + 1).toLowerCase()))) return null;
    const r = await findReportedRecipient(opts.pool, id);
    if (r && Date.now() - r.lastChangedAt.getTime() > (opts.reportMaxAgeMs ?? DEFAULT_REPORT_MAX_AGE_MS)) {
      log.info({ recipient: String(r.id), message: r.messageId }, "refused a bounce address older than INBOUND_REPORT_MAX_AGE");
      return null;
    }
    return r;
  }

  const server = new SMTPServer({
    name: opts.name,
    key: opts.tls.key,
    cert: opts.tls.cert,
    size: opts.maxBytes,
    maxClients: opts.maxClients,
    socketTimeout: opts.idleMs ?? IDLE_MS,
    closeTimeout: 5_000,
    authOptional: true,
    disabledCommands: ["AUTH"],
    hideENHANCEDSTATUSCODES: false,
    disableReverseLookup: true,
    logger: false,
    banner: "bounce receiver",
    onMailFrom(_address, session, callback) {
      const now = Date.now();
      const times = (recent.get(session.remoteAddress) ?? []).filter((t) => now - t < 60_000);
      if (times.length >= opts.ratePerMinute) return callback(refuse(421, "4.7.0 too many messages from your address; try again later"));
      times.push(now);
      recent.set(session.remoteAddress, times);
      // Many clients over time: forget the ones not seen for a minute.
      if (recent.size > 10_000) for (const [client, t] of recent) if (now - t[t.length - 1]! >= 60_000) recent.delete(client);
      envelopes.set(session, new Map());
      callback();
    },
    onRcptTo(address, session, callback) {
      recipientFor(address).then(
        (r) => {
          if (!r) return callback(refuse(550, "5.1.1 no such bounce address"));
          envelopes.get(session)?.set(address.address.toLowerCase(), r);
          callback();
        },
        (err: unknown) => {
          log.warn({ err: errorFields(err) }, "could not check a bounce address; answering 451");
          callback(refuse(451, "4.3.0 temporary failure, try again later"));
        },
      );
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => {
        if (!stream.sizeExceeded) chunks.push(c);
      });
      stream.on("end", () => {
        if (stream.sizeExceeded) return callback(refuse(552, `5.3.4 message exceeds the ${opts.maxBytes} bytes this server accepts`));
        const envelope = envelopes.get(session) ?? new Map();
        handle(Buffer.concat(chunks), [...envelope.values()], session.remoteAddress).then(
          (outcome) => callback(outcome === "try later" ? refuse(451, "4.3.0 the message this report is about is still being delivered; try again later") : null),
          (err: unknown) => {
            log.error({ err: errorFields(err) }, "could not record a report; answering 451 so the sender tries again");
            callback(refuse(451, "4.3.0 temporary failure, try again later"));
          },
        );
      });
    },
  });
  server.on("error", (err) => log.warn({ err: errorFields(err) }, "inbound SMTP connection error"));

  /**
   * Applies one report to the recipients its envelope names; never throws for what the
   * report says, only for the database. `try later` when a failure names a recipient the
   * worker has not finished yet: the reporting MTA keeps the DSN and sends it again
   * (RFC 5321 4.5.4.1), by when the worker's result is written, instead of the report
   * being lost. Whatever was recorded for other recipients is not recorded twice.
   */
  async function handle(raw: Buffer, recipients: ReportedRecipient[], client: string): Promise<"done" | "try later"> {
    let report: InboundReport;
    try {
      report = await parse(raw);
    } catch (err) {
      report = { kind: "unrecognised", reason: `the parser failed: ${(err as Error).message}` };
    }
    if (report.kind === "unrecognised") {
      log.info({ client, bytes: raw.length, reason: report.reason }, "dropped a message that is not a report we read");
      return "done";
    }
    let outcome: "done" | "try later" = "done";
    for (const r of recipients) {
      const own = r.address.toLowerCase();
      if (report.kind === "arf") {
        if (!report.originalRcptTo.some((a) => a.toLowerCase() === own) && report.originalRcptTo.length > 0) {
          log.warn({ client, recipient: String(r.id) }, "dropped a complaint about another address than its bounce address names");
          continue;
        }
        const changed = await recordComplaint(opts.pool, r, report.feedbackType);
        log.info({ client, recipient: String(r.id), message: r.messageId, changed }, "complaint recorded");
        continue;
      }
      const entry = report.recipients.find((x) => x.finalRecipient.toLowerCase() === own || x.originalRecipient?.toLowerCase() === own);
      if (!entry) {
        log.warn({ client, recipient: String(r.id) }, "dropped a DSN that does not name the recipient its bounce address names");
        continue;
      }
      if (entry.action !== "failed") {
        // RFC 3464: delayed, delivered, relayed, expanded: information, the recipient's status stands.
        log.info({ client, recipient: String(r.id), message: r.messageId, action: entry.action, status: entry.status }, "delivery status notification noted");
        continue;
      }
      // The receiver's own reply, when the report quotes it ("smtp; 550 5.2.1 ..."), is more
      // precise than the Status the reporting MTA chose (Exim reports 5.0.0 for every failure).
      const diagnostic = /^smtp;\s*(\d{3})(?:[ -]([245]\.\d{1,3}\.\d{1,3})\b)?/i.exec(entry.diagnosticCode ?? "");
      const replyCode = diagnostic ? Number(diagnostic[1]) : null;
      const enhancedCode = diagnostic?.[2] && diagnostic[2][0] === entry.status[0] ? diagnostic[2] : entry.status;
      const text = (entry.diagnosticCode ?? `status ${entry.status}`).replace(/^smtp;\s*/i, "").slice(0, 500);
      const suppress = isAddressFailure({ status: "bounced", replyCode: replyCode ?? 550, enhancedCode });
      const result = await recordLateBounce(opts.pool, r, { replyCode, enhancedCode, text: `reported later: ${text}`, suppress });
      if (result === "not delivered yet") {
        log.info({ client, recipient: String(r.id), message: r.messageId, status: entry.status }, "a late bounce came before the delivery's result; answering 451");
        outcome = "try later";
        continue;
      }
      log.info({ client, recipient: String(r.id), message: r.messageId, status: entry.status, changed: result === "bounced" }, "late bounce recorded");
    }
    return outcome;
  }

  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(listen.port, listen.host, () => {
      server.server.off("error", reject);
      resolve();
    });
  });
  const bound = server.server.address();
  if (!bound || typeof bound === "string") throw new Error("the bounce receiver did not bind a TCP port");
  log.info({ host: bound.address, port: bound.port }, `bounce receiver listening on ${bound.address}:${bound.port}`);
  return {
    address: () => ({ host: bound.address, port: bound.port }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
