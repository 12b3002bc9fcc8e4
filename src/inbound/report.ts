// Reading what comes back to a bounce address (issue 13): a delivery status notification
// (RFC 3464: multipart/report; report-type=delivery-status, its message/delivery-status
// part, or message/global-delivery-status of RFC 6533) or a complaint from a feedback loop
// (ARF, RFC 5965: report-type=feedback-report, its message/feedback-report part). The MIME
// tree is mailparser's (nodemailer's author); the report parts are RFC 822-style field
// groups, read here. Anything else, or a report that does not say what RFC 3464 requires
// (Final-Recipient, Action, Status per recipient), is `unrecognised`, never an exception:
// this reads what anyone on the internet sends.
//
// Only the standard formats are read. Older plain-text bounces (some Exim and qmail
// installations) name the failed address in prose; guessing from prose would let a forged
// text decide a recipient's status, so they are logged and dropped.
import { simpleParser } from "mailparser";

export interface DsnRecipient {
  finalRecipient: string;
  originalRecipient?: string | undefined;
  action: "failed" | "delayed" | "delivered" | "relayed" | "expanded";
  /** RFC 3463 status, such as 5.1.1. */
  status: string;
  /** As sent, with its type: "smtp; 550 5.1.1 user unknown". */
  diagnosticCode?: string | undefined;
  remoteMta?: string | undefined;
}

export type InboundReport =
  | { kind: "dsn"; reportingMta: string | null; arrivalDate: string | null; recipients: DsnRecipient[]; originalMessageId: string | null }
  | {
    kind: "arf"; feedbackType: string; userAgent: string | null; originalMailFrom: string | null; originalRcptTo: string[];
    reportedDomain: string | null; arrivalDate: string | null; originalMessageId: string | null;
  }
  | { kind: "unrecognised"; reason: string };

const MAX_RECIPIENTS = 100;
const MAX_FIELD = 1000;
const ACTIONS = new Set(["failed", "delayed", "delivered", "relayed", "expanded"]);
const STATUS = /^([245])\.(\d{1,3})\.(\d{1,3})$/;

const unrecognised = (reason: string): InboundReport => ({ kind: "unrecognised", reason });

/**
 * RFC 822-style field groups separated by blank lines, folded lines unfolded, names lower
 * case. A field that repeats keeps every value (Original-Rcpt-To of ARF may).
 */
function fieldGroups(text: string): Array<Map<string, string[]>> {
  const groups: Array<Map<string, string[]>> = [];
  for (const block of text.replace(/\r\n/g, "\n").split(/\n[ \t]*\n/)) {
    const fields = new Map<string, string[]>();
    const lines = block.replace(/\n[ \t]+/g, " ").split("\n");
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      if (!/^[a-z0-9-]+$/.test(name)) continue;
      const value = line.slice(colon + 1).trim().slice(0, MAX_FIELD);
      fields.set(name, [...(fields.get(name) ?? []), value]);
    }
    if (fields.size > 0) groups.push(fields);
  }
  return groups;
}

const first = (g: Map<string, string[]>, name: string): string | undefined => g.get(name)?.[0];

/** "rfc822; Ann@Example.org" -> "Ann@Example.org" (RFC 3464 address-type; RFC 6533 utf-8 too). */
function typedAddress(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const semi = v.indexOf(";");
  const a = (semi >= 0 ? v.slice(semi + 1) : v).trim().replace(/^<|>$/g, "");
  return a.includes("@") ? a : undefined;
}

function dsnRecipient(g: Map<string, string[]>): DsnRecipient | null {
  const finalRecipient = typedAddress(first(g, "final-recipient"));
  const action = first(g, "action")?.toLowerCase().split(/\s/)[0];
  // Some MTAs follow the code with a comment: "5.1.1 (bad destination mailbox address)".
  const status = first(g, "status")?.split(/\s/)[0];
  if (!finalRecipient || !action || !ACTIONS.has(action) || !status || !STATUS.test(status)) return null;
  return {
    finalRecipient,
    originalRecipient: typedAddress(first(g, "original-recipient")),
    action: action as DsnRecipient["action"],
    status,
    diagnosticCode: first(g, "diagnostic-code"),
    remoteMta: first(g, "remote-mta"),
  };
}

/** The Message-ID of the returned message, from its headers (text/rfc822-headers) or the message itself. */
function originalMessageId(parts: Array<{ contentType: string; content: Buffer }>): string | null {
  for (const p of parts) {
    if (!["text/rfc822-headers", "message/rfc822", "message/global", "message/global-headers"].includes(p.contentType)) continue;
    const head = p.content.toString("latin1").split(/\r?\n\r?\n/)[0] ?? "";
    const m = /^message-id:\s*(<[^>\r\n]{1,250}>)/im.exec(head);
    if (m) return m[1]!;
  }
  return null;
}

/** Reads a report; anything that is not one (or is larger than `maxBytes`) is `unrecognised`. */
export async function parseReport(raw: Buffer, opts: { maxBytes?: number } = {}): Promise<InboundReport> {
  const maxBytes = opts.maxBytes ?? 10 * 1024 * 1024;
  if (raw.length > maxBytes) return unrecognised(`larger than ${maxBytes} bytes`);
  let mail: Awaited<ReturnType<typeof simpleParser>>;
  try {
    mail = await simpleParser(raw, {
      keepDeliveryStatus: true, skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true, maxHtmlLengthToParse: 0,
    });
  } catch (err) {
    return unrecognised(`not a MIME message (${(err as Error).message.slice(0, 100)})`);
  }
  const ct = mail.headers.get("content-type") as { value?: string; params?: Record<string, string> } | undefined;
  if (ct?.value?.toLowerCase() !== "multipart/report") return unrecognised(`not a multipart/report (${String(ct?.value ?? "no content type").slice(0, 60)})`);
  const reportType = ct.params?.["report-type"]?.toLowerCase();
  // A part cut off before its Content-Type has none (found by the property test).
  const parts = mail.attachments.map((a) => ({ contentType: String(a.contentType ?? "").toLowerCase(), content: a.content }));

  if (reportType === "delivery-status") {
    const part = parts.find((p) => p.contentType === "message/delivery-status" || p.contentType === "message/global-delivery-status");
    if (!part) return unrecognised("a delivery-status report without its message/delivery-status part");
    const [perMessage, ...perRecipient] = fieldGroups(part.content.toString("utf8"));
    const recipients = perRecipient.slice(0, MAX_RECIPIENTS).map(dsnRecipient).filter((r): r is DsnRecipient => r !== null);
    if (!perMessage || recipients.length === 0) return unrecognised("a delivery-status part without a recipient that has Final-Recipient, Action and Status");
    return {
      kind: "dsn",
      reportingMta: typedAddress(first(perMessage, "reporting-mta")) ?? first(perMessage, "reporting-mta")?.replace(/^dns;\s*/i, "") ?? null,
      arrivalDate: first(perMessage, "arrival-date") ?? null,
      recipients,
      originalMessageId: originalMessageId(parts),
    };
  }
  if (reportType === "feedback-report") {
    const part = parts.find((p) => p.contentType === "message/feedback-report");
    if (!part) return unrecognised("a feedback report without its message/feedback-report part");
    const fields = fieldGroups(part.content.toString("utf8"))[0];
    const feedbackType = fields ? first(fields, "feedback-type")?.toLowerCase() : undefined;
    if (!fields || !feedbackType || !/^[a-z0-9-]{1,40}$/.test(feedbackType)) return unrecognised("a feedback report without a Feedback-Type");
    return {
      kind: "arf",
      feedbackType,
      userAgent: first(fields, "user-agent") ?? null,
      originalMailFrom: typedAddress(first(fields, "original-mail-from")) ?? null,
      originalRcptTo: (fields.get("original-rcpt-to") ?? []).slice(0, MAX_RECIPIENTS).map(typedAddress).filter((a): a is string => a !== undefined),
      reportedDomain: first(fields, "reported-domain") ?? null,
      arrivalDate: first(fields, "arrival-date") ?? null,
      originalMessageId: originalMessageId(parts),
    };
  }
  return unrecognised(`a report of type ${String(reportType ?? "none").slice(0, 40)}`);
}
