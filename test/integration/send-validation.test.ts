// Hostile inputs for POST /send. Each case asserts the status, the problem code, the
// JSON path of the field at fault, and that nothing reached the database: a refused
// request must leave no message, no recipient, no queue row and no idempotency record
// behind. The common mistakes of a new user are checked for wording too.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { ErrorCode } from "../../src/domain/errors.ts";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { assertProblem } from "../helpers/route-security.ts";
import type { FieldError } from "../../src/domain/errors.ts";

const ATTACHMENT_MAX = 1000;
const BODY_LIMIT = 64 * 1024;

let t: TestApp;
let key: string;
let shopOnlyKey: string;
before(async () => {
  t = await startTestApp({ ATTACHMENT_MAX_BYTES: String(ATTACHMENT_MAX), BODY_LIMIT_BYTES: String(BODY_LIMIT) });
  key = (await t.createKey({ name: "validation" })).key;
  shopOnlyKey = (await t.createKey({ name: "shop only", domains: ["shop.example"] })).key;
});
after(() => t.close());

interface RowCounts { messages: number; recipients: number; deliveries: number; idempotency: number }

async function rowCounts(): Promise<RowCounts> {
  const rows = await t.tdb.db.prisma.$queryRawUnsafe<RowCounts[]>(
    `SELECT (SELECT count(*) FROM messages)::int AS messages, (SELECT count(*) FROM recipients)::int AS recipients,
            (SELECT count(*) FROM deliveries)::int AS deliveries, (SELECT count(*) FROM idempotency_records)::int AS idempotency`);
  return rows[0]!;
}

// zod's own wording, which must never reach a user: it names neither the field nor what to send.
const ZOD_WORDING = /Invalid input|Invalid option|expected \w+, received|Too (big|small)|Unrecognized key|Invalid key in record|Invalid ISO/;
// `to`, `to[1]`, `attachments[0].content`, `headers["X-Order"]`, `(body)` for the body itself,
// or the name of a request header such as `Idempotency-Key`.
const JSON_PATH = /^(\(body\)|[A-Z][A-Za-z-]*|([A-Za-z_]\w*|\["(?:[^"\\]|\\.)*"\])(\.[A-Za-z_]\w*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])*)$/;

/** Every entry names its field as a JSON path and says what is wrong in words, and the detail sums them up. */
function assertPlainWords(problem: { detail: string; errors: FieldError[] }): void {
  for (const e of problem.errors) {
    assert.match(e.path, JSON_PATH, `a JSON path: ${JSON.stringify(e)}`);
    assert.doesNotMatch(e.message, ZOD_WORDING, `plain words: ${JSON.stringify(e)}`);
    assert.ok(e.message.length >= 10, `a sentence, not a code: ${JSON.stringify(e)}`);
  }
  assert.doesNotMatch(problem.detail, ZOD_WORDING);
  assert.doesNotMatch(problem.detail, /^the request (body )?is not valid$/, "the detail says what is wrong");
}

const b64 = (bytes: number) => Buffer.alloc(bytes, 0x41).toString("base64");
const attachment = (over: Record<string, unknown> = {}) => ({ filename: "receipt.pdf", content: b64(10), content_type: "application/pdf", ...over });
const longLocal = "a".repeat(65);
// 64 + 1 + 190 = 255 characters: every part is legal, the whole is one over RFC 5321's 254.
const longAddress = `${"a".repeat(64)}@${["b".repeat(63), "c".repeat(63), "d".repeat(62)].join(".")}.example`.slice(0, 255);
const recipients = (n: number, domain = "example.com") => Array.from({ length: n }, (_, i) => `user${i}@${domain}`);

interface Case {
  name: string;
  status: number;
  code: ErrorCode;
  body?: unknown; // sent as JSON
  raw?: { payload: string; contentType?: string };
  key?: () => string;
  idempotencyKey?: string;
  /** The JSON path that errors[] must name. */
  path?: string;
  /** What the message for that path must say. */
  says?: RegExp;
  /** What the problem's detail must say. */
  detail?: RegExp;
}

// Header injection (RFC 5322 section 2.2: a header field ends at CRLF; bare CR, LF, NUL
// and Unicode line separators are where parsers disagree). One case per field that
// becomes a header.
const BREAKS: Array<[string, string]> = [["CRLF", "\r\nBcc: eve@evil.example"], ["CR", "\rBcc: eve@evil.example"], ["LF", "\nBcc: eve@evil.example"], ["NUL", "\u0000"], ["U+2028", "\u2028Bcc: eve@evil.example"]];
const injection: Case[] = [
  ...BREAKS.map(([n, s]): Case => ({ name: `subject with ${n}`, body: validSend({ subject: `Hello${s}` }), status: 422, code: "invalid_request", path: "subject", says: /must not contain line breaks/ })),
  { name: "from string with CRLF after the address", body: validSend({ from: "Shop <noreply@shop.example>\r\nBcc: eve@evil.example" }), status: 422, code: "invalid_request", path: "from" },
  { name: "from string with LF in the display name", body: validSend({ from: "Shop\nBcc: eve@evil.example <noreply@shop.example>" }), status: 422, code: "invalid_request", path: "from" },
  { name: "from object name with CRLF", body: validSend({ from: { name: "Shop\r\nBcc: eve@evil.example", address: "noreply@shop.example" } }), status: 422, code: "invalid_request", path: "from" },
  { name: "from object name with U+2028", body: validSend({ from: { name: "Shop\u2028Bcc: eve@evil.example", address: "noreply@shop.example" } }), status: 422, code: "invalid_request", path: "from" },
  { name: "from object address with CR", body: validSend({ from: { name: "Shop", address: "noreply@shop.example\r" } }), status: 422, code: "invalid_request", path: "from" },
  { name: "to with LF", body: validSend({ to: "alice@example.com\nBcc: eve@evil.example" }), status: 422, code: "invalid_request", path: "to" },
  { name: "cc with NUL", body: validSend({ cc: ["carol@example.com\u0000"] }), status: 422, code: "invalid_request", path: "cc[0]" },
  { name: "bcc with U+2028", body: validSend({ bcc: "dave@example.com\u2028" }), status: 422, code: "invalid_request", path: "bcc" },
  { name: "reply_to with CRLF", body: validSend({ reply_to: "help@shop.example\r\nBcc: eve@evil.example" }), status: 422, code: "invalid_request", path: "reply_to" },
  { name: "custom header value with CRLF", body: validSend({ headers: { "X-Campaign": "spring\r\nBcc: eve@evil.example" } }), status: 422, code: "invalid_request", path: 'headers["X-Campaign"]' },
  { name: "custom header value with bare LF", body: validSend({ headers: { "X-Campaign": "spring\nBcc: eve@evil.example" } }), status: 422, code: "invalid_request", path: 'headers["X-Campaign"]' },
  { name: "custom header name with CRLF", body: validSend({ headers: { "X-A\r\nBcc": "eve@evil.example" } }), status: 422, code: "invalid_request", path: 'headers["X-A\\r\\nBcc"]', says: /names start with X-/ },
  { name: "custom header name with a colon", body: validSend({ headers: { "X-A: b\r\nX-C": "d" } }), status: 422, code: "invalid_request", path: 'headers["X-A: b\\r\\nX-C"]' },
  { name: "attachment filename with CRLF", body: validSend({ attachments: [attachment({ filename: "a.pdf\r\nBcc: eve@evil.example" })] }), status: 422, code: "invalid_request", path: "attachments[0].filename" },
  { name: "attachment filename with NUL", body: validSend({ attachments: [attachment({ filename: "a.pdf\u0000.exe" })] }), status: 422, code: "invalid_request", path: "attachments[0].filename" },
  { name: "attachment content_type with CRLF", body: validSend({ attachments: [attachment({ content_type: "text/plain\r\nBcc: eve@evil.example" })] }), status: 422, code: "invalid_request", path: "attachments[0].content_type" },
  { name: "attachment content_type with parameters", body: validSend({ attachments: [attachment({ content_type: 'text/html; name="x"' })] }), status: 422, code: "invalid_request", path: "attachments[0].content_type", says: /media type such as "application\/pdf"/ },
  { name: "attachment content_id with CRLF", body: validSend({ attachments: [attachment({ content_id: "logo\r\nBcc: eve@evil.example" })] }), status: 422, code: "invalid_request", path: "attachments[0].content_id" },
  { name: "attachment content_id with angle brackets", body: validSend({ attachments: [attachment({ content_id: "<logo>" })] }), status: 422, code: "invalid_request", path: "attachments[0].content_id" },
];

// Addresses are plain local@domain (RFC 5321 section 4.1.2 Mailbox, dot-atom local
// parts only). Everything else RFC 5322 allows is refused.
const addressTricks: Case[] = [
  ["group syntax", "undisclosed-recipients:;"],
  ["group with a member", "friends: alice@example.com;"],
  ["two addresses in one string", "a@b.example, c@d.example"],
  ["named address followed by another", "Alice <a@b.example>, c@d.example"],
  ["comment in the local part", "a(x)@b.example"],
  ["comment after the address", "a@b.example (eve@evil.example)"],
  ["quoted local part", '"a b"@b.example'],
  ["IP-literal domain", "a@[127.0.0.1]"],
  ["IPv6 literal domain", "a@[IPv6:::1]"],
  ["dotted-quad domain", "a@127.0.0.1"],
  ["missing domain", "alice@"],
  ["missing local part", "@example.com"],
  ["no @ at all", "alice"],
  ["single-label domain", "alice@localhost"],
  ["two @", "a@b@c.example"],
  ["local part over 64 characters", `${longLocal}@example.com`],
  ["address over 254 characters", longAddress],
  ["source route", "<@relay.example:a@b.example>"],
  ["nested angle brackets", "A <<a@b.example>>"],
].map(([name, to]): Case => ({ name: `to: ${name}`, body: validSend({ to }), status: 422, code: "invalid_request", path: "to" }));

const other: Case[] = [
  { name: "from: group syntax", body: validSend({ from: "shop:;" }), status: 422, code: "invalid_request", path: "from" },
  { name: "from object with an IP-literal address", body: validSend({ from: { name: "Shop", address: "noreply@[10.0.0.1]" } }), status: 422, code: "invalid_request", path: "from", says: /IP-literal/ },
  { name: "from object with an unknown field", body: validSend({ from: { name: "Shop", address: "noreply@shop.example", route: "x" } }), status: 422, code: "invalid_request", path: "from.route", says: /^unknown field; the fields here are name, address$/ },
  { name: "51 recipients in to", body: validSend({ to: recipients(51) }), status: 422, code: "invalid_request", path: "to", says: /at most 50 recipients/ },
  { name: "51 recipients across to, cc and bcc", body: validSend({ to: recipients(20), cc: recipients(20, "cc.example"), bcc: recipients(11, "bcc.example") }), status: 422, code: "invalid_request", path: "to", says: /at most 50 recipients in to, cc and bcc together; this message has 51/ },
  { name: "no recipient at all", body: validSend({ to: undefined }), status: 422, code: "invalid_request", path: "to", says: /^required: at least one recipient in to, cc or bcc/ },
  { name: "neither text nor html", body: validSend({ text: undefined }), status: 422, code: "invalid_request", path: "text", says: /text or html is required/ },
  { name: "custom header Bcc (not X-)", body: validSend({ headers: { Bcc: "eve@evil.example" } }), status: 422, code: "invalid_request", path: "headers.Bcc", says: /names start with X-/ },
  { name: "custom header Received (not X-)", body: validSend({ headers: { Received: "from evil" } }), status: 422, code: "invalid_request", path: "headers.Received" },
  { name: "custom header Content-Type (not X-)", body: validSend({ headers: { "Content-Type": "text/html" } }), status: 422, code: "invalid_request", path: 'headers["Content-Type"]' },
  { name: "attachment with a path (nodemailer would read a file)", body: validSend({ attachments: [attachment({ path: "/etc/passwd" })] }), status: 422, code: "invalid_request", path: "attachments[0].path", says: /^unknown field; the fields here are filename, content, content_type, content_id$/ },
  { name: "attachment with an href (nodemailer would fetch a URL)", body: validSend({ attachments: [attachment({ href: "http://169.254.169.254/latest/meta-data/" })] }), status: 422, code: "invalid_request", path: "attachments[0].href" },
  // Base64 (RFC 4648 section 4): the alphabet, "=" only at the end, whole groups of 4,
  // zero padding bits; line breaks are refused (section 3.3), with a word on how to avoid them.
  { name: "attachment with invalid base64", body: validSend({ attachments: [attachment({ content: "not base64!!" })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /has a space at character 4; send the base64 on one line/ },
  { name: "attachment with a character outside the alphabet", body: validSend({ attachments: [attachment({ content: "QUJD*UJD" })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /has "\*" at character 5, which is not base64/ },
  { name: "attachment with unpadded base64", body: validSend({ attachments: [attachment({ content: "QUJD" + "QQ" })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /6 characters long, which is not a multiple of 4/ },
  { name: "attachment with = in the middle", body: validSend({ attachments: [attachment({ content: "QQ==QUJD" })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /"=" at character 3; "=" may only appear at the very end/ },
  { name: "attachment with three = of padding", body: validSend({ attachments: [attachment({ content: "QUJDQ===" })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /"=" may only appear at the very end/ },
  { name: "attachment with padding bits set (not canonical)", body: validSend({ attachments: [attachment({ content: "QUJDQR==" })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /not canonical base64/ },
  { name: "attachment in MIME's wrapped base64 (line breaks)", body: validSend({ attachments: [attachment({ content: `${b64(57)}\r\n${b64(57)}` })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /has a line break at character 77; send the base64 on one line/ },
  { name: "attachment in URL-safe base64", body: validSend({ attachments: [attachment({ content: "-_-_" })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /URL-safe alphabet; use standard base64/ },
  { name: "attachment with empty content", body: validSend({ attachments: [attachment({ content: "" })] }), status: 422, code: "invalid_request", path: "attachments[0].content", says: /^must not be empty/ },
  { name: "second attachment invalid", body: validSend({ attachments: [attachment(), attachment({ content: "QQ" })] }), status: 422, code: "invalid_request", path: "attachments[1].content" },
  { name: "filename that is only a directory", body: validSend({ attachments: [attachment({ filename: "../../" })] }), status: 422, code: "invalid_request", path: "attachments[0].filename" },
  { name: "attachment over the decoded-size limit", body: validSend({ attachments: [attachment({ content: b64(ATTACHMENT_MAX + 1) })] }), status: 413, code: "payload_too_large", path: "attachments[0].content", says: /1001 bytes once decoded; the limit for one attachment is 1000 bytes/ },
  { name: "body over BODY_LIMIT_BYTES", body: validSend({ text: "x".repeat(BODY_LIMIT + 1) }), status: 413, code: "payload_too_large", detail: /^the request body is larger than the limit of 65536 bytes \(64 KiB\); attachments count with their base64 encoding/ },
  { name: "unknown field status", body: validSend({ status: "delivered" }), status: 422, code: "invalid_request", path: "status", says: /^unknown field; the fields here are from, to, cc, bcc, reply_to, subject, text, html/ },
  { name: "unknown field envelope", body: validSend({ envelope: { from: "bounce@evil.example", to: ["eve@evil.example"] } }), status: 422, code: "invalid_request", path: "envelope" },
  { name: "unknown field id", body: validSend({ id: "00000000-0000-4000-8000-000000000000" }), status: 422, code: "invalid_request", path: "id" },
  { name: "unknown field constructor (a name Object.prototype has)", body: validSend({ constructor: 1 }), status: 422, code: "invalid_request", path: "constructor", says: /^unknown field; the fields here are from, to/ },
  { name: "send_at not an ISO time", body: validSend({ send_at: "tomorrow at noon" }), status: 422, code: "invalid_request", path: "send_at", says: /ISO 8601 time with a time zone, such as "2030-01-01T09:00:00Z"/ },
  { name: "send_at without a time zone", body: validSend({ send_at: "2030-01-01T10:00:00" }), status: 422, code: "invalid_request", path: "send_at" },
  { name: "send_at more than 30 days ahead", body: validSend({ send_at: new Date(Date.now() + 31 * 86_400_000).toISOString() }), status: 422, code: "invalid_request", path: "send_at", says: /at most 30 days ahead/ },
  { name: 'tls: "none"', body: validSend({ tls: "none" }), status: 422, code: "invalid_request", path: "tls", says: /^must be "opportunistic" or "required"$/ },
  { name: "subject of the wrong type", body: validSend({ subject: ["a", "b"] }), status: 422, code: "invalid_request", path: "subject", says: /^must be a string of 1 to 998 characters without line breaks, not an array$/ },
  { name: "from a domain outside the key's allowed domains", body: validSend({ from: "Evil <ceo@evil.example>" }), key: () => shopOnlyKey, status: 403, code: "forbidden" },
  { name: "invalid Idempotency-Key (space)", body: validSend(), idempotencyKey: "two words", status: 422, code: "invalid_request", path: "Idempotency-Key", says: /visible ASCII characters without spaces/ },
];

// Payloads a JSON encoder would never produce (RFC 8259) and wrong media types.
const rawBody = (payload: string, contentType = "application/json"): Case["raw"] => ({ payload, contentType });
const valid = JSON.stringify(validSend());
const raw: Case[] = [
  { name: "__proto__ key", raw: rawBody(`{"__proto__":{"isAdmin":true},${valid.slice(1)}`), status: 400, code: "invalid_request", detail: /"__proto__" or "constructor"/ },
  { name: "nested __proto__ key", raw: rawBody(`{"metadata":{"__proto__":{"x":"1"}},${valid.slice(1)}`), status: 400, code: "invalid_request", detail: /"__proto__"/ },
  { name: "constructor.prototype keys", raw: rawBody(`{"constructor":{"prototype":{"isAdmin":true}},${valid.slice(1)}`), status: 400, code: "invalid_request", detail: /"constructor"/ },
  { name: "malformed JSON", raw: rawBody(`{"from": "noreply@shop.example", "to": `), status: 400, code: "invalid_request", detail: /^the body is not valid JSON: it ends at line 1, column 40 before the JSON is complete \(expected a value\)$/ },
  { name: "JSON with a trailing comma", raw: rawBody(`${valid.slice(0, -1)},}`), status: 400, code: "invalid_request", detail: new RegExp(`^the body is not valid JSON at line 1, column ${valid.length + 1}: expected a field name after ","; JSON does not allow a comma after the last field$`) },
  { name: "JSON with single quotes", raw: rawBody(`{\n  "from": 'noreply@shop.example'\n}`), status: 400, code: "invalid_request", detail: /^the body is not valid JSON at line 2, column 11: single quotes: JSON strings and field names take double quotes$/ },
  { name: "JSON with an unquoted value", raw: rawBody(`{"from": noreply}`), status: 400, code: "invalid_request", detail: /at line 1, column 10: a bare word: text values need double quotes/ },
  { name: "JSON with a raw line break in a string", raw: rawBody(`{"subject": "a\nb"}`), status: 400, code: "invalid_request", detail: /at line 1, column 13: a string is not closed/ },
  { name: "JSON with a comment", raw: rawBody(`{"subject": "a" // greeting\n}`), status: 400, code: "invalid_request", detail: /at line 1, column 17: comments are not allowed in JSON/ },
  { name: "empty body declared as JSON", raw: rawBody(""), status: 400, code: "invalid_request", detail: /^the body is empty; send the request as a JSON object$/ },
  { name: "a JSON array instead of an object", raw: rawBody(`[${valid}]`), status: 422, code: "invalid_request", path: "(body)", says: /^the body must be a JSON object, not an array$/ },
  { name: "text/plain body", raw: rawBody(valid, "text/plain"), status: 415, code: "unsupported_media_type", detail: /^the body must be JSON sent with Content-Type: application\/json, not text\/plain$/ },
  { name: "form-urlencoded body", raw: rawBody("from=noreply%40shop.example&to=alice%40example.com", "application/x-www-form-urlencoded"), status: 415, code: "unsupported_media_type", detail: /application\/json, not application\/x-www-form-urlencoded$/ },
  { name: "multipart body", raw: rawBody("--x\r\n\r\n--x--", "multipart/form-data; boundary=x"), status: 415, code: "unsupported_media_type", detail: /application\/json, not multipart\/form-data$/ },
];

const CASES = [...injection, ...addressTricks, ...other, ...raw];

test("there are at least 30 hostile cases", () => assert.ok(CASES.length >= 30, String(CASES.length)));

for (const c of CASES) {
  test(`hostile: ${c.name} -> ${c.status} ${c.code}, nothing written`, async () => {
    const before = await rowCounts();
    const headers: Record<string, string> = {};
    if (c.raw?.contentType) headers["content-type"] = c.raw.contentType;
    if (c.idempotencyKey) headers["idempotency-key"] = c.idempotencyKey;
    const res = await t.call("POST", "/send", { key: c.key?.() ?? key, body: c.raw ? c.raw.payload : c.body, headers });
    const problem = assertProblem(res, c.status, c.code, c.name);
    if (c.status === 422) assert.ok(Array.isArray(problem.errors) && problem.errors.length > 0, `422 names the fields: ${res.body}`);
    if (Array.isArray(problem.errors)) assertPlainWords(problem as unknown as { detail: string; errors: FieldError[] });
    if (c.path) {
      const errors = (problem.errors ?? []) as FieldError[];
      const named = errors.find((e) => e.path === c.path);
      assert.ok(named, `errors[] names ${c.path}: ${res.body}`);
      if (c.says) assert.match(named.message, c.says);
      assert.ok((problem.detail as string).startsWith(`${errors[0]!.path}: ${errors[0]!.message}`), `detail leads with the first problem: ${problem.detail}`);
    }
    if (c.detail) assert.match(problem.detail as string, c.detail);
    assert.deepEqual(await rowCounts(), before, "a refused request writes nothing");
  });
}

test("unknown fields are named one by one, with the allowed fields or the likely one meant", async () => {
  const res = await t.call("POST", "/send", { key, body: validSend({ envelope: {}, status: "sent", "reply-to": "help@shop.example", body: "hi" }) });
  const p = assertProblem(res, 422, "invalid_request");
  const byPath = Object.fromEntries((p.errors as FieldError[]).map((e) => [e.path, e.message]));
  assert.match(byPath.envelope!, /^unknown field; the fields here are from, to, cc, bcc, reply_to, subject, text, html, headers, attachments, tags, metadata, tls, priority, send_at$/);
  assert.match(byPath.status!, /^unknown field; /);
  assert.equal(byPath['["reply-to"]'], 'unknown field; did you mean "reply_to"?');
  assert.equal(byPath.body, 'unknown field; did you mean "text" or "html"?');
});

// ---- the commonest mistakes, word for word ---------------------------------------------

async function refused(body: unknown, status = 422, headers: Record<string, string> = {}): Promise<{ detail: string; errors: FieldError[] }> {
  const before = await rowCounts();
  const res = await t.call("POST", "/send", { key, body, headers });
  const p = assertProblem(res, status, status === 413 ? "payload_too_large" : status === 415 ? "unsupported_media_type" : "invalid_request") as { detail: string; errors?: FieldError[] };
  assert.deepEqual(await rowCounts(), before);
  return { detail: p.detail, errors: p.errors ?? [] };
}
const messageFor = (errors: FieldError[], path: string) => errors.find((e) => e.path === path)?.message;
const ADDRESS_HINT = 'an address such as "Shop <noreply@shop.example>" or {"name": "Shop", "address": "noreply@shop.example"}';

test("mistake: no from says it is required and shows both forms of an address", async () => {
  const p = await refused(validSend({ from: undefined }));
  assert.deepEqual(p.errors, [{ path: "from", message: `required; ${ADDRESS_HINT}` }]);
  assert.equal(p.detail, `from: required; ${ADDRESS_HINT}`);
});

test("mistake: no subject says it is required and how long it may be", async () => {
  const p = await refused(validSend({ subject: undefined }));
  assert.deepEqual(p.errors, [{ path: "subject", message: "required; a string of 1 to 998 characters without line breaks" }]);
});

test("mistake: no from and no subject: both named, the detail sums up both", async () => {
  const p = await refused({ to: "alice@example.com", text: "hi" });
  assert.deepEqual(p.errors.map((e) => e.path), ["from", "subject"]);
  assert.equal(p.detail, `from: required; ${ADDRESS_HINT}. subject: required; a string of 1 to 998 characters without line breaks`);
});

test("mistake: neither text nor html says to send either or both", async () => {
  const p = await refused(validSend({ text: undefined }));
  assert.equal(messageFor(p.errors, "text"), "text or html is required: send the plain-text body as text, the HTML body as html, or both");
});

test("mistake: several recipients in one string points to the array form, with the caller's own addresses", async () => {
  const p = await refused(validSend({ to: "a@x.example, b@y.example" }));
  assert.equal(messageFor(p.errors, "to"), 'one address per string; for several recipients use an array with one address per item: ["a@x.example", "b@y.example"]');
  const semi = await refused(validSend({ cc: ["carol@example.com", "dave@example.com; erin@example.com"] }));
  assert.match(messageFor(semi.errors, "cc[1]") ?? "", /use an array with one address per item: \["dave@example\.com", "erin@example\.com"\]$/);
  const from = await refused(validSend({ from: "a@shop.example, b@shop.example" }));
  assert.equal(messageFor(from.errors, "from"), `one sender address only, such as "Shop <noreply@shop.example>" or {"name": "Shop", "address": "noreply@shop.example"}`);
});

test("mistake: a value of the wrong type names the field, the expected value and what was sent", async () => {
  const p = await refused(validSend({ to: ["alice@example.com", 42], cc: null }));
  assert.equal(messageFor(p.errors, "to[1]"), `must be ${ADDRESS_HINT}, not a number`);
  assert.match(messageFor(p.errors, "cc") ?? "", /^must be one address or an array of addresses .*, not null; leave the field out instead$/);
});

test("mistake: no Content-Type at all says application/json is expected", async () => {
  const p = await refused(JSON.stringify(validSend()), 415);
  assert.equal(p.detail, "the body must be JSON sent with Content-Type: application/json; the request has no Content-Type");
});

test("property: any CR or LF in the subject or a custom header value is 422 and writes nothing", async () => {
  const before = await rowCounts();
  const part = fc.string({ unit: "binary", maxLength: 30 });
  const withBreak = fc.tuple(part, fc.constantFrom("\r", "\n", "\r\n", "\n\r"), part).map(([a, br, b]) => `${a}${br}${b}`);
  await fc.assert(
    fc.asyncProperty(withBreak, fc.constantFrom("subject", "header"), async (value, where) => {
      const body = where === "subject" ? validSend({ subject: value }) : validSend({ headers: { "X-Test": value } });
      const res = await t.call("POST", "/send", { key, body });
      assertProblem(res, 422, "invalid_request", `${where} ${JSON.stringify(value)}`);
    }),
    { numRuns: 50 },
  );
  assert.deepEqual(await rowCounts(), before);
});

// ---- valid edge cases that must be accepted -------------------------------------------

async function accept(body: unknown): Promise<{ id: string; status: string; send_at?: string }> {
  const before = await rowCounts();
  const res = await t.call("POST", "/send", { key, body });
  assert.equal(res.status, 202, res.body);
  assert.equal((await rowCounts()).messages, before.messages + 1);
  return res.json();
}

test("valid: a quoted display name with a comma", async () => {
  const r = await accept(validSend({ from: '"Shop, Inc." <noreply@shop.example>', to: '"Smith, Alice" <alice@example.com>' }));
  const m = await t.tdb.db.prisma.message.findUniqueOrThrow({ where: { id: r.id } });
  assert.equal(m.fromName, "Shop, Inc.");
  const [rcpt] = await t.tdb.db.prisma.recipient.findMany({ where: { messageId: r.id } });
  assert.deepEqual([rcpt?.address, rcpt?.name], ["alice@example.com", "Smith, Alice"]);
});

test("valid: the object form of from and recipients", async () => {
  const r = await accept(validSend({ from: { name: "Shop", address: "noreply@shop.example" }, to: [{ address: "alice@example.com" }, { name: "Bob", address: "bob@example.com" }] }));
  assert.equal(await t.tdb.db.prisma.recipient.count({ where: { messageId: r.id } }), 2);
});

test("valid: send_at in the future is stored as scheduled", async () => {
  const at = new Date(Date.now() + 3_600_000).toISOString();
  const r = await accept(validSend({ send_at: at }));
  assert.equal(r.status, "scheduled");
  assert.equal(r.send_at, at);
  const d = await t.tdb.db.prisma.delivery.findFirstOrThrow({ where: { messageId: r.id } });
  assert.equal(d.nextAttemptAt.toISOString(), at, "the queue row waits until send_at");
});

test("valid: duplicate recipients are stored once, the first occurrence wins", async () => {
  const r = await accept(validSend({ to: ["alice@example.com", "alice@EXAMPLE.com"], cc: "alice@example.com", bcc: ["Alice <alice@example.com>"] }));
  const rows = await t.tdb.db.prisma.recipient.findMany({ where: { messageId: r.id } });
  assert.deepEqual(rows.map((x) => [x.kind, x.address]), [["to", "alice@example.com"]]);
});

test("valid: exactly 50 recipients, an allowed sender domain, and attachments at the limit", async () => {
  await accept(validSend({ to: recipients(25), cc: recipients(25, "cc.example") }));
  const res = await t.call("POST", "/send", { key: shopOnlyKey, body: validSend({ attachments: [attachment({ content: b64(ATTACHMENT_MAX), filename: "../../etc/passwd" })] }) });
  assert.equal(res.status, 202, res.body);
});
