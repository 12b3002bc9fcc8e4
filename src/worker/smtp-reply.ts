// SMTP reply parsing and classification: what a reply code and its enhanced status
// code mean for one recipient. Pure functions, no network.
import type { DeliveryOutcome, ReplyVerdict } from "../domain/evidence.ts";


export interface ParsedReply {
  /** Three-digit reply code (RFC 5321 4.2), null when the text did not start with one. */
  code: number | null;
  /** RFC 3463 enhanced status code such as "5.1.1", null when the server sent none. */
  enhanced: string | null;
  /** The human-readable text, continuation lines joined with a space. */
  text: string;
}

// RFC 3463 section 2: class "." subject "." detail, subject and detail 1-3 digits.
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;
const REPLY_LINE = /^(\d{3})(?:[ -]|$)(.*)$/;

/**
 * Parses a (possibly multi-line) server reply such as "550-5.1.1 No such\n550 5.1.1 user".
 * RFC 2034 section 4 puts the enhanced code after the reply code on every line; only the
 * first line's code is kept, and only when its class matches the reply class, since a
 * "2.0.0" on a 550 reply is a server bug that must not turn a rejection into a success.
 */
export function parseReply(raw: string): ParsedReply {
  const lines = raw.split(/\r?\n/).filter((l) => l.trim() !== "");
  let code: number | null = null;
  let enhanced: string | null = null;
  const texts: string[] = [];
  for (const line of lines) {
    const m = REPLY_LINE.exec(line);
    if (!m) {
      texts.push(line.trim());
      continue;
    }
    code ??= Number(m[1]);
    let rest = m[2]!.trim();
    const e = ENHANCED.exec(rest);
    if (e) {
      if (enhanced === null && code !== null && Number(e[1]) === Math.floor(code / 100)) {
        enhanced = `${e[1]}.${Number(e[2])}.${Number(e[3])}`;
      }
      rest = rest.slice(e[0].length).trim();
    }
    if (rest) texts.push(rest);
  }
  return { code, enhanced, text: texts.join(" ") };
}

/**
 * What a negative or positive reply to RCPT, DATA or the final dot means for a recipient.
 * RFC 5321 4.2.1: 2yz done, 4yz transient (try again later), 5yz permanent. 503 "bad
 * sequence of commands" is a 5yz that describes our session, not the message, so it defers.
 */
function outcomeOf(code: number): DeliveryOutcome {
  if (code >= 200 && code < 400) return "delivered";
  if (code >= 500 && code < 600 && code !== 503) return "bounced";
  return "deferred";
}

/** The enhanced code to record when the server sent none: the reply's class with "0.0" (RFC 3463 3.1). */
export function defaultEnhanced(code: number): string {
  const cls = Math.floor(code / 100);
  return `${cls <= 3 ? 2 : cls}.0.0`;
}

/** RFC 3463 codes for outcomes decided on our side, with no server reply behind them. */
export const LOCAL_STATUS = {
  /** X.4.1 No answer from host: refused, unreachable, greeting never came. */
  noAnswer: "4.4.1",
  /** X.4.2 Bad connection: dropped or timed out in the middle of a session. */
  badConnection: "4.4.2",
  /** X.7.4 Security features not supported: TLS required but not offered or refused. */
  tlsNotAvailable: "4.7.4",
  /** X.7.5 Cryptographic failure: handshake failed or the certificate did not verify. */
  tlsFailed: "4.7.5",
  /** X.7.0 Other security status: relay authentication failed or could not be attempted. */
  authFailed: "4.7.0",
  /** X.3.4 Message too big for system: over the SIZE the server announced (RFC 1870). */
  tooBig: "5.3.4",
  /** X.1.3 / X.1.7 Bad destination / sender mailbox address syntax. */
  badRecipient: "5.1.3",
  badSender: "5.1.7",
} as const;

/** A verdict for one envelope recipient, as an attempt returns it. */
export interface RecipientVerdict extends ReplyVerdict {
  address: string;
}

/** The fields of nodemailer's errors and send result that decide outcomes (see nodemailer/lib/errors). */
export interface SmtpError {
  code?: string | undefined;
  originalCode?: string | undefined;
  timeoutType?: string | undefined;
  name: string;
  command?: string | undefined;
  response?: string | undefined;
  responseCode?: number | undefined;
  recipient?: string | undefined;
  rejectedErrors?: SmtpError[] | undefined;
}

export interface SendReport {
  /** The recipients handed to nodemailer (already checked for syntax). */
  to: readonly string[];
  err: SmtpError | null;
  info?: { accepted: string[]; rejectedErrors?: SmtpError[] | undefined; response: string } | undefined;
  /** Per-recipient RCPT refusals nodemailer recorded, for errors that do not carry them. */
  rcptErrors: readonly SmtpError[];
  /** The whole message was handed to the connection (the final dot may have reached the server). */
  messageSent: boolean;
}

/** The most specific code of an error: nodemailer keeps Node's own code as originalCode. */
export function errorName(err: SmtpError): string {
  return err.originalCode ?? err.timeoutType ?? err.code ?? err.name;
}

/** The verdict on a server reply; `fallbackCode` when the raw text did not parse. */
function verdictOfReply(raw: string | undefined, fallbackCode?: number): ReplyVerdict {
  const reply = parseReply(raw ?? "");
  const code = reply.code ?? fallbackCode ?? null;
  if (code === null) return localVerdict("deferred", LOCAL_STATUS.badConnection, raw ?? "unparseable reply");
  return { outcome: outcomeOf(code), replyCode: code, enhancedCode: reply.enhanced ?? defaultEnhanced(code), replyText: reply.text || null };
}

export function localVerdict(outcome: DeliveryOutcome, enhancedCode: string, replyText: string): ReplyVerdict {
  return { outcome, replyCode: null, enhancedCode, replyText };
}

/**
 * Decides every recipient of one transaction from what nodemailer reported, following
 * RFC 5321: a RCPT reply decides its recipient; a reply to MAIL decides all of them; a
 * reply to DATA or to the final dot decides the recipients accepted at RCPT; a lost
 * connection defers whoever is still undecided. Only the codes and the failed command are
 * used, never the reply text.
 */
export function classifySend(r: SendReport): { verdicts: Map<string, ReplyVerdict>; tryNextHost: boolean } {
  const verdicts = new Map<string, ReplyVerdict>();
  const undecided = () => r.to.filter((a) => !verdicts.has(a));
  const decideRest = (verdict: ReplyVerdict) => undecided().forEach((a) => verdicts.set(a, verdict));
  const recordRcpt = (errors: readonly SmtpError[]) => {
    for (const e of errors) if (e.recipient) verdicts.set(e.recipient, verdictOfReply(e.response, e.responseCode));
  };

  const { err, info } = r;
  if (!err) {
    recordRcpt(info?.rejectedErrors ?? []);
    const final = verdictOfReply(info?.response, 250);
    for (const a of info?.accepted ?? []) verdicts.set(a, final);
    decideRest(localVerdict("deferred", LOCAL_STATUS.badConnection, "no reply for this recipient"));
    return { verdicts, tryNextHost: false };
  }
  if (err.command === "MAIL FROM") {
    // No response: nodemailer refused locally because the message exceeds the SIZE the
    // server announced in EHLO (RFC 1870), which is as final as a 552 from the server.
    decideRest(
      err.responseCode
        ? verdictOfReply(err.response, err.responseCode)
        : localVerdict("bounced", LOCAL_STATUS.tooBig, "message exceeds the size limit the server announced"),
    );
    return { verdicts, tryNextHost: false };
  }
  recordRcpt(err.rejectedErrors ?? r.rcptErrors);
  if (err.responseCode && (err.command === "DATA" || err.command === "RCPT TO")) {
    decideRest(verdictOfReply(err.response, err.responseCode));
    return { verdicts, tryNextHost: false };
  }
  // The connection failed (dropped, timed out, 421): nothing undecided is lost, it is
  // deferred. Once the message was sent the server may have it, so no other host now.
  decideRest(
    err.response
      ? { ...verdictOfReply(err.response, err.responseCode), outcome: "deferred" }
      : localVerdict("deferred", LOCAL_STATUS.badConnection, `connection lost: ${errorName(err)}`),
  );
  return { verdicts, tryNextHost: !r.messageSent };
}
