// The send request (openapi.yaml, POST /send), its normalised form, and message/recipient
// statuses. Pure: no HTTP, no database.
//
// Each field's description says what is expected in words a new user understands: the
// same text is the field's documentation in openapi.yaml and the "expected" part of a
// validation error (src/api/field-errors.ts), so the two cannot disagree. Messages given
// to checks below are written to follow the field's path ("subject: must not ...").
import { z } from "zod";
import { CONTROL_CHARS, domainOf, parseMailbox, type Mailbox } from "./address.ts";
import { base64Size, checkBase64 } from "./base64.ts";
import type { FieldError } from "./errors.ts";
import { TLS_POLICIES, type TlsPolicy } from "./tls-policy.ts";

const MAX_RECIPIENTS = 50;
const MAX_REPLY_TO = 5;
const MAX_ATTACHMENTS = 20;
const MAX_HEADERS = 30;
const MAX_TAGS = 10;
const MAX_METADATA_KEYS = 20;
const MAX_SCHEDULE_AHEAD_MS = 30 * 86_400_000;
const MAX_SUBJECT = 998; // RFC 5322 section 2.1.1: a line is at most 998 characters
const MAX_BODY_CHARS = 5_000_000;

const NO_BREAKS = "must not contain line breaks or other control characters";
const line = (max: number) => z.string().max(max).refine((v) => !CONTROL_CHARS.test(v), { message: NO_BREAKS });

const ADDRESS_EXAMPLE = '"Shop <noreply@shop.example>" or {"name": "Shop", "address": "noreply@shop.example"}';

/** One mailbox; `several` is what to say when a string holds a list of addresses. */
const mailbox = (several: (addresses: string[]) => string, description: string) =>
  z
    .union([
      z.string().max(320),
      z.strictObject({
        name: z.string().max(200).meta({ description: 'The display name, such as "Shop"' }).optional(),
        address: z.string().max(254).meta({ description: 'The address alone, such as "noreply@shop.example"' }),
      }),
    ])
    .superRefine((v, ctx) => {
      const r = parseMailbox(v);
      if (!r.ok) ctx.addIssue({ code: "custom", message: r.list ? several(r.list) : r.message });
    })
    .meta({ description });

const asArray = (addresses: string[]) => `[${addresses.map((a) => JSON.stringify(a)).join(", ")}]`;
const RecipientInput = mailbox(
  (list) => `one address per string; for several recipients use an array with one address per item: ${asArray(list)}`,
  `An address such as ${ADDRESS_EXAMPLE}`,
);
const SenderInput = mailbox(() => `one sender address only, such as ${ADDRESS_EXAMPLE}`, `An address such as ${ADDRESS_EXAMPLE}`);
const ReplyToInput = mailbox(
  (list) => `one address per string; for several reply-to addresses use an array: ${asArray(list)}`,
  `An address such as ${ADDRESS_EXAMPLE}`,
);

const recipientList = (kind: string) =>
  z
    .union([RecipientInput, z.array(RecipientInput).max(MAX_RECIPIENTS, { error: `at most ${MAX_RECIPIENTS} recipients in to, cc and bcc together` })])
    .meta({
      description:
        `One address or an array of addresses (${kind}; at most ${MAX_RECIPIENTS} recipients in to, cc and bcc together), ` +
        'such as "alice@example.com" or ["alice@example.com", "Bob <bob@example.com>"]',
    });

// Custom X- headers, and TLS-Required (RFC 8689), whose only value is "No".
const HEADER_NAME = /^(?:X-[A-Za-z0-9][A-Za-z0-9-]{0,76}|TLS-Required)$/;
const CONTENT_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/i;
const CONTENT_ID = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]{1,200}$/;

/** Strip directories and characters that mean something to file systems or headers. */
function sanitizeFilename(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? "";
  // eslint-disable-next-line no-control-regex
  const cleaned = base.replace(/[\u0000-\u001f\u007f"<>:|?*]/g, "_").replace(/^\.+/, "").trim();
  return cleaned.slice(0, 255);
}

const AttachmentInput = z
  .strictObject({
    filename: z
      .string()
      .min(1)
      .max(255)
      .refine((v) => !CONTROL_CHARS.test(v), { message: NO_BREAKS })
      .refine((v) => v.length === 0 || sanitizeFilename(v).length > 0, { message: 'has no usable characters once directories are removed; give a name such as "receipt.pdf"' })
      .meta({ description: 'The file name shown to the recipient, such as "receipt.pdf" (1-255 characters; directories are removed)' }),
    // The size limits are the server's (ATTACHMENT_MAX_BYTES, ATTACHMENTS_TOTAL_MAX_BYTES)
    // and are checked after the schema, in normalizeSendRequest, to answer 413.
    content: z
      .string()
      .min(1)
      .superRefine((v, ctx) => {
        if (v.length === 0) return; // min(1) has said it
        const r = checkBase64(v);
        if (!r.ok) ctx.addIssue({ code: "custom", message: r.message });
      })
      .meta({
        description:
          "The file's bytes in standard base64 (RFC 4648 section 4: A-Z a-z 0-9 + / with = padding), on one line without spaces or line breaks",
      }),
    content_type: z
      .string()
      .regex(CONTENT_TYPE, 'must be a media type such as "application/pdf" or "image/png", without parameters or spaces')
      .meta({ description: 'The media type, such as "application/pdf" or "image/png", without parameters' }),
    content_id: z
      .string()
      .regex(CONTENT_ID, 'must be 1-200 plain characters without spaces or angle brackets, such as "logo@shop.example"')
      .optional()
      .meta({ description: 'Makes the attachment inline: the html refers to it as "cid:" followed by this id, such as "logo@shop.example"' }),
  })
  .meta({ description: 'A file: {"filename": "receipt.pdf", "content": "<base64>", "content_type": "application/pdf"}' });

export const MESSAGE_PRIORITIES = ["normal", "high"] as const;
export type MessagePriority = (typeof MESSAGE_PRIORITIES)[number];

export const TAG = /^[A-Za-z0-9_.:-]{1,64}$/;
const TAG_TEXT = "1-64 characters from A-Z a-z 0-9 _ . : -";

export const SendRequestSchema = z
  .strictObject({
    from: SenderInput,
    to: recipientList("the main recipients").optional(),
    cc: recipientList("copied recipients").optional(),
    bcc: recipientList("blind-copied recipients, never shown in the headers").optional(),
    reply_to: z
      .union([ReplyToInput, z.array(ReplyToInput).max(MAX_REPLY_TO, { error: `at most ${MAX_REPLY_TO} reply-to addresses` })])
      .meta({ description: `One address or an array of at most ${MAX_REPLY_TO}, where replies go instead of from` })
      .optional(),
    subject: line(MAX_SUBJECT).min(1).meta({ description: `A string of 1 to ${MAX_SUBJECT} characters without line breaks` }),
    text: z
      .string()
      .max(MAX_BODY_CHARS)
      .meta({ description: `The plain-text body, a string of at most ${MAX_BODY_CHARS} characters; text, html or both are required` })
      .optional(),
    html: z
      .string()
      .max(MAX_BODY_CHARS)
      .meta({ description: `The HTML body, a string of at most ${MAX_BODY_CHARS} characters; text, html or both are required` })
      .optional(),
    headers: z
      .record(
        z.string().regex(HEADER_NAME, 'is not a custom header name: names start with X- and use letters, digits and hyphens, such as X-Order-Id (or are "TLS-Required")'),
        line(998),
      )
      .refine((h) => Object.keys(h).length <= MAX_HEADERS, { message: `at most ${MAX_HEADERS} headers` })
      .superRefine((h, ctx) => {
        const v = h["TLS-Required"];
        if (v !== undefined && v !== "No") ctx.addIssue({ code: "custom", path: ["TLS-Required"], message: 'TLS-Required takes only the value "No" (RFC 8689); to require TLS, send "tls": "required"' });
      })
      .meta({
        description:
          `Custom headers as an object of at most ${MAX_HEADERS}, such as {"X-Order-Id": "4711"}: names start with X-, values are strings without line breaks. ` +
          '"TLS-Required": "No" (RFC 8689) asks that the recipient domain\'s published TLS policies (MTA-STS) not hold the message back; the server\'s, the key\'s and the message\'s own "required" still apply',
      })
      .optional(),
    attachments: z
      .array(AttachmentInput)
      .max(MAX_ATTACHMENTS, { error: `at most ${MAX_ATTACHMENTS} attachments` })
      .meta({ description: `An array of at most ${MAX_ATTACHMENTS} files, each {"filename", "content" (base64), "content_type", "content_id" (optional)}` })
      .optional(),
    tags: z
      .array(z.string().regex(TAG, `must be ${TAG_TEXT}`))
      .max(MAX_TAGS, { error: `at most ${MAX_TAGS} tags` })
      .meta({ description: `An array of at most ${MAX_TAGS} tags, each ${TAG_TEXT}, such as ["receipt"]` })
      .optional(),
    metadata: z
      .record(z.string().regex(/^[A-Za-z0-9_.-]{1,40}$/, "is not a valid metadata key: keys are 1-40 characters from A-Z a-z 0-9 _ . -"), line(500))
      .refine((m) => Object.keys(m).length <= MAX_METADATA_KEYS, { message: `at most ${MAX_METADATA_KEYS} metadata keys` })
      .meta({
        description: `Your own data as an object of at most ${MAX_METADATA_KEYS} string values, such as {"order": "4711"}; keys are 1-40 characters from A-Z a-z 0-9 _ . -`,
      })
      .optional(),
    tls: z.enum(TLS_POLICIES).meta({ description: '"opportunistic" or "required": the STARTTLS policy for this message (the strictest setting wins)' }).optional(),
    priority: z
      .enum(MESSAGE_PRIORITIES)
      .meta({
        description:
          '"normal" (the default) or "high", for password resets and one-time codes: a high message is sent before the normal ones waiting under the same API key. It does not overtake other keys\' mail: keys take turns whatever their priorities',
      })
      .optional(),
    send_at: z.iso
      .datetime({ offset: true, error: 'must be an ISO 8601 time with a time zone, such as "2030-01-01T09:00:00Z"' })
      .meta({ description: 'When to send: an ISO 8601 time with a time zone, such as "2030-01-01T09:00:00Z", at most 30 days ahead' })
      .optional(),
  })
  .meta({ id: "SendRequest" });

export type SendRequest = z.infer<typeof SendRequestSchema>;

export interface Attachment {
  filename: string;
  contentType: string;
  contentId: string | null;
  content: string; // base64, as received; decoded only when the message is built
}

interface RecipientSpec {
  kind: "to" | "cc" | "bcc";
  address: string;
  name: string | null;
  domain: string;
}

export interface NewMessage {
  from: Mailbox;
  recipients: RecipientSpec[];
  replyTo: Mailbox[];
  subject: string;
  text: string | null;
  html: string | null;
  headers: Record<string, string>;
  attachments: Attachment[];
  tags: string[];
  metadata: Record<string, string> | null;
  tls: TlsPolicy | null;
  priority: MessagePriority;
  sendAt: Date | null;
}

export interface Limits {
  attachmentMaxBytes: number;
  attachmentsTotalMaxBytes: number;
}

/**
 * `errors` name fields by JSON path (`to[1]`, `attachments[0].content`); `tooLarge`: some
 * attachment is over a size limit (413), and the size problems come first.
 */
export type Normalized = { ok: true; value: NewMessage } | { ok: false; tooLarge: boolean; errors: FieldError[] };

const asList = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** "5242880 bytes (5 MiB)": the exact figure, and one a person reads at a glance. */
export function formatBytes(n: number): string {
  const round = (x: number) => String(Math.round(x * 100) / 100);
  if (n >= 1024 * 1024) return `${n} bytes (${round(n / (1024 * 1024))} MiB)`;
  if (n >= 1024) return `${n} bytes (${round(n / 1024)} KiB)`;
  return `${n} bytes`;
}

/** Cross-field rules and normalisation after the schema accepted the shape. */
export function normalizeSendRequest(req: SendRequest, limits: Limits, now: Date): Normalized {
  const errors: FieldError[] = [];
  const tooLarge: FieldError[] = [];
  const mb = (v: Parameters<typeof parseMailbox>[0]): Mailbox => {
    const r = parseMailbox(v);
    if (!r.ok) throw new Error("schema admitted an invalid mailbox"); // unreachable: the schema ran parseMailbox
    return r.value;
  };
  if (req.text === undefined && req.html === undefined)
    errors.push({ path: "text", message: "text or html is required: send the plain-text body as text, the HTML body as html, or both" });

  const recipients: RecipientSpec[] = [];
  const seen = new Set<string>();
  for (const kind of ["to", "cc", "bcc"] as const) {
    for (const item of asList(req[kind])) {
      const m = mb(item);
      const key = m.address.toLowerCase();
      if (seen.has(key)) continue; // one copy per address, like every MTA's recipient list
      seen.add(key);
      recipients.push({ kind, address: m.address, name: m.name, domain: domainOf(m.address) });
    }
  }
  const total = asList(req.to).length + asList(req.cc).length + asList(req.bcc).length;
  if (recipients.length === 0)
    errors.push({ path: "to", message: 'required: at least one recipient in to, cc or bcc, such as "alice@example.com"' });
  if (total > MAX_RECIPIENTS)
    errors.push({ path: "to", message: `at most ${MAX_RECIPIENTS} recipients in to, cc and bcc together; this message has ${total}` });

  // The schema checked every content is canonical base64, so its decoded size follows
  // from its length without decoding it.
  let totalBytes = 0;
  const attachments: Attachment[] = (req.attachments ?? []).map((a, i) => {
    const size = base64Size(a.content);
    totalBytes += size;
    if (size > limits.attachmentMaxBytes)
      tooLarge.push({
        path: `attachments[${i}].content`,
        message: `the file is ${formatBytes(size)} once decoded; the limit for one attachment is ${formatBytes(limits.attachmentMaxBytes)}`,
      });
    return { filename: sanitizeFilename(a.filename), contentType: a.content_type.toLowerCase(), contentId: a.content_id ?? null, content: a.content };
  });
  if (totalBytes > limits.attachmentsTotalMaxBytes)
    tooLarge.push({
      path: "attachments",
      message: `the files total ${formatBytes(totalBytes)} once decoded; the limit for all attachments of a message together is ${formatBytes(limits.attachmentsTotalMaxBytes)}`,
    });

  let sendAt: Date | null = null;
  if (req.send_at !== undefined) {
    sendAt = new Date(req.send_at);
    if (sendAt.getTime() - now.getTime() > MAX_SCHEDULE_AHEAD_MS)
      errors.push({ path: "send_at", message: "must be at most 30 days ahead" });
    if (sendAt.getTime() <= now.getTime()) sendAt = null; // a time already passed means "now"
  }
  if (tooLarge.length > 0 || errors.length > 0) return { ok: false, tooLarge: tooLarge.length > 0, errors: [...tooLarge, ...errors] };
  return {
    ok: true,
    value: {
      from: mb(req.from),
      recipients,
      replyTo: asList(req.reply_to).map(mb),
      subject: req.subject,
      text: req.text ?? null,
      html: req.html ?? null,
      headers: req.headers ?? {},
      attachments,
      tags: [...new Set(req.tags ?? [])],
      metadata: req.metadata ?? null,
      tls: req.tls ?? null,
      priority: req.priority ?? "normal",
      sendAt,
    },
  };
}

// ---- statuses ---------------------------------------------------------------

export const RECIPIENT_STATUSES = ["queued", "scheduled", "sending", "deferred", "delivered", "bounced", "failed", "cancelled", "suppressed"] as const;
export type RecipientStatus = (typeof RECIPIENT_STATUSES)[number];
export const MESSAGE_STATUSES = [
  "queued", "scheduled", "sending", "deferred", "delivered", "partially_delivered", "bounced", "failed", "cancelled", "suppressed",
] as const;
export type MessageStatus = (typeof MESSAGE_STATUSES)[number];

// suppressed: on the sender domain's suppression list when the message was accepted, so never attempted.
export const FINAL_RECIPIENT_STATUSES: ReadonlySet<RecipientStatus> = new Set(["delivered", "bounced", "failed", "cancelled", "suppressed"]);

/** A message's status is derived from its recipients'. */
export function deriveMessageStatus(statuses: RecipientStatus[]): MessageStatus {
  const has = (s: RecipientStatus) => statuses.includes(s);
  if (statuses.length === 0) return "queued";
  if (statuses.every((s) => s === "cancelled")) return "cancelled";
  if (statuses.every((s) => s === "suppressed")) return "suppressed";
  if (has("sending")) return "sending";
  if (has("deferred")) return "deferred";
  if (has("queued")) return has("delivered") || has("bounced") || has("failed") ? "sending" : "queued";
  if (has("scheduled")) return "scheduled";
  const delivered = statuses.filter((s) => s === "delivered").length;
  if (delivered === statuses.length) return "delivered";
  if (delivered > 0) return "partially_delivered";
  return statuses.every((s) => s === "bounced" || s === "cancelled" || s === "suppressed") ? "bounced" : "failed";
}

/** Statuses of a recipient (or message) waiting for its next attempt. */
const WAITING: ReadonlySet<string> = new Set(["queued", "scheduled", "deferred"]);

/**
 * `sending` is never written by a claim: a waiting recipient whose delivery a worker holds
 * a lease on is being sent, and so is a waiting message with such a delivery.
 */
export function withLease<S extends string>(status: S, leased: boolean): S | "sending" {
  return leased && WAITING.has(status) ? "sending" : status;
}

/** Messages can be cancelled only before any recipient has been attempted. */
export const CANCELLABLE_STATUSES: ReadonlySet<MessageStatus> = new Set(["queued", "scheduled"]);
