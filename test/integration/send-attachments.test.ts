// Attachments at the documented sizes (ATTACHMENT_MAX_BYTES 5 MiB each,
// ATTACHMENTS_TOTAL_MAX_BYTES 7 MiB together, BODY_LIMIT_BYTES 10 MiB), through POST /send
// and POST /send/batch with the default configuration: a file under the limit is
// accepted, stored and delivered byte for byte; one over a limit is 413 naming the field
// and the limit; content that is not standard base64 is 422 naming the field, however
// large it is. A regular expression over the whole content once made every attachment
// of about 3.2 MiB or more a 500.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { startPeer, TEST_MX_HOST, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { waitForMessage } from "../helpers/messages.ts";
import { assertProblem } from "../helpers/route-security.ts";
import { contentAad } from "../../src/security/content-cipher.ts";
import type { WorkerHandle } from "../../src/worker/worker.ts";
import type { FieldError } from "../../src/domain/errors.ts";

const MiB = 1024 * 1024;

let t: TestApp;
let key: string;
let peer: SmtpPeer;
let dns: FakeDns;
let worker: WorkerHandle;
const workerLogs: string[] = [];

before(async () => {
  t = await startTestApp(); // the documented defaults: 5 MiB, 7 MiB, 10 MiB
  assert.equal(t.config.ATTACHMENT_MAX_BYTES, 5 * MiB);
  assert.equal(t.config.ATTACHMENTS_TOTAL_MAX_BYTES, 7 * MiB);
  assert.equal(t.config.BODY_LIMIT_BYTES, 10 * MiB);
  key = (await t.createKey()).key;
  peer = await startPeer({ ip: "127.0.0.2" });
  dns = await startFakeDns({ "example.com": { MX: [{ preference: 10, exchange: TEST_MX_HOST }] }, [TEST_MX_HOST]: { A: ["127.0.0.2"] } });
  worker = startTestWorker(t.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port) }, workerLogs);
});

after(async () => {
  await worker?.stop(2000);
  await peer?.close();
  await dns?.close();
  await t?.close();
});

const file = (bytes: number, filename = "big.bin") => {
  const data = randomBytes(bytes);
  return { data, attachment: { filename, content: data.toString("base64"), content_type: "application/octet-stream" } };
};
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function counts() {
  return { messages: await t.tdb.db.prisma.message.count(), deliveries: await t.tdb.db.prisma.delivery.count() };
}

/** The attachments of a stored message, decrypted, with their content decoded. */
async function storedAttachments(id: string): Promise<Array<{ filename: string; bytes: Buffer }>> {
  const row = await t.tdb.db.pool.query<{ attachments: Buffer }>("SELECT attachments FROM messages WHERE id = $1", [id]);
  const list = JSON.parse(t.cipher.decrypt(row.rows[0]!.attachments, contentAad(id, "attachments")).toString("utf8")) as Array<{ filename: string; content: string }>;
  return list.map((a) => ({ filename: a.filename, bytes: Buffer.from(a.content, "base64") }));
}

/** The decoded body of the MIME part that carries `filename` in a raw message. */
function attachmentFromMime(raw: Buffer, filename: string): Buffer {
  const text = raw.toString("latin1");
  const at = text.indexOf(`filename=${filename}`);
  assert.ok(at > 0, `the message has a part for ${filename}`);
  const bodyStart = text.indexOf("\r\n\r\n", at) + 4;
  const bodyEnd = text.indexOf("\r\n--", bodyStart);
  return Buffer.from(text.slice(bodyStart, bodyEnd).replace(/\r\n/g, ""), "base64");
}

test("a 4 MiB attachment is accepted, stored and delivered byte for byte", async () => {
  const { data, attachment } = file(4 * MiB, "report.bin");
  const r = await t.call("POST", "/send", { key, body: validSend({ to: "alice@example.com", attachments: [attachment] }) });
  assert.equal(r.status, 202, r.body.slice(0, 500));
  const id = r.json().id as string;
  const [stored] = await storedAttachments(id);
  assert.equal(stored?.filename, "report.bin");
  assert.equal(stored?.bytes.length, data.length);
  assert.equal(sha256(stored!.bytes), sha256(data), "the stored bytes are the bytes sent");

  const m = await waitForMessage(t, key, id, ["delivered", "failed", "bounced"], { logs: workerLogs, timeoutMs: 30_000 });
  assert.equal(m.status, "delivered", JSON.stringify(m.recipients));
  const received = peer.received.find((x) => x.data.includes(Buffer.from(`<${id}@shop.example>`)));
  assert.ok(received, "the peer received the message");
  assert.equal(sha256(attachmentFromMime(received.data, "report.bin")), sha256(data), "the delivered bytes are the bytes sent");
});

test("an attachment of exactly the per-attachment limit (5 MiB) is accepted", async () => {
  const { data, attachment } = file(5 * MiB);
  const r = await t.call("POST", "/send", { key, body: validSend({ attachments: [attachment] }) });
  assert.equal(r.status, 202, r.body.slice(0, 500));
  assert.equal(sha256((await storedAttachments(r.json().id))[0]!.bytes), sha256(data));
});

test("a 6 MiB attachment is 413 naming the field and the limit, and nothing is stored", async () => {
  const before = await counts();
  const { attachment } = file(6 * MiB);
  const r = await t.call("POST", "/send", { key, body: validSend({ attachments: [file(10).attachment, attachment] }) });
  const p = assertProblem(r, 413, "payload_too_large") as { detail: string; errors: FieldError[] };
  assert.deepEqual(p.errors, [
    { path: "attachments[1].content", message: "the file is 6291456 bytes (6 MiB) once decoded; the limit for one attachment is 5242880 bytes (5 MiB)" },
  ]);
  assert.equal(p.detail, `attachments[1].content: ${p.errors[0]!.message}`);
  assert.deepEqual(await counts(), before);
});

test("attachments over the total limit together are 413 naming the limit", async () => {
  const before = await counts();
  const parts = [file(3.6 * MiB, "a.bin"), file(3.6 * MiB, "b.bin")];
  const total = parts.reduce((n, p) => n + p.data.length, 0);
  const r = await t.call("POST", "/send", { key, body: validSend({ attachments: parts.map((p) => p.attachment) }) });
  const p = assertProblem(r, 413, "payload_too_large") as { detail: string; errors: FieldError[] };
  assert.deepEqual(p.errors, [
    { path: "attachments", message: `the files total ${total} bytes (7.2 MiB) once decoded; the limit for all attachments of a message together is 7340032 bytes (7 MiB)` },
  ]);
  assert.match(p.detail, /^attachments: the files total .* the limit for all attachments of a message together is 7340032 bytes \(7 MiB\)$/);
  assert.deepEqual(await counts(), before);
});

test("a large attachment that is not standard base64 is 422 naming the field, never a 500", async () => {
  const before = await counts();
  const b64 = randomBytes(4 * MiB).toString("base64");
  const cases: Array<[string, string, RegExp]> = [
    ["a line break", `${b64.slice(0, 76)}\n${b64.slice(76)}`, /^has a line break at character 77; send the base64 on one line/],
    ["a bad character near the end", `${b64.slice(0, -8)}!${b64.slice(-7)}`, new RegExp(`^has "!" at character ${b64.length - 7}, which is not base64`)],
    ["missing padding", b64.replace(/=+$/, "").slice(0, -1), /which is not a multiple of 4/],
  ];
  for (const [what, content, says] of cases) {
    const r = await t.call("POST", "/send", { key, body: validSend({ attachments: [{ ...file(1).attachment, content }] }) });
    const p = assertProblem(r, 422, "invalid_request", what) as { errors: FieldError[] };
    assert.equal(p.errors[0]?.path, "attachments[0].content", what);
    assert.match(p.errors[0]!.message, says, what);
  }
  assert.deepEqual(await counts(), before);
});

test("/send/batch applies the same rules to each item", async () => {
  const before = await counts();
  const ok = file(4 * MiB, "ok.bin");
  const first = await t.call("POST", "/send/batch", {
    key,
    body: { messages: [validSend({ attachments: [ok.attachment] }), validSend({ attachments: [{ ...file(1).attachment, content: "QUJD\r\nQUJD" }] })] },
  });
  assert.equal(first.status, 200, first.body.slice(0, 500));
  const a = first.json();
  assert.deepEqual([a.accepted, a.rejected], [1, 1]);
  assert.equal(sha256((await storedAttachments(a.data[0].id))[0]!.bytes), sha256(ok.data), "the accepted item's bytes are stored");
  assert.equal(a.data[1].error.status, 422);
  assert.equal(a.data[1].error.errors[0].path, "attachments[0].content");
  assert.match(a.data[1].error.detail, /^attachments\[0\]\.content: has a line break at character 5/);

  const second = await t.call("POST", "/send/batch", {
    key,
    body: { messages: [validSend({ attachments: [file(6 * MiB).attachment] }), validSend({ attachments: [file(100).attachment] })] },
  });
  assert.equal(second.status, 200, second.body.slice(0, 500));
  const b = second.json();
  assert.deepEqual([b.accepted, b.rejected], [1, 1]);
  assert.equal(b.data[0].error.status, 413);
  assert.equal(b.data[0].error.code, "payload_too_large");
  assert.deepEqual(b.data[0].error.errors, [
    { path: "attachments[0].content", message: "the file is 6291456 bytes (6 MiB) once decoded; the limit for one attachment is 5242880 bytes (5 MiB)" },
  ]);
  assert.equal(b.data[1].status, "queued");

  const after = await counts();
  assert.equal(after.messages - before.messages, 2, "only the two valid items were stored");
});

test("a body over BODY_LIMIT_BYTES is 413 stating the limit", async () => {
  const r = await t.call("POST", "/send", { key, body: validSend({ attachments: [file(8 * MiB).attachment] }) });
  const p = assertProblem(r, 413, "payload_too_large");
  assert.match(p.detail as string, /^the request body is larger than the limit of 10485760 bytes \(10 MiB\)/);
});
