// The send request (SPEC section 2), its normalised form, and message/recipient
// statuses. Pure: no HTTP, no database.
import { z } from "zod";
import { CONTROL_CHARS, domainOf, parseMailbox, type Mailbox } from "./address.ts";
import { TLS_POLICIES, type TlsPolicy } from "./tls-policy.ts";

export const MAX_RECIPIENTS = 50;
export const MAX_REPLY_TO = 5;
export const MAX_ATTACHMENTS = 20;
export const MAX_HEADERS = 30;
export const MAX_TAGS = 10;
export const MAX_METADATA_KEYS = 20;
export const MAX_SCHEDULE_AHEAD_MS = 30 * 86_400_000;

const noControl = (what: string) => (v: string) => !CONTROL_CHARS.test(v) || `${what} must not contain control characters or line breaks`;
const line = (max: number, what: string) =>
  z.string().max(max).refine((v) => noControl(what)(v) === true, { message: `${what} must not contain control characters or line breaks` });

const MailboxInput = z
  .union([
    z.string().max(320),
    z.strictObject({ name: z.string().max(200).optional(), address: z.string().max(254) }),
  ])
  .superRefine((v, ctx) => {
    const r = parseMailbox(v);
    if (!r.ok) ctx.addIssue({ code: "custom", message: r.message });
  })
  .meta({ description: 'An address: "local@domain", "Name <local@domain>" or {name, address}.' });

const MailboxList = z.union([MailboxInput, z.array(MailboxInput).max(MAX_RECIPIENTS)]);

const HEADER_NAME = /^X-[A-Za-z0-9][A-Za-z0-9-]{0,76}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const CONTENT_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/i;
const CONTENT_ID = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]{1,200}$/;

export function base64DecodedLength(b64: string): number {
  const pad = b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0;
  return (b64.length / 4) * 3 - pad;
}

/** Strip directories and characters that mean something to file systems or headers. */
export function sanitizeFilename(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? "";
  // eslint-disable-next-line no-control-regex
  const cleaned = base.replace(/[\u0000-\u001f\u007f"<>:|?*]/g, "_").replace(/^\.+/, "").trim();
  return cleaned.slice(0, 255);
}

export const AttachmentInput = z.strictObject({
  filename: z
    .string()
    .min(1)
    .max(255)
    .refine((v) => !CONTROL_CHARS.test(v), { message: "filename must not contain control characters or line breaks" })
    .refine((v) => sanitizeFilename(v).length > 0, { message: "filename has no usable characters" }),
  content: z.string().min(1).regex(BASE64, "content must be standard base64"),
  content_type: z.string().regex(CONTENT_TYPE, "content_type must be type/subtype"),
  content_id: z.string().regex(CONTENT_ID, "content_id must be plain characters without spaces or angle brackets").optional(),
});

export const TAG = /^[A-Za-z0-9_.:-]{1,64}$/;

export const SendRequestSchema = z
  .strictObject({
    from: MailboxInput,
    to: MailboxList.optional(),
    cc: MailboxList.optional(),
    bcc: MailboxList.optional(),
    reply_to: z.union([MailboxInput, z.array(MailboxInput).max(MAX_REPLY_TO)]).optional(),
    subject: line(998, "subject").min(1),
    text: z.string().max(5_000_000).optional(),
    html: z.string().max(5_000_000).optional(),
    headers: z
      .record(
        z.string().regex(HEADER_NAME, "custom header names must start with X- and use letters, digits and hyphens"),
        line(998, "header value"),
      )
      .refine((h) => Object.keys(h).length <= MAX_HEADERS, { message: `at most ${MAX_HEADERS} headers` })
      .optional(),
    attachments: z.array(AttachmentInput).max(MAX_ATTACHMENTS).optional(),
    tags: z.array(z.string().regex(TAG, "tags are 1-64 of A-Z a-z 0-9 _ . : -")).max(MAX_TAGS).optional(),
    metadata: z
      .record(z.string().regex(/^[A-Za-z0-9_.-]{1,40}$/, "metadata keys are 1-40 of A-Z a-z 0-9 _ . -"), line(500, "metadata value"))
      .refine((m) => Object.keys(m).length <= MAX_METADATA_KEYS, { message: `at most ${MAX_METADATA_KEYS} metadata keys` })
      .optional(),
    tls: z.enum(TLS_POLICIES).optional(),
    send_at: z.iso.datetime({ offset: true }).optional(),
  })
  .meta({ id: "SendRequest" });

export type SendRequest = z.infer<typeof SendRequestSchema>;

export interface Attachment {
  filename: string;
  contentType: string;
  contentId: string | null;
  content: string; // base64, as received; decoded only when the message is built
}

export interface RecipientSpec {
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
  sendAt: Date | null;
}

export interface Limits {
  attachmentMaxBytes: number;
  attachmentsTotalMaxBytes: number;
}

export type Normalized = { ok: true; value: NewMessage } | { ok: false; errors: Array<{ path: string; message: string }> };

const asList = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** Cross-field rules and normalisation after the schema accepted the shape. */
export function normalizeSendRequest(req: SendRequest, limits: Limits, now: Date): Normalized {
  const errors: Array<{ path: string; message: string }> = [];
  const mb = (v: Parameters<typeof parseMailbox>[0]): Mailbox => {
    const r = parseMailbox(v);
    if (!r.ok) throw new Error("schema admitted an invalid mailbox"); // unreachable: the schema ran parseMailbox
    return r.value;
  };
  if (req.text === undefined && req.html === undefined) errors.push({ path: "text", message: "text or html is required" });

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
  if (recipients.length === 0) errors.push({ path: "to", message: "at least one recipient in to, cc or bcc is required" });
  if (total > MAX_RECIPIENTS) errors.push({ path: "to", message: `at most ${MAX_RECIPIENTS} recipients in to, cc and bcc together` });

  let totalBytes = 0;
  const attachments: Attachment[] = (req.attachments ?? []).map((a, i) => {
    const size = base64DecodedLength(a.content);
    totalBytes += size;
    if (size > limits.attachmentMaxBytes)
      errors.push({ path: `attachments.${i}.content`, message: `attachment is ${size} bytes; the limit is ${limits.attachmentMaxBytes}` });
    return { filename: sanitizeFilename(a.filename), contentType: a.content_type.toLowerCase(), contentId: a.content_id ?? null, content: a.content };
  });
  if (totalBytes > limits.attachmentsTotalMaxBytes)
    errors.push({ path: "attachments", message: `attachments total ${totalBytes} bytes; the limit is ${limits.attachmentsTotalMaxBytes}` });

  let sendAt: Date | null = null;
  if (req.send_at !== undefined) {
    sendAt = new Date(req.send_at);
    if (sendAt.getTime() - now.getTime() > MAX_SCHEDULE_AHEAD_MS)
      errors.push({ path: "send_at", message: "send_at must be at most 30 days ahead" });
    if (sendAt.getTime() <= now.getTime()) sendAt = null; // a time already passed means "now"
  }
  if (errors.length > 0) return { ok: false, errors };
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
      sendAt,
    },
  };
}

// ---- statuses ---------------------------------------------------------------

export const RECIPIENT_STATUSES = ["queued", "scheduled", "sending", "deferred", "delivered", "bounced", "failed", "cancelled"] as const;
export type RecipientStatus = (typeof RECIPIENT_STATUSES)[number];
export const MESSAGE_STATUSES = [
  "queued", "scheduled", "sending", "deferred", "delivered", "partially_delivered", "bounced", "failed", "cancelled",
] as const;
export type MessageStatus = (typeof MESSAGE_STATUSES)[number];

export const FINAL_RECIPIENT_STATUSES: ReadonlySet<RecipientStatus> = new Set(["delivered", "bounced", "failed", "cancelled"]);

/** A message's status is derived from its recipients'. */
export function deriveMessageStatus(statuses: RecipientStatus[]): MessageStatus {
  const has = (s: RecipientStatus) => statuses.includes(s);
  if (statuses.length === 0) return "queued";
  if (statuses.every((s) => s === "cancelled")) return "cancelled";
  if (has("sending")) return "sending";
  if (has("deferred")) return "deferred";
  if (has("queued")) return has("delivered") || has("bounced") || has("failed") ? "sending" : "queued";
  if (has("scheduled")) return "scheduled";
  const delivered = statuses.filter((s) => s === "delivered").length;
  if (delivered === statuses.length) return "delivered";
  if (delivered > 0) return "partially_delivered";
  return statuses.every((s) => s === "bounced" || s === "cancelled") ? "bounced" : "failed";
}

/** Messages can be cancelled only before any recipient has been attempted. */
export const CANCELLABLE_STATUSES: ReadonlySet<MessageStatus> = new Set(["queued", "scheduled"]);
