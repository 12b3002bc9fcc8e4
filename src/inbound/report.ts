// Reading what comes back to a bounce address (issue 13): a delivery status notification
// (RFC 3464: multipart/report; report-type=delivery-status with its message/delivery-status
// part, or message/global-delivery-status of RFC 6533) or a complaint from a feedback loop
// (ARF, RFC 5965: report-type=feedback-report with its message/feedback-report part). The
// MIME tree is mailparser's (nodemailer's author); the report parts are RFC 822-style field
// groups, read here. Anything else, or a report that does not say what RFC 3464 requires
// (Final-Recipient, Action, Status per recipient), is `unrecognised`, never an exception:
// this reads what anyone on the internet sends, so every step is bounded (the message, the
// MIME parts, the report part, the recipients, the fields and their lengths).
//
// Only the standard formats are read (and X-Failed-Recipients beside an empty delivery-status
// part, see failedFromHeader). Plain-text bounces (qmail's; Exim 4.72's and Gmail's of
// 2014, which the fixtures hold) name the failed address in prose; guessing from prose would let
// any text that looks like a bounce decide a recipient's status, so they are `unrecognised`,
// logged and dropped. The fixtures' newer Exim and Gmail bounces are multipart/report.
import { simpleParser } from "mailparser";

export interface DsnRecipient {
  /** The address from Final-Recipient, its address type ("rfc822;") removed. */
  finalRecipient: string;
  originalRecipient?: string | undefined;
  action: "failed" | "delayed" | "delivered" | "relayed" | "expanded";
  /** RFC 3463 status, such as 5.1.1. */
  status: string;
  /** As sent, with its type: "smtp; 550 5.1.1 user unknown". */
  diagnosticCode?: string | undefined;
  /** The MTA's name, its type ("dns;") removed. */
  remoteMta?: string | undefined;
}

export type InboundReport =
  | {
    kind: "dsn"; reportingMta: string | null; arrivalDate: string | null; originalEnvelopeId: string | null;
    recipients: DsnRecipient[]; originalMessageId: string | null;
  }
  | {
    kind: "arf"; feedbackType: string; userAgent: string | null; originalMailFrom: string | null; originalRcptTo: string[];
    reportedDomain: string | null; arrivalDate: string | null; originalMessageId: string | null;
  }
  | { kind: "unrecognised"; reason: string };

/** Input above this is refused before it is parsed (the bounce receiver passes its own SMTP size limit). */
const DEFAULT_MAX_BYTES = 10 * 1024 * 1024;
/** Postfix's DSN has four MIME parts, Gmail's eight; mailparser refuses a message with more than this. */
const MAX_MIME_PARTS = 100;
/** A report part for MAX_RECIPIENTS recipients is a few tens of kilobytes. */
const MAX_REPORT_PART = 1024 * 1024;
/**
 * A bounce address names one recipient (VERP), so a DSN sent to it names one or a few;
 * the groups after this many are not read.
 */
const MAX_RECIPIENTS = 100;
const MAX_FIELDS_PER_GROUP = 50;
const MAX_FIELD = 1000;
/** Where the returned message's Message-ID is looked for: its header block, not its body. */
const MAX_RETURNED_HEAD = 64 * 1024;

const ACTIONS = new Set(["failed", "delayed", "delivered", "relayed", "expanded"]);
// RFC 3463 section 2: class "." subject "." detail, class 2, 4 or 5, the others 1 to 3 digits.
const STATUS = /^[245]\.\d{1,3}\.\d{1,3}$/;
// An addr-spec without its display name or brackets: a dot-atom or quoted local part (RFC 5322
// 3.4.1), an "@" and a domain (or, in message/global-delivery-status, UTF-8 on either side).
// Not a full grammar: enough to refuse what is not an address, such as Exim's Final-Recipient
// for a pipe ("rfc822;|/usr/bin/prog user@example.com").
const ADDRESS = /^(?:"[^"\\\r\n]{1,64}"|[^\s"@<>()[\]\\,;:]{1,64})@[^\s"@<>()[\]\\,;:]{1,255}$/;

const unrecognised = (reason: string): InboundReport => ({ kind: "unrecognised", reason });

type FieldGroup = Map<string, string[]>;

/**
 * RFC 3464 section 2.1: RFC 822-style field groups separated by blank lines. Folded lines
 * are unfolded (the fold and its indent become one space), names compared in lower case.
 * A field that repeats keeps every value (Original-Rcpt-To of ARF may). At most `maxGroups`
 * groups of at most MAX_FIELDS_PER_GROUP fields are read, each value cut at MAX_FIELD.
 */
function fieldGroups(text: string, maxGroups: number): FieldGroup[] {
  const groups: FieldGroup[] = [];
  for (const block of text.replace(/\r\n?/g, "\n").split(/\n[ \t]*\n/)) {
    if (groups.length >= maxGroups) break;
    const fields: FieldGroup = new Map();
    let count = 0;
    for (const line of block.replace(/\n[ \t]+/g, " ").split("\n")) {
      if (count >= MAX_FIELDS_PER_GROUP) break;
      const colon = line.indexOf(":");
      if (colon <= 0 || colon > 80) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      if (!/^[a-z0-9-]+$/.test(name)) continue;
      const values = fields.get(name) ?? [];
      values.push(line.slice(colon + 1).trimStart().slice(0, MAX_FIELD).trimEnd());
      fields.set(name, values);
      count++;
    }
    if (fields.size > 0) groups.push(fields);
  }
  return groups;
}

const first = (g: FieldGroup, name: string): string | undefined => g.get(name)?.[0];

/** "rfc822; Ann@Example.org" -> "Ann@Example.org"; undefined when what follows the type is not an address. */
function typedAddress(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  // RFC 3464 2.3.2: address-type ";" generic-address; the type is an atom (rfc822, utf-8 of RFC 6533).
  const typed = /^([A-Za-z0-9-]+)\s*;(.*)$/.exec(v);
  const a = (typed ? typed[2]! : v).trim().replace(/^<(.*)>$/, "$1");
  return ADDRESS.test(a) ? a : undefined;
}

/** "dns; mx.example.net" -> "mx.example.net" (RFC 3464 2.2.2: mta-name-type ";" mta-name). */
function mtaName(v: string | undefined): string | undefined {
  return v?.replace(/^[A-Za-z0-9-]+\s*;\s*/, "") || undefined;
}

/**
 * The recipient a group describes, or why RFC 3464 does not allow it. The reason is logged,
 * so it names the field, not its value (the bounce receiver logs no report content).
 */
function dsnRecipient(g: FieldGroup): DsnRecipient | string {
  const finalRecipient = typedAddress(first(g, "final-recipient"));
  // Values are compared without a trailing comment: "Status: 4.4.0 (other or undefined
  // network or routing status)" and "Action: Delayed" are both sent by real MTAs.
  const action = first(g, "action")?.toLowerCase().split(/[\s(]/)[0];
  const status = first(g, "status")?.split(/[\s(]/)[0];
  if (!finalRecipient) return "its Final-Recipient is not an address";
  if (!action || !ACTIONS.has(action)) return "its Action is not one of RFC 3464's five";
  if (!status || !STATUS.test(status)) return "its Status is not RFC 3463's class.subject.detail";
  return {
    finalRecipient,
    originalRecipient: typedAddress(first(g, "original-recipient")),
    action: action as DsnRecipient["action"],
    status,
    diagnosticCode: first(g, "diagnostic-code") || undefined,
    remoteMta: mtaName(first(g, "remote-mta")),
  };
}

interface ReportPart {
  contentType: string;
  content: Buffer;
}

/**
 * The Message-ID of the returned message (RFC 3464 section 2: its third part, the whole
 * message or only its headers), read from its header block.
 */
function originalMessageId(parts: ReportPart[]): string | null {
  for (const p of parts) {
    if (!["message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"].includes(p.contentType)) continue;
    const start = p.content.subarray(0, MAX_RETURNED_HEAD).toString("latin1");
    const end = start.search(/\r?\n\r?\n/);
    const m = /^message-id:[ \t]*(?:\r?\n[ \t]+)?(<[^>\s]{1,250}>)/im.exec(end >= 0 ? start.slice(0, end) : start);
    if (m) return m[1]!;
  }
  return null;
}

/**
 * Gmail (since 2023) can send a DSN whose message/delivery-status part is empty; its
 * X-Failed-Recipients header (also Exim's) still says, in a structured field, which
 * address failed for good. It is read only when the report part is empty (a part with
 * anything in it must say it in RFC 3464's fields) and only when it names exactly one
 * address: a bounce address names one recipient (VERP), and a list is not evidence about
 * any one of them. That address is failed with the generic permanent status 5.0.0
 * (RFC 3463): nothing says why (Gmail's sample is a sender's misconfiguration, not a bad
 * mailbox), so such a bounce never counts as an address failure and never suppresses the
 * address. The prose beside it is still never read.
 */
function failedFromHeader(header: string | undefined): DsnRecipient[] {
  if (!header || header.length > MAX_FIELD) return [];
  const addresses = header.split(",").map((a) => a.trim().replace(/^<(.*)>$/, "$1")).filter((a) => a !== "");
  if (addresses.length !== 1 || !ADDRESS.test(addresses[0]!)) return [];
  return [{
    finalRecipient: addresses[0]!,
    action: "failed",
    status: "5.0.0",
    diagnosticCode: "X-Failed-Recipients; the report's delivery-status part named no recipient",
  }];
}

function readDsn(parts: ReportPart[], failedHeader?: string): InboundReport {
  const part = parts.find((p) => p.contentType === "message/delivery-status" || p.contentType === "message/global-delivery-status");
  if (!part) return unrecognised("a delivery-status report without its message/delivery-status part");
  if (part.content.length > MAX_REPORT_PART) return unrecognised(`a delivery-status part larger than ${MAX_REPORT_PART} bytes`);
  // RFC 3464 2.1: the per-message fields come first, then one group per recipient. A group
  // is taken as a recipient's when it has Final-Recipient, so a DSN that leaves out the
  // per-message group or runs it into the first recipient's still names its recipients.
  const groups = fieldGroups(part.content.toString("utf8"), MAX_RECIPIENTS + 1);
  const perMessage = groups[0] ?? new Map<string, string[]>();
  // A group that breaks RFC 3464's syntax is left out; the others still count.
  const read = groups.filter((g) => g.has("final-recipient")).slice(0, MAX_RECIPIENTS).map(dsnRecipient);
  const recipients = read.filter((r): r is DsnRecipient => typeof r !== "string");
  if (part.content.toString("latin1").trim() === "") recipients.push(...failedFromHeader(failedHeader));
  if (recipients.length === 0) {
    const why = read.find((r): r is string => typeof r === "string") ?? "no group has a Final-Recipient";
    return unrecognised(`a delivery-status part without a recipient RFC 3464 allows (${why})`);
  }
  return {
    kind: "dsn",
    reportingMta: mtaName(first(perMessage, "reporting-mta")) ?? null,
    arrivalDate: first(perMessage, "arrival-date") || null,
    // RFC 3464 2.2.1: the ENVID the sender gave at MAIL FROM (RFC 3461), as sent.
    originalEnvelopeId: first(perMessage, "original-envelope-id") || null,
    recipients,
    originalMessageId: originalMessageId(parts),
  };
}

function readArf(parts: ReportPart[]): InboundReport {
  const part = parts.find((p) => p.contentType === "message/feedback-report");
  if (!part) return unrecognised("a feedback report without its message/feedback-report part");
  if (part.content.length > MAX_REPORT_PART) return unrecognised(`a feedback-report part larger than ${MAX_REPORT_PART} bytes`);
  // RFC 5965 3.1: one group of fields.
  const fields = fieldGroups(part.content.toString("utf8"), 1)[0];
  const feedbackType = fields ? first(fields, "feedback-type")?.toLowerCase() : undefined;
  if (!fields || !feedbackType || !/^[a-z0-9-]{1,40}$/.test(feedbackType)) return unrecognised("a feedback report without a Feedback-Type");
  return {
    kind: "arf",
    feedbackType,
    userAgent: first(fields, "user-agent") || null,
    originalMailFrom: typedAddress(first(fields, "original-mail-from")) ?? null,
    originalRcptTo: (fields.get("original-rcpt-to") ?? []).map(typedAddress).filter((a): a is string => a !== undefined),
    reportedDomain: first(fields, "reported-domain") || null,
    // Received-Date is the name drafts of ARF used; Yahoo's reports still carry it.
    arrivalDate: first(fields, "arrival-date") || first(fields, "received-date") || null,
    originalMessageId: originalMessageId(parts),
  };
}

/** Reads a report; anything that is not one (or is larger than `maxBytes`) is `unrecognised`. */
export async function parseReport(raw: Buffer, opts: { maxBytes?: number | undefined } = {}): Promise<InboundReport> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  if (raw.length > maxBytes) return unrecognised(`larger than ${maxBytes} bytes`);
  try {
    return await read(raw);
  } catch (err) {
    // Not expected (read() handles what mailparser rejects), but the promise is that hostile
    // input is a reason, never an exception.
    return unrecognised(`the parser failed (${String((err as Error)?.message).slice(0, 100)})`);
  }
}

async function read(raw: Buffer): Promise<InboundReport> {
  let mail: Awaited<ReturnType<typeof simpleParser>>;
  try {
    mail = await simpleParser(raw, {
      // The report part as an attachment rather than appended to the text.
      keepDeliveryStatus: true,
      // The returned message stays one attachment (its headers are read for the Message-ID)
      // instead of a MIME tree parsed for nothing.
      ignoreEmbedded: true,
      maxChildNodes: MAX_MIME_PARTS,
      checksumAlgo: false,
      skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true, maxHtmlLengthToParse: 0,
    });
  } catch (err) {
    return unrecognised(`not a MIME message mailparser reads (${String((err as Error)?.message).slice(0, 100)})`);
  }
  const ct = mail.headers.get("content-type") as { value?: string; params?: Record<string, string> } | undefined;
  if (ct?.value?.toLowerCase() !== "multipart/report") return unrecognised(`not a multipart/report (${String(ct?.value ?? "no content type").slice(0, 60)})`);
  const reportType = ct.params?.["report-type"]?.toLowerCase();
  // RFC 6522 section 3: the report is a part of the multipart/report itself (its second),
  // not one found deeper in the tree. mailparser numbers a top-level part "2", a nested "1.2".
  const parts: ReportPart[] = mail.attachments
    .filter((a) => typeof a.partId === "string" && /^\d+$/.test(a.partId))
    // A part cut off before its Content-Type has none (found by the property test).
    .map((a) => ({ contentType: String(a.contentType ?? "").toLowerCase(), content: a.content }));

  // RFC 6533's message/global-delivery-status is read under either report-type.
  const failedHeader = mail.headers.get("x-failed-recipients");
  if (reportType === "delivery-status" || reportType === "global-delivery-status") return readDsn(parts, typeof failedHeader === "string" ? failedHeader : undefined);
  if (reportType === "feedback-report") return readArf(parts);
  return unrecognised(`a report of type ${String(reportType ?? "none").slice(0, 40)}`);
}
