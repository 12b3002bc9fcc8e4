// The message as it goes on the wire: Bcc never appears in the headers, the Message-ID
// and Date are the stored ones (stable across retries), custom X- headers and
// attachments come through, and nodemailer is never allowed to read a path or URL.
import { test } from "node:test";
import assert from "node:assert/strict";
import { composeMessage, type StoredContent } from "../../src/worker/compose.ts";

const base: StoredContent = {
  messageIdHeader: "<m1@shop.example>",
  createdAt: new Date("2026-11-29T10:00:00Z"),
  from: { address: "noreply@shop.example", name: "Shop" },
  to: [{ address: "alice@example.com", name: "Alice" }],
  cc: [{ address: "carol@example.org", name: null }],
  replyTo: [{ address: "help@shop.example", name: null }],
  subject: "Your receipt",
  text: "Thanks for your order.",
  html: "<p>Thanks</p>",
  headers: { "X-Order-Id": "4711" },
  attachments: [{ filename: "receipt.txt", contentType: "text/plain", contentId: null, content: Buffer.from("total 42").toString("base64") }],
};

const headerBlock = (raw: Buffer) => raw.toString("utf8").split("\r\n\r\n")[0]!;

test("headers: From, To, Cc, Reply-To, Subject, stored Message-ID and Date, custom X- header; never Bcc", async () => {
  const raw = await composeMessage(base);
  const h = headerBlock(raw);
  assert.match(h, /^From: Shop <noreply@shop\.example>$/m);
  assert.match(h, /^To: Alice <alice@example\.com>$/m);
  assert.match(h, /^Cc: carol@example\.org$/m);
  assert.match(h, /^Reply-To: help@shop\.example$/m);
  assert.match(h, /^Subject: Your receipt$/m);
  assert.match(h, /^Message-ID: <m1@shop\.example>$/m);
  assert.match(h, /^Date: Sun, 29 Nov 2026 10:00:00 \+0000$/m);
  assert.match(h, /^X-Order-Id: 4711$/im); // header names are case-insensitive; nodemailer writes X-Order-ID
  assert.doesNotMatch(h, /^Bcc:/im, "Bcc recipients travel in the envelope only");
  const again = await composeMessage(base);
  assert.match(headerBlock(again), /^Message-ID: <m1@shop\.example>$/m, "a retry carries the same Message-ID");
});

test("text, html and the attachment are all in the body", async () => {
  const raw = (await composeMessage(base)).toString("utf8");
  assert.match(raw, /Thanks for your order\./);
  assert.match(raw, /<p>Thanks<\/p>/);
  assert.match(raw, /filename=receipt\.txt/);
  assert.match(raw, new RegExp(Buffer.from("total 42").toString("base64")));
});

test("an attachment whose content looks like a path or URL is sent as its bytes, never read or fetched", async () => {
  for (const content of ["/etc/passwd", "file:///etc/passwd", "https://example.com/x"]) {
    const raw = await composeMessage({ ...base, attachments: [{ filename: "a.txt", contentType: "text/plain", contentId: null, content: Buffer.from(content).toString("base64") }] });
    assert.match(raw.toString("utf8"), new RegExp(Buffer.from(content).toString("base64").replace(/[+/=]/g, "\\$&")));
    assert.doesNotMatch(raw.toString("utf8"), /root:x:0:0/);
  }
});
