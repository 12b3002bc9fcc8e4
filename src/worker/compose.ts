// Builds the RFC 5322 message for delivery from what POST /send stored. Only the
// allow-listed fields reach nodemailer's composer, with its file and URL access
// disabled, so no stored value can make it read a path or fetch a URL.
import { randomBytes } from "node:crypto";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import type { Attachment } from "../domain/message.ts";

export interface StoredContent {
  messageIdHeader: string;
  createdAt: Date;
  from: { address: string; name: string | null };
  to: Array<{ address: string; name: string | null }>;
  cc: Array<{ address: string; name: string | null }>;
  replyTo: Array<{ address: string; name: string | null }>;
  subject: string;
  text: string | null;
  html: string | null;
  headers: Record<string, string>;
  attachments: Attachment[];
}

// The multipart boundaries of a message share a base that must be unique to it and absent
// from its content. Left to the composer, every MIME part draws random bytes of its own; a
// random prefix per process and a counter are as unique at a fraction of the cost.
const BOUNDARY_PREFIX = randomBytes(6).toString("hex");
let boundaries = 0;

const mb = (m: { address: string; name: string | null }) => (m.name ? { name: m.name, address: m.address } : m.address);

export function composeMessage(c: StoredContent): Promise<Buffer> {
  const composer = new MailComposer({
    from: mb(c.from),
    to: c.to.map(mb),
    ...(c.cc.length ? { cc: c.cc.map(mb) } : {}),
    ...(c.replyTo.length ? { replyTo: c.replyTo.map(mb) } : {}),
    subject: c.subject,
    ...(c.text !== null ? { text: c.text } : {}),
    ...(c.html !== null ? { html: c.html } : {}),
    // Stable across retries (RFC 5322 3.6.4): a receiver can drop a duplicate after a
    // connection lost after the final dot.
    messageId: c.messageIdHeader,
    date: c.createdAt,
    headers: c.headers,
    attachments: c.attachments.map((a) => ({
      filename: a.filename,
      content: a.content,
      encoding: "base64",
      contentType: a.contentType,
      ...(a.contentId ? { cid: a.contentId } : {}),
    })),
    baseBoundary: `${BOUNDARY_PREFIX}${(boundaries++).toString(36)}`,
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  return new Promise((resolve, reject) => {
    // keepBcc stays false: Bcc recipients get the message through the envelope only.
    composer.compile().build((err, message) => (err ? reject(err) : resolve(message)));
  });
}
