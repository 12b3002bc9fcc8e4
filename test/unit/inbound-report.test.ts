// Reading reports that come back to a bounce address (src/inbound/report.ts): each MTA's
// DSN format gives its recipient, action and status; a feedback report gives its type and
// the complained-about recipient; anything else is `unrecognised`, never an exception.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { parseReport, type InboundReport } from "../../src/inbound/report.ts";

const fixture = (name: string) => readFileSync(new URL(`../fixtures/reports/${name}`, import.meta.url));

async function dsn(name: string) {
  const r = await parseReport(fixture(name));
  assert.equal(r.kind, "dsn", `${name}: ${JSON.stringify(r)}`);
  return r as Extract<InboundReport, { kind: "dsn" }>;
}

test("Postfix: 5.1.1 for the recipient, the folded diagnostic unfolded, the returned message's Message-ID", async () => {
  const r = await dsn("postfix-user-unknown.eml");
  assert.equal(r.reportingMta, "mx1.example.net");
  assert.equal(r.recipients.length, 1);
  const [a] = r.recipients;
  assert.deepEqual([a!.finalRecipient, a!.originalRecipient, a!.action, a!.status], ["alice@example.net", "alice@example.net", "failed", "5.1.1"]);
  assert.equal(a!.diagnosticCode, "smtp; 550 5.1.1 <alice@example.net>: Recipient address rejected: User unknown in virtual mailbox table");
  assert.equal(a!.remoteMta, "mailstore.example.net");
  assert.equal(r.originalMessageId, "<01a24595-502e-77d7-b82c-f2bc1b7921ad@shop.example>");
});

test("a DSN captured from Postfix 3.7.11 gives its recipient, 5.1.1 and the returned message's Message-ID", async () => {
  const r = await dsn("postfix-3.7-captured.eml");
  assert.equal(r.reportingMta, "mx1.example.net");
  assert.deepEqual(r.recipients.map((x) => [x.finalRecipient, x.action, x.status]), [["alice@example.net", "failed", "5.1.1"]]);
  assert.match(r.recipients[0]!.diagnosticCode!, /^smtp; 550 5\.1\.1 /);
  assert.equal(r.originalMessageId, "<01a24595-502e-77d7-b82c-f2bc1b7921ad@shop.example>");
});

test("Exim: fields in its own order; the status it reports (5.0.0) and the receiver's reply in the diagnostic", async () => {
  const r = await dsn("exim-mailbox-unavailable.eml");
  assert.deepEqual(r.recipients.map((x) => [x.finalRecipient, x.action, x.status]), [["bob@example.org", "failed", "5.0.0"]]);
  assert.match(r.recipients[0]!.diagnosticCode!, /^smtp; 550 5\.2\.1 /);
  assert.equal(r.originalMessageId, "<01a24595-6000-7000-8000-000000000002@shop.example>");
});

test("Microsoft 365: the report beside a multipart/alternative notice; 5.1.10 without a space after the type", async () => {
  const r = await dsn("microsoft365-recipient-not-found.eml");
  assert.deepEqual(r.recipients.map((x) => [x.finalRecipient, x.action, x.status]), [["carol@contoso.com", "failed", "5.1.10"]]);
  assert.match(r.recipients[0]!.diagnosticCode!, /^smtp;550 5\.1\.10 RESOLVER\.ADR\.RecipientNotFound/);
  assert.equal(r.originalMessageId, "<01a24595-6000-7000-8000-000000000003@shop.example>");
});

test("Gmail: the report after a multipart/related notice; a multi-line diagnostic", async () => {
  const r = await dsn("gmail-no-such-user.eml");
  assert.deepEqual(r.recipients.map((x) => [x.finalRecipient, x.action, x.status]), [["dave.nonexistent@gmail.com", "failed", "5.1.1"]]);
  assert.match(r.recipients[0]!.diagnosticCode!, /^smtp; 550-5\.1\.1 The email account that you tried to reach does not exist\. .* - gsmtp$/);
  assert.equal(r.reportingMta, "googlemail.com");
});

test("a delayed DSN says delayed and a 4.x.x status", async () => {
  const r = await dsn("postfix-delayed.eml");
  assert.deepEqual(r.recipients.map((x) => [x.finalRecipient, x.action, x.status]), [["erin@example.net", "delayed", "4.4.1"]]);
});

test("an ARF complaint: its feedback type, the recipient and the sender it names", async () => {
  const r = await parseReport(fixture("arf-abuse-complaint.eml"));
  assert.equal(r.kind, "arf", JSON.stringify(r));
  const arf = r as Extract<InboundReport, { kind: "arf" }>;
  assert.equal(arf.feedbackType, "abuse");
  assert.deepEqual(arf.originalRcptTo, ["frank@example.com"]);
  assert.equal(arf.originalMailFrom, "bounce+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.example");
  assert.equal(arf.reportedDomain, "shop.example");
});

test("not a report, a report of nonsense, and a broken MIME tree are unrecognised", async () => {
  for (const name of ["hostile-not-a-report.eml", "hostile-garbage-status.eml", "hostile-nested-mime.eml"]) {
    const r = await parseReport(fixture(name));
    assert.equal(r.kind, "unrecognised", `${name}: ${JSON.stringify(r)}`);
  }
  assert.deepEqual(await parseReport(Buffer.alloc(0)), { kind: "unrecognised", reason: "not a multipart/report (no content type)" });
});

test("input over the size limit is refused before it is parsed", async () => {
  const r = await parseReport(fixture("postfix-user-unknown.eml"), { maxBytes: 100 });
  assert.deepEqual(r, { kind: "unrecognised", reason: "larger than 100 bytes" });
});

test("property: random bytes and random damage to a real DSN never throw, and what they give holds to RFC 3464's syntax", async () => {
  const real = fixture("postfix-user-unknown.eml");
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)),
        fc.array(fc.tuple(fc.nat(real.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 40 }).map((edits) => {
          const b = Buffer.from(real);
          for (const [at, byte] of edits) b[at] = byte;
          return b;
        }),
        fc.nat(real.length).map((n) => real.subarray(0, n)),
      ),
      async (input) => {
        const r = await parseReport(input);
        if (r.kind !== "dsn") return;
        assert.ok(r.recipients.length >= 1 && r.recipients.length <= 100);
        for (const x of r.recipients) {
          assert.match(x.status, /^[245]\.\d{1,3}\.\d{1,3}$/);
          assert.ok(["failed", "delayed", "delivered", "relayed", "expanded"].includes(x.action), x.action);
          assert.ok(x.finalRecipient.includes("@"));
        }
      },
    ),
    { numRuns: 300 },
  );
});
