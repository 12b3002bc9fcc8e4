// Reading reports that come back to a bounce address (src/inbound/report.ts): real DSNs from
// Postfix, Exim, Microsoft 365 and Gmail and a real feedback report from Yahoo give their
// recipient, action and status; plain-text bounces, broken reports and hostile MIME are
// `unrecognised`, never an exception, and the work on any input is bounded.
// test/fixtures/reports/README.md says where each sample comes from.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import fc from "fast-check";
import { parseReport, type DsnRecipient, type InboundReport } from "../../src/inbound/report.ts";
import { isAddressFailure } from "../../src/domain/suppression.ts";

const FIXTURES = new URL("../fixtures/reports/", import.meta.url);
const fixture = (name: string) => readFileSync(new URL(name, FIXTURES));
const allFixtures = readdirSync(FIXTURES).filter((f) => f.endsWith(".eml")).sort();

type Dsn = Extract<InboundReport, { kind: "dsn" }>;
type Arf = Extract<InboundReport, { kind: "arf" }>;

async function dsn(input: string | Buffer): Promise<Dsn> {
  const r = await parseReport(typeof input === "string" ? fixture(input) : input);
  assert.equal(r.kind, "dsn", JSON.stringify(r));
  return r as Dsn;
}

async function unrecognised(input: string | Buffer): Promise<string> {
  const r = await parseReport(typeof input === "string" ? fixture(input) : input);
  assert.equal(r.kind, "unrecognised", JSON.stringify(r));
  return (r as Extract<InboundReport, { kind: "unrecognised" }>).reason;
}

const brief = (r: DsnRecipient) => [r.finalRecipient, r.action, r.status];

/** A real sample with its text changed: for the cases no collected sample shows. */
const edited = (name: string, ...edits: Array<[string | RegExp, string]>) =>
  Buffer.from(edits.reduce((s, [from, to]) => s.replace(from, to), fixture(name).toString("utf8")));

test("Postfix: 550 5.1.1 for the recipient, both its addresses, the remote MTA and the returned message's Message-ID", async () => {
  const r = await dsn("postfix-user-unknown.eml");
  assert.equal(r.reportingMta, "p6.libsisimai.org");
  assert.equal(r.arrivalDate, "Thu, 29 Apr 2015 23:34:45 +0000 (UTC)");
  assert.deepEqual(r.recipients, [{
    finalRecipient: "userunknown@libsisimai.org",
    originalRecipient: "userunknown@libsisimai.org",
    action: "failed",
    status: "5.1.1",
    diagnosticCode: "smtp; 550 5.1.1 <userunknown@libsisimai.org>... User Unknown",
    remoteMta: "mx.libsisimai.org",
  }]);
  assert.equal(r.originalMessageId, "<20150429233445.BB8FFFFC16@p6.libsisimai.org>");
});

test("Postfix: one group per recipient, each with its own status", async () => {
  const r = await dsn("postfix-two-recipients.eml");
  assert.deepEqual(r.recipients.map(brief), [["kijitora@example.jp", "failed", "5.2.1"], ["noraneko@example.jp", "failed", "5.2.2"]]);
  assert.equal(r.recipients[1]!.diagnosticCode, "smtp; 550 5.2.2 <noraneko@example.jp>... Mailbox Full");
});

test("a DSN captured from Postfix 3.7.11 gives its recipient, 5.1.1 and the returned message's Message-ID", async () => {
  const r = await dsn("postfix-3.7-captured.eml");
  assert.equal(r.reportingMta, "mx1.example.net");
  assert.deepEqual(r.recipients.map(brief), [["alice@example.net", "failed", "5.1.1"]]);
  assert.match(r.recipients[0]!.diagnosticCode!, /^smtp; 550 5\.1\.1 /);
  assert.equal(r.originalMessageId, "<01a24595-502e-77d7-b82c-f2bc1b7921ad@shop.example>");
});

test("Exim: Action before Final-Recipient, its generic 5.0.0, and the receiver's folded reply unfolded", async () => {
  const r = await dsn("exim-rejected.eml");
  assert.equal(r.reportingMta, "example.co.jp");
  assert.equal(r.arrivalDate, null, "Exim sends no Arrival-Date");
  assert.deepEqual(r.recipients, [{
    finalRecipient: "kijitora@example.co.jp",
    originalRecipient: undefined,
    action: "failed",
    status: "5.0.0",
    diagnosticCode: "smtp; 550 Bad SPF records for [example.org:192.0.2.2], see http://spf.pobox.com/",
    remoteMta: "192.0.2.22",
  }]);
  assert.equal(r.originalMessageId, "<EEEEEEE-222222-00@example.co.jp>");
});

test("Exim's report for a pipe (Final-Recipient: rfc822;|/usr/bin/prog ...) names no address and is unrecognised", async () => {
  assert.match(await unrecognised("exim-pipe-recipient.eml"), /Final-Recipient is not an address/);
});

test("Microsoft 365: the report after a multipart/alternative notice; 5.1.10; a returned message without a Message-ID", async () => {
  const r = await dsn("microsoft365-recipient-not-found.eml");
  assert.equal(r.reportingMta, "NEKONYAAN0022.apcprd01.prod.exchangelabs.com");
  assert.deepEqual(r.recipients.map(brief), [["kijitora-nyaan@neko.kyoto.example.jp", "failed", "5.1.10"]]);
  assert.equal(r.recipients[0]!.diagnosticCode, "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup");
  assert.equal(r.originalMessageId, null);
});

test("Gmail: the report after a multipart/related notice; a diagnostic folded over four lines; a commented Remote-MTA", async () => {
  const r = await dsn("gmail-no-such-user.eml");
  assert.equal(r.reportingMta, "googlemail.com");
  assert.deepEqual(r.recipients.map(brief), [["libsisimai-2@googlegroups.com", "failed", "5.1.1"]]);
  const [x] = r.recipients;
  assert.match(x!.diagnosticCode!, /^smtp; 550-5\.1\.1 The email account that you tried to reach does not exist\. Please try 550-5\.1\.1 double-checking .* - gsmtp$/);
  assert.equal(x!.remoteMta, "gmr-smtp-in.l.google.com. (2607:f8b0:400e:c03::e, the server for the domain googlegroups.com.)");
  assert.equal(r.originalMessageId, "<144493c0-8548-4b2b-987f-ae719df82545@Spark>");
});

test("Gmail's delayed DSN says delayed, 4.4.1 and a diagnostic without a reply code", async () => {
  const r = await dsn("gmail-delayed.eml");
  assert.deepEqual(r.recipients.map(brief), [["sotoneko@nora.nyaan.jp", "delayed", "4.4.1"]]);
  assert.match(r.recipients[0]!.diagnosticCode!, /^smtp; The recipient server did not accept our requests to connect\. .* \[nora\.nyaan\.jp 192\.0\.2\.222: timed out\]$/);
});

test("names and values in any case, a Status with a comment, and the Message-ID from text/rfc822-headers", async () => {
  // Multipart/Report, Message/Delivery-Status, "Action: Delayed", "Status: 4.4.0 (other or undefined ...)".
  const r = await dsn("delayed-mixed-case.eml");
  assert.equal(r.reportingMta, "mx54.exmaple.com");
  assert.deepEqual(r.recipients.map(brief), [["kijitora@example.net", "delayed", "4.4.0"]]);
  assert.equal(r.originalMessageId, "<000000000000000@list.example.jp>");
});

test("message/global-delivery-status (RFC 6533) and its utf-8 address type are read like RFC 3464's", async () => {
  for (const reportType of ["delivery-status", "global-delivery-status"]) {
    const r = await dsn(edited("postfix-user-unknown.eml",
      ["report-type=delivery-status", `report-type=${reportType}`],
      ["Content-Type: message/delivery-status", "Content-Type: message/global-delivery-status"],
      ["Final-Recipient: rfc822; userunknown@libsisimai.org", "Final-Recipient: utf-8; pelé@libsisimai.org"]));
    assert.deepEqual(r.recipients.map(brief), [["pelé@libsisimai.org", "failed", "5.1.1"]], reportType);
  }
});

test("Original-Envelope-Id is given; a DSN without its per-message group still names its recipient", async () => {
  const withEnvid = await dsn(edited("postfix-user-unknown.eml", ["X-Postfix-Queue-ID: BB8FFFFC16", "Original-Envelope-Id: QQ314159"]));
  assert.equal(withEnvid.originalEnvelopeId, "QQ314159");
  assert.equal((await dsn("postfix-user-unknown.eml")).originalEnvelopeId, null);

  const noPerMessage = await dsn(edited("postfix-user-unknown.eml", [/Reporting-MTA:[^]*?\n\n/, ""]));
  assert.deepEqual(noPerMessage.recipients.map(brief), [["userunknown@libsisimai.org", "failed", "5.1.1"]]);
  assert.equal(noPerMessage.reportingMta, null);
});

test("a real feedback report from Yahoo: abuse, the recipient and sender it names, its Received-Date, the Message-ID", async () => {
  const r = await parseReport(fixture("arf-yahoo-abuse.eml"));
  assert.equal(r.kind, "arf", JSON.stringify(r));
  assert.deepEqual(r, {
    kind: "arf",
    feedbackType: "abuse",
    userAgent: "Yahoo!-Mail-Feedback/1.0",
    originalMailFrom: "shironeko@example.com",
    originalRcptTo: ["this-local-part-does-not-exist-on-yahoo@yahoo.com"],
    reportedDomain: "example.com",
    arrivalDate: "Thu, 29 Apr 2013 23:45:50 PST",
    // Its message/rfc822 part says Content-Disposition: inline; it is still read as the returned message.
    originalMessageId: "<000000000000000000000000.smtp@example.com>",
  } satisfies Arf);
});

test("an ARF complaint after RFC 5965's example: its type, the recipient and the sender it names", async () => {
  const r = await parseReport(fixture("arf-abuse-complaint.eml"));
  assert.equal(r.kind, "arf", JSON.stringify(r));
  const arf = r as Arf;
  assert.equal(arf.feedbackType, "abuse");
  assert.deepEqual(arf.originalRcptTo, ["frank@example.com"]);
  assert.equal(arf.originalMailFrom, "bounce+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.example");
  assert.equal(arf.reportedDomain, "shop.example");
  assert.equal(arf.originalMessageId, "<01a24595-6000-7000-8000-000000000005@shop.example>");
});

test("plain-text bounces (Exim 4.72, Gmail in 2014) are unrecognised: the address is in prose, not in a report", async () => {
  assert.equal(await unrecognised("exim-plain-text.eml"), "not a multipart/report (no content type)");
  assert.equal(await unrecognised("gmail-plain-text.eml"), "not a multipart/report (text/plain)");
});

test("a real Gmail DSN whose delivery-status part is empty: its X-Failed-Recipients is read as a failure of unknown cause (5.0.0)", async () => {
  const r = await parseReport(readFileSync(new URL("../fixtures/reports/gmail-empty-delivery-status.eml", import.meta.url)));
  assert.equal(r.kind, "dsn");
  assert.deepEqual(r.kind === "dsn" && r.recipients.map((x) => [x.finalRecipient, x.action, x.status]), [["neko-nyaan-cat-meeting@google-groups.example.com", "failed", "5.0.0"]]);
  assert.equal(isAddressFailure({ status: "bounced", replyCode: 550, enhancedCode: "5.0.0" }), false, "5.0.0 says nothing about the address: no suppression");
  // Without the header the same report names no one.
  const stripped = readFileSync(new URL("../fixtures/reports/gmail-empty-delivery-status.eml", import.meta.url), "latin1").replace(/^X-Failed-Recipients:.*\r?\n/m, "");
  assert.match(await unrecognised(Buffer.from(stripped, "latin1")), /no group has a Final-Recipient/);
});

test("X-Failed-Recipients counts only beside an empty delivery-status part, and only when it names exactly one address", async () => {
  const header = "X-Failed-Recipients: neko-nyaan-cat-meeting@google-groups.example.com";
  // A list names no one recipient: a bounce address names one.
  assert.match(await unrecognised(edited("gmail-empty-delivery-status.eml", [header, `${header}, other@google-groups.example.com`])), /no group has a Final-Recipient/);
  assert.match(await unrecognised(edited("gmail-empty-delivery-status.eml", [header, "X-Failed-Recipients: not an address"])), /no group has a Final-Recipient/);
  // A delivery-status part with something in it must say it in RFC 3464's fields.
  const garbage = edited("gmail-empty-delivery-status.eml", ["Content-Type: message/delivery-status\n", "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.google.com\nX-Whatever: 1\n"]);
  assert.match(garbage.toString("latin1"), /Reporting-MTA: dns; mx\.google\.com/, "the edit applied");
  assert.match(await unrecognised(garbage), /no group has a Final-Recipient/);
  // Angle brackets around the one address are fine.
  const bracketed = await dsn(edited("gmail-empty-delivery-status.eml", [header, "X-Failed-Recipients: <neko-nyaan-cat-meeting@google-groups.example.com>"]));
  assert.deepEqual(bracketed.recipients.map(brief), [["neko-nyaan-cat-meeting@google-groups.example.com", "failed", "5.0.0"]]);
});

test("hostile input is unrecognised, with the reason why", async () => {
  const expected: Record<string, RegExp> = {
    "hostile-not-a-report.eml": /^not a multipart\/report/,
    "hostile-garbage-delivery-status.eml": /no group has a Final-Recipient/,
    "hostile-bad-status.eml": /Status is not RFC 3463's/,
    "hostile-garbage-status.eml": /Action is not one of RFC 3464's five/,
    "hostile-nested-mime.eml": /without its message\/delivery-status part/,
    "hostile-deep-nesting.eml": /child nodes exceeded/,
  };
  assert.deepEqual(allFixtures.filter((f) => f.startsWith("hostile-")), Object.keys(expected).sort(), "every hostile fixture is checked here");
  for (const [name, reason] of Object.entries(expected)) assert.match(await unrecognised(name), reason, name);
  assert.deepEqual(await parseReport(Buffer.alloc(0)), { kind: "unrecognised", reason: "not a multipart/report (no content type)" });
});

test("each group is judged alone: a bad one is left out, the good ones stay", async () => {
  const r = await dsn(edited("postfix-two-recipients.eml", ["Status: 5.2.1", "Status: 5.2"]));
  assert.deepEqual(r.recipients.map(brief), [["noraneko@example.jp", "failed", "5.2.2"]]);
});

test("a delivery-status part below the multipart/report's own parts is not the report (RFC 6522 section 3)", async () => {
  const nested = edited("postfix-user-unknown.eml",
    ["Content-Description: Delivery report\nContent-Type: message/delivery-status\n",
      'Content-Type: multipart/mixed; boundary="inner"\n\n--inner\nContent-Type: message/delivery-status\n'],
    ["\n--BB8FFFFC16.1423222256/p6.libsisimai.org\nContent-Description: Undelivered Message", "\n--inner--\n\n--BB8FFFFC16.1423222256/p6.libsisimai.org\nContent-Description: Undelivered Message"]);
  assert.match(await unrecognised(nested), /without its message\/delivery-status part/);
});

test("every sample reads the same with CRLF line ends, as SMTP delivers it, as with LF", async () => {
  for (const name of allFixtures) {
    const lf = fixture(name).toString("latin1").replace(/\r\n/g, "\n");
    const crlf = lf.replace(/\n/g, "\r\n");
    assert.deepEqual(await parseReport(Buffer.from(crlf, "latin1")), await parseReport(Buffer.from(lf, "latin1")), name);
  }
});

/** A DSN of `groups` recipient groups, `extra` appended to each. */
function generatedDsn(groups: number, extra = ""): Buffer {
  const body = Array.from({ length: groups }, (_, i) => `Final-Recipient: rfc822; r${i}@example.net\r\nAction: failed\r\nStatus: 5.1.1${extra}\r\n`).join("\r\n");
  return Buffer.from([
    "MIME-Version: 1.0", 'Content-Type: multipart/report; report-type=delivery-status; boundary="b"', "",
    "--b", "Content-Type: message/delivery-status", "", "Reporting-MTA: dns; mx.example.net", "", body, "--b--", "",
  ].join("\r\n"));
}

test("work is bounded: 100 recipients at most, fields cut at 1,000 characters, a report part over 1 MiB refused", async () => {
  const many = await dsn(generatedDsn(150));
  assert.equal(many.recipients.length, 100);
  assert.equal(many.recipients[99]!.finalRecipient, "r99@example.net");

  const long = await dsn(generatedDsn(1, `\r\nDiagnostic-Code: smtp; 550 ${"x".repeat(5000)}`));
  assert.equal(long.recipients[0]!.diagnosticCode!.length, 1000);

  assert.match(await unrecognised(generatedDsn(12_000, `\r\nX-Padding: ${"x".repeat(80)}`)), /delivery-status part larger than 1048576 bytes/);
});

test("input over the size limit is refused before it is parsed; the default limit is 10 MiB", async () => {
  assert.deepEqual(await parseReport(fixture("postfix-user-unknown.eml"), { maxBytes: 100 }), { kind: "unrecognised", reason: "larger than 100 bytes" });
  assert.deepEqual(await parseReport(Buffer.alloc(10 * 1024 * 1024 + 1, "a")), { kind: "unrecognised", reason: "larger than 10485760 bytes" });
});

/** What any result must hold to, whatever the input. */
function assertWellFormed(r: InboundReport): void {
  const address = /^\S+@\S+$/;
  if (r.kind === "unrecognised") {
    assert.ok(r.reason.length > 0 && r.reason.length < 300, r.reason);
  } else if (r.kind === "dsn") {
    assert.ok(r.recipients.length >= 1 && r.recipients.length <= 100);
    for (const x of r.recipients) {
      assert.match(x.status, /^[245]\.\d{1,3}\.\d{1,3}$/);
      assert.ok(["failed", "delayed", "delivered", "relayed", "expanded"].includes(x.action), x.action);
      assert.match(x.finalRecipient, address);
      if (x.originalRecipient !== undefined) assert.match(x.originalRecipient, address);
      assert.ok((x.diagnosticCode?.length ?? 0) <= 1000);
    }
  } else {
    assert.equal(r.kind, "arf");
    assert.match(r.feedbackType, /^[a-z0-9-]{1,40}$/);
    for (const a of r.originalRcptTo) assert.match(a, address);
  }
}

test("property: random bytes and random damage to every sample never throw, and what they give holds to the RFCs' syntax", async () => {
  const samples = allFixtures.map((name) => fixture(name));
  const damaged = fc.constantFrom(...samples).chain((real) => fc.oneof(
    // Bytes overwritten.
    fc.array(fc.tuple(fc.nat(real.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 40 }).map((edits) => {
      const b = Buffer.from(real);
      for (const [at, byte] of edits) b[at] = byte;
      return b;
    }),
    // Cut off anywhere.
    fc.nat(real.length).map((n) => real.subarray(0, n)),
    // Lines dropped or repeated: boundaries, blank lines and fields go missing or double.
    fc.array(fc.tuple(fc.nat(), fc.boolean()), { minLength: 1, maxLength: 10 }).map((edits) => {
      const lines = real.toString("latin1").split("\n");
      for (const [i, repeat] of edits) lines.splice(i % lines.length, repeat ? 0 : 1, ...(repeat ? [lines[i % lines.length]!] : []));
      return Buffer.from(lines.join("\n"), "latin1");
    }),
  ));
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)), damaged), async (input) => {
      assertWellFormed(await parseReport(input));
    }),
    { numRuns: 500 },
  );
});
