// The fault suite's sink (test/helpers/fault-sink.ts) does what each fault says, seen
// from a real SMTP client (the worker's own attemptDelivery, over verified STARTTLS), and
// counts copies the way the suite's duplicate check relies on.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js";
import { attemptDelivery, type AttemptResult } from "../../src/worker/smtp-attempt.ts";
import { faultHeaderValue, parseFault, startFaultSink, type FaultSink, type MessageFault } from "../helpers/fault-sink.ts";
import { attemptOptionsFor, testCa } from "../helpers/smtp-peers.ts";
import { waitFor } from "../helpers/wait.ts";

const HOST = "mx.sink.test";
let sink: FaultSink;

before(async () => {
  sink = await startFaultSink([
    { ip: "127.0.0.1", host: HOST },
    { ip: "127.0.0.61", host: "mx-421.sink.test", fault: { kind: "421-greeting", times: 1 } },
    { ip: "127.0.0.62", host: "mx-silent.sink.test", fault: { kind: "silent", times: 1 } },
  ]);
});
after(() => sink?.close());

let serial = 0;
function message(fault?: MessageFault | string, messageId = `<m${++serial}@sender.test>`): { raw: Buffer; messageId: string } {
  const header = fault === undefined ? "" : `X-Fault: ${typeof fault === "string" ? fault : faultHeaderValue(fault)}\r\n`;
  const raw = Buffer.from(`From: shop@sender.test\r\nTo: rcpt@example.test\r\nSubject: test\r\nMessage-ID: ${messageId}\r\n${header}\r\nhello\r\n`);
  return { raw, messageId };
}

function deliver(raw: Buffer, opts: { ip?: string; host?: string; connectTimeoutMs?: number } = {}): Promise<AttemptResult> {
  const ip = opts.ip ?? "127.0.0.1";
  return attemptDelivery(
    attemptOptionsFor({ host: ip, port: sink.port }, "required", {
      target: { host: opts.host ?? HOST, ip, port: sink.port },
      message: raw,
      ...(opts.connectTimeoutMs ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
    }),
  );
}

const copiesOf = (messageId: string) => sink.copies.filter((c) => c.messageId === messageId);

test("X-Fault values parse and print back; anything else is an error, not 'no fault'", () => {
  for (const v of ["451", "552 x2", "drop-after-dot x1", "slow-dot:1500", "slow-dot:20 x3"]) assert.equal(faultHeaderValue(parseFault(v)), v);
  assert.deepEqual(parseFault("slow-dot:250 x1"), { kind: "slow-dot", ms: 250, times: 1 });
  for (const bad of ["", "450", "slow-dot", "slow-dot:abc", "drop", "451 x", "451 twice"]) assert.throws(() => parseFault(bad), /unknown X-Fault/);
});

test("no fault: verified TLS, 250, one kept copy", async () => {
  const m = message();
  const r = await deliver(m.raw);
  assert.equal(r.recipients[0]!.outcome, "delivered");
  assert.equal(r.evidence.verified, true, "STARTTLS with a certificate from the test CA");
  const [copy, ...more] = copiesOf(m.messageId);
  assert.equal(more.length, 0);
  assert.deepEqual([copy!.reply, copy!.answer, copy!.kept, copy!.secure, copy!.fault], [250, "sent", true, true, null]);
});

test("451 x1: the first copy is refused with 451 and not kept, the next one is accepted", async () => {
  const m = message({ kind: "451", times: 1 });
  const first = await deliver(m.raw);
  assert.deepEqual([first.recipients[0]!.outcome, first.recipients[0]!.replyCode], ["deferred", 451]);
  const second = await deliver(m.raw);
  assert.equal(second.recipients[0]!.outcome, "delivered");
  assert.deepEqual(copiesOf(m.messageId).map((c) => [c.reply, c.kept, c.fault]), [[451, false, "451 x1"], [250, true, null]]);
});

test("552: bounced, every time, never kept", async () => {
  const m = message({ kind: "552" });
  for (let i = 0; i < 2; i++) {
    const r = await deliver(m.raw);
    assert.deepEqual([r.recipients[0]!.outcome, r.recipients[0]!.replyCode], ["bounced", 552]);
  }
  assert.deepEqual(copiesOf(m.messageId).map((c) => [c.reply, c.kept]), [[552, false], [552, false]]);
});

test("drop-after-dot: the whole message arrives, then the connection closes without a reply", async () => {
  const m = message({ kind: "drop-after-dot", times: 1 });
  const r = await deliver(m.raw);
  assert.deepEqual([r.recipients[0]!.outcome, r.recipients[0]!.replyCode], ["deferred", null], "no reply: the sender cannot know");
  const [copy] = copiesOf(m.messageId);
  assert.deepEqual([copy!.reply, copy!.answer, copy!.kept], [null, "dropped", false]);
  assert.match(copy!.fault!, /^drop-after-dot/);
  assert.equal((await deliver(m.raw)).recipients[0]!.outcome, "delivered", "x1: the next copy goes through");
});

test("slow-dot: the 250 is held for the given time, and the copy shows as pending meanwhile", async () => {
  const m = message({ kind: "slow-dot", ms: 400 });
  const started = Date.now();
  const attempt = deliver(m.raw);
  await waitFor(() => sink.pendingReplies().some((c) => c.messageId === m.messageId), { what: "the held reply" });
  const r = await attempt;
  assert.equal(r.recipients[0]!.outcome, "delivered");
  const [copy] = copiesOf(m.messageId);
  assert.ok(copy!.answeredAt! - copy!.receivedAt >= 390, `answered after ${copy!.answeredAt! - copy!.receivedAt} ms`);
  assert.ok(Date.now() - started >= 390);
  assert.equal(copy!.kept, true);
  assert.equal(sink.pendingReplies().some((c) => c.messageId === m.messageId), false);
});

test("slow-dot whose client leaves before the reply: kept (the receiver has it), never answered", async () => {
  const m = message({ kind: "slow-dot", ms: 300 });
  const conn = new SMTPConnection({ host: "127.0.0.1", port: sink.port, name: "client.test", tls: { ca: [testCa().cert], servername: HOST }, logger: false });
  conn.on("error", () => {}); // the close below fails the pending send
  await new Promise<void>((resolve, reject) => conn.connect((err?: Error) => (err ? reject(err) : resolve())));
  conn.send({ from: "shop@sender.test", to: ["rcpt@example.test"] }, m.raw, () => {});
  await waitFor(() => sink.pendingReplies().some((c) => c.messageId === m.messageId), { what: "the held reply" });
  conn.close();
  const copy = await waitFor(() => copiesOf(m.messageId).find((c) => c.answer !== "held"), { what: "the reply to fall due" });
  assert.deepEqual([copy.answer, copy.answeredAt, copy.kept], ["client gone", null, true]);
});

test("kept copies are counted per Message-ID: a second accepted copy is one duplicate", async () => {
  const before = sink.duplicates();
  const m = message();
  await deliver(m.raw);
  assert.equal(sink.duplicates(), before);
  await deliver(m.raw);
  assert.equal(sink.keptByMessageId().get(m.messageId), 2);
  assert.equal(sink.duplicates(), before + 1);
});

test("421-greeting listener: the first connection is refused at the greeting, the next is served", async () => {
  const target = { ip: "127.0.0.61", host: "mx-421.sink.test" };
  const m = message();
  const first = await deliver(m.raw, target);
  assert.deepEqual([first.recipients[0]!.outcome, first.recipients[0]!.replyCode], ["deferred", 421]);
  assert.equal(copiesOf(m.messageId).length, 0, "nothing was sent");
  assert.equal((await deliver(m.raw, target)).recipients[0]!.outcome, "delivered");
  assert.deepEqual(sink.connections.filter((c) => c.ip === "127.0.0.61").map((c) => c.fault), ["421-greeting", null]);
});

test("silent listener: the connection is accepted and never greeted, so the client times out", async () => {
  const target = { ip: "127.0.0.62", host: "mx-silent.sink.test", connectTimeoutMs: 300 };
  const m = message();
  const started = Date.now();
  const first = await deliver(m.raw, target);
  assert.deepEqual([first.recipients[0]!.outcome, first.recipients[0]!.replyCode], ["deferred", null]);
  assert.ok(Date.now() - started >= 290, "it waited for a greeting that never came");
  assert.equal((await deliver(m.raw, target)).recipients[0]!.outcome, "delivered");
  assert.deepEqual(sink.connections.filter((c) => c.ip === "127.0.0.62").map((c) => c.fault), ["silent", null]);
});

test("an unknown X-Fault value is refused (554), so a typo in a scenario cannot pass as no fault", async () => {
  const m = message("slow-dott:100");
  const r = await deliver(m.raw);
  assert.deepEqual([r.recipients[0]!.outcome, r.recipients[0]!.replyCode], ["bounced", 554]);
  assert.equal(copiesOf(m.messageId).length, 0);
});
