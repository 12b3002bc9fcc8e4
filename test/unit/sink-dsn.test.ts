// The DSN `npm run sink` sends back for a mailbox it plays as missing (scripts/sink-dsn.ts)
// is one sealpost's own bounce receiver reads (src/inbound/report.ts): an RFC 3464 failure
// for that recipient with Status 5.1.1, the receiver's reply in Diagnostic-Code, and the
// returned headers' Message-ID, so the README's walk-through shows the real path.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseReport } from "../../src/inbound/report.ts";
import { isAddressFailure } from "../../src/domain/suppression.ts";
import { sinkDsn } from "../../scripts/sink-dsn.ts";

const original = [
  "From: Shop <orders@shop.example>",
  "To: bounce-me@example.com",
  "Subject: Your receipt",
  "Message-ID: <01a24595-6000-7000-8000-000000000007@shop.example>",
  "MIME-Version: 1.0",
  "Content-Type: text/plain; charset=utf-8",
  "",
  "Thank you for your order.",
  "",
].join("\r\n");

test("the sink's DSN is a delivery-status report sealpost reads: failed, 5.1.1 for the recipient, the original Message-ID", async () => {
  const arrivedAt = new Date("2026-12-05T10:00:00Z");
  const raw = sinkDsn({ to: "bounce+aaaa@bounces.shop.example", recipient: "bounce-me@example.com", original, arrivedAt });
  const r = await parseReport(Buffer.from(raw));
  assert.equal(r.kind, "dsn", JSON.stringify(r));
  if (r.kind !== "dsn") return;
  assert.equal(r.reportingMta, "localhost");
  assert.equal(r.originalMessageId, "<01a24595-6000-7000-8000-000000000007@shop.example>");
  assert.equal(r.recipients.length, 1);
  const [rcpt] = r.recipients;
  assert.equal(rcpt!.finalRecipient, "bounce-me@example.com");
  assert.equal(rcpt!.originalRecipient, "bounce-me@example.com");
  assert.equal(rcpt!.action, "failed");
  assert.equal(rcpt!.status, "5.1.1");
  assert.match(rcpt!.diagnosticCode ?? "", /^smtp; 550 5\.1\.1 /);
  assert.ok(isAddressFailure({ status: "bounced", replyCode: 550, enhancedCode: rcpt!.status }), "a 5.1.1 suppresses the address");

  // The body of the original is not returned, only its headers; every line ends in CRLF.
  assert.doesNotMatch(raw, /Thank you for your order/);
  assert.doesNotMatch(raw, /[^\r]\n/);
  assert.match(raw, /^Arrival-Date: Sat, 05 Dec 2026 10:00:00 \+0000\r$/m);
});
