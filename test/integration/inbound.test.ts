// The bounce receiver (issue 13, item 4) against real SMTP: a message delivered to a peer
// under its bounce address, then a DSN for it sent to `sealpost inbound`, ends `bounced`,
// its address on the sender domain's suppression list, the next message to it
// `suppressed`, and a webhook told the merchant each step. Hostile input (unknown or forged
// bounce addresses, a DSN about another recipient, 30 MB, broken MIME, a DATA that never
// ends) changes nothing, and the server keeps serving.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import pino from "pino";
import { startTestApp, testCipher, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { peerCertificate, startPeer, TEST_MX_HOST, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker, testCaFile } from "../helpers/worker.ts";
import { startWebhookReceiver, type WebhookReceiver } from "../helpers/webhook-receiver.ts";
import { waitFor } from "../helpers/wait.ts";
import { startInboundServer, type InboundServer } from "../../src/inbound/server.ts";
import { BounceTokens } from "../../src/security/bounce-token.ts";
import type { WorkerHandle } from "../../src/worker/claim-loop.ts";

let app: TestApp;
let key: string;
let dns: FakeDns;
let peer: SmtpPeer;
let worker: WorkerHandle;
let inbound: InboundServer;
let hooks: WebhookReceiver;
const logs: string[] = [];

before(async () => {
  app = await startTestApp();
  key = (await app.createKey({ name: "shop", scopes: ["send", "read", "admin"], domains: ["shop.example"] })).key;
  const d = await app.call("POST", "/domains", { key, body: { name: "shop.example", bounce_domain: "bounces.shop.example" } });
  assert.equal(d.status, 201, d.body);
  // DNS checks are another test's subject: the domain and its bounce domain are verified here.
  await app.tdb.db.pool.query(`UPDATE sender_domains SET verified_at = now(), bounce_verified_at = now()`);
  peer = await startPeer({ ip: "127.0.0.81" });
  dns = await startFakeDns({ "mx81.test": { MX: [{ preference: 10, exchange: TEST_MX_HOST }] }, [TEST_MX_HOST]: { A: ["127.0.0.81"] } });
  worker = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port), DKIM_SIGNING: "off", WEBHOOK_CA_FILE: testCaFile() }, logs);
  hooks = await startWebhookReceiver();
  const w = await app.call("POST", "/webhooks", { key, body: { url: hooks.url } });
  assert.equal(w.status, 201, w.body);
  const pem = peerCertificate("ca-signed", "bounce-in.sealpost.test");
  inbound = await startInboundServer(
    { pool: app.tdb.db.pool, cipher: testCipher(), logger: pino({ level: "silent" }), tls: pem, name: "bounce-in.sealpost.test",
      maxBytes: 1024 * 1024, maxClients: 20, ratePerMinute: 1000, idleMs: 4000 },
    { host: "127.0.0.1", port: 0 },
  );
});

after(async () => {
  await inbound?.close();
  await worker?.stop(5000);
  await hooks?.close();
  await peer?.close();
  await dns?.close();
  await app?.close();
});

/** A delivery status notification as Postfix writes one (RFC 3464 multipart/report). */
function postfixDsn(o: { to: string; finalRecipient: string; status?: string; diagnostic?: string; action?: string }): string {
  const status = o.status ?? "5.1.1";
  return [
    "Return-Path: <>",
    "From: MAILER-DAEMON@mx81.test (Mail Delivery System)",
    `To: ${o.to}`,
    "Subject: Undelivered Mail Returned to Sender",
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"',
    "",
    "--B0UND",
    "Content-Description: Notification",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "This is the mail system at host mx81.test.",
    "",
    "I'm sorry to have to inform you that your message could not",
    "be delivered to one or more recipients.",
    "",
    "--B0UND",
    "Content-Description: Delivery report",
    "Content-Type: message/delivery-status",
    "",
    "Reporting-MTA: dns; mx81.test",
    "X-Postfix-Queue-ID: 4BqK2X0cz4z9vC",
    "Arrival-Date: Sat,  5 Dec 2026 10:00:00 +0000 (UTC)",
    "",
    `Final-Recipient: rfc822; ${o.finalRecipient}`,
    `Original-Recipient: rfc822;${o.finalRecipient}`,
    `Action: ${o.action ?? "failed"}`,
    `Status: ${status}`,
    "Remote-MTA: dns; mailstore.mx81.test",
    `Diagnostic-Code: smtp; ${o.diagnostic ?? `550 ${status} <${o.finalRecipient}>: Recipient address rejected: User unknown in local recipient table`}`,
    "",
    "--B0UND",
    "Content-Description: Undelivered Message Headers",
    "Content-Type: text/rfc822-headers",
    "",
    "From: Shop <orders@shop.example>",
    `To: ${o.finalRecipient}`,
    "Subject: Your receipt",
    "",
    "--B0UND--",
    "",
  ].join("\r\n");
}

/** A plain-text SMTP client: each command gets the server's full reply (code and text). */
async function smtp(): Promise<{ say(line: string): Promise<string>; raw(data: string | Buffer): void; socket: Socket; close(): void }> {
  const { host, port } = inbound.address();
  const socket = connect(port, host);
  let buffer = "";
  let waiting: ((reply: string) => void) | null = null;
  const replies: string[] = [];
  socket.on("data", (d: Buffer) => {
    buffer += d.toString("latin1");
    for (let m = /^(\d{3}) [^\r\n]*\r\n/m.exec(buffer); m; m = /^(\d{3}) [^\r\n]*\r\n/m.exec(buffer)) {
      const end = m.index + m[0].length;
      replies.push(buffer.slice(0, end));
      buffer = buffer.slice(end);
    }
    while (waiting && replies.length > 0) {
      const w = waiting;
      waiting = null;
      w(replies.shift()!);
    }
  });
  socket.on("error", () => {});
  // A connection the server closed answers every later command with "closed", so a test fails on it instead of waiting forever.
  let closed = false;
  socket.on("close", () => {
    closed = true;
    waiting?.("closed");
    waiting = null;
  });
  const next = () => new Promise<string>((resolve) => (replies.length > 0 ? resolve(replies.shift()!) : closed ? resolve("closed") : (waiting = resolve)));
  await next(); // greeting
  return {
    socket,
    say: (line: string) => {
      socket.write(`${line}\r\n`);
      return next();
    },
    raw: (data) => socket.write(data),
    close: () => socket.destroy(),
  };
}

/** EHLO, MAIL FROM:<>, one RCPT per address (their replies), then the message if every RCPT was taken. */
async function deliverReport(rcpts: string[], body: string | null): Promise<{ rcpt: string[]; data: string | null }> {
  const c = await smtp();
  try {
    assert.match(await c.say("EHLO reporter.test"), /^250/);
    assert.match(await c.say("MAIL FROM:<>"), /^250/);
    const rcpt = [];
    for (const r of rcpts) rcpt.push(await c.say(`RCPT TO:<${r}>`));
    if (body === null || !rcpt.every((r) => r.startsWith("250"))) return { rcpt, data: null };
    assert.match(await c.say("DATA"), /^354/);
    const data = await c.say(`${body.replace(/\r\n\./g, "\r\n..")}\r\n.`);
    await c.say("QUIT");
    return { rcpt, data };
  } finally {
    c.close();
  }
}

const statusOf = async (id: string, statuses?: string[]) => (await waitForMessage(app, key, id, statuses, { logs })).recipients[0]!.status;
const suppressed = async () => (((await app.call("GET", "/suppressions", { key })).json()) as { data: Array<{ address: string; reason: string }> }).data;
const changes = async () => Number((await app.tdb.db.pool.query<{ n: string }>(`SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM suppressions) AS n`)).rows[0]!.n);

/** Sends a message to `to` and returns its id and the bounce address it left with. */
async function delivered(to: string): Promise<{ id: string; bounceAddress: string }> {
  const id = await sendMessage(app, key, { from: "Shop <orders@shop.example>", to, subject: "Your receipt" });
  assert.equal(await statusOf(id), "delivered");
  const got = peer.received.filter((m) => m.to.includes(to));
  const from = got[got.length - 1]!.from;
  assert.match(from, /^bounce\+[a-z2-7]+@bounces\.shop\.example$/);
  return { id, bounceAddress: from };
}

test("a DSN for a delivered message: bounced, suppressed, the next message suppressed, and the merchant told each step by webhook", { timeout: 60_000 }, async () => {
  const { id, bounceAddress } = await delivered("ann@mx81.test");
  const r = await deliverReport([bounceAddress], postfixDsn({ to: bounceAddress, finalRecipient: "ann@mx81.test" }));
  assert.match(r.data!, /^250/);

  const m = await waitForMessage(app, key, id, ["bounced"], { logs });
  assert.equal(m.recipients[0]!.status, "bounced");
  assert.equal(m.recipients[0]!.last_response?.enhanced_code, "5.1.1");
  assert.deepEqual((await suppressed()).map((s) => [s.address, s.reason]), [["ann@mx81.test", "hard_bounce"]]);
  const next = await app.call("POST", "/send", { key, body: { from: "orders@shop.example", to: "ann@mx81.test", subject: "Again", text: "x" } });
  assert.equal((next.json() as { status: string }).status, "suppressed");

  const seen = await waitFor(() => {
    const types = hooks.received.map((h) => JSON.parse(h.body) as { type: string; data: { recipient?: { address: string } } })
      .filter((e) => e.data.recipient?.address === "ann@mx81.test").map((e) => e.type);
    return types.includes("message.suppressed") ? types : null;
  }, { timeoutMs: 15_000, intervalMs: 50, what: "the webhooks of each step" });
  assert.deepEqual(seen, ["message.queued", "message.delivered", "message.bounced", "message.suppressed"]);

  // The same DSN again (a replay) changes nothing more.
  const before = await changes();
  assert.match((await deliverReport([bounceAddress], postfixDsn({ to: bounceAddress, finalRecipient: "ann@mx81.test" }))).data!, /^250/);
  assert.equal(await changes(), before);
});

test("an ARF complaint puts the address on the list as a complaint and tells the merchant; the recipient stays delivered", { timeout: 60_000 }, async () => {
  const { id, bounceAddress } = await delivered("frank@mx81.test");
  const arf = readFileSync(new URL("../fixtures/reports/arf-abuse-complaint.eml", import.meta.url), "utf8").replaceAll("frank@example.com", "frank@mx81.test");
  assert.match((await deliverReport([bounceAddress], arf.replace(/\r\n$/, ""))).data!, /^250/);
  assert.deepEqual((await suppressed()).filter((s) => s.address === "frank@mx81.test").map((s) => s.reason), ["complaint"]);
  assert.equal(await statusOf(id), "delivered");
  // The event log shows an event once every transaction that began before it has ended (a
  // worker's may still be open), so it is polled for, not read once.
  const complained = await waitFor(async () => {
    const events = await app.call("GET", `/events?message_id=${id}&type=message.complained`, { key });
    const data = (events.json() as { data: unknown[] }).data;
    return data.length > 0 ? data : null;
  }, { timeoutMs: 10_000, intervalMs: 50, what: "the message.complained event" });
  assert.equal(complained.length, 1);
});

test("Gmail's DSN with an empty delivery-status part: bounced on its X-Failed-Recipients, with a generic 5.0.0 that does not suppress", { timeout: 60_000 }, async () => {
  const { id, bounceAddress } = await delivered("gone@mx81.test");
  const fixture = readFileSync(new URL("../fixtures/reports/gmail-empty-delivery-status.eml", import.meta.url), "latin1")
    .replace("neko-nyaan-cat-meeting@google-groups.example.com", "gone@mx81.test");
  assert.match((await deliverReport([bounceAddress], fixture.replace(/\r?\n$/, ""))).data!, /^250/);
  const m = await waitForMessage(app, key, id, ["bounced"], { logs });
  assert.equal(m.recipients[0]!.last_response?.enhanced_code, "5.0.0");
  assert.match(m.recipients[0]!.last_response?.text ?? "", /X-Failed-Recipients/);
  assert.deepEqual((await suppressed()).filter((s) => s.address === "gone@mx81.test"), [], "nothing says the address is bad");
});

test("a DSN that comes before the worker's result is answered 451 so its sender tries again; a final recipient that was never delivered does not change", { timeout: 60_000 }, async () => {
  // A receiver can answer 250 and send its DSN before the worker has written `delivered`:
  // the recipient is then still waiting. A scheduled message is one that waits for certain.
  const sendAt = new Date(Date.now() + 3_600_000).toISOString();
  const id = await sendMessage(app, key, { from: "Shop <orders@shop.example>", to: "early@mx81.test", subject: "Your receipt", send_at: sendAt });
  const { rows } = await app.tdb.db.pool.query<{ id: string }>("SELECT id::text AS id FROM recipients WHERE message_id = $1", [id]);
  const bounceAddress = new BounceTokens(testCipher()).address(BigInt(rows[0]!.id), "bounces.shop.example");
  const dsn = postfixDsn({ to: bounceAddress, finalRecipient: "early@mx81.test" });
  const before = await changes();
  assert.match((await deliverReport([bounceAddress], dsn)).data!, /^451 4\.3\.0/);
  assert.equal(await changes(), before);
  assert.equal(await statusOf(id, ["scheduled"]), "scheduled");

  // Once the recipient is final without having been delivered (here cancelled), the report
  // has nothing to change: taken and dropped, so its sender stops trying.
  assert.equal((await app.call("POST", `/messages/${id}/cancel`, { key })).status, 200);
  assert.match((await deliverReport([bounceAddress], dsn)).data!, /^250/);
  assert.equal(await changes(), before + 1, "only the cancellation's event");
  assert.equal(await statusOf(id), "cancelled");
});

test("a delayed DSN is information: the recipient stays delivered, nothing is suppressed", { timeout: 60_000 }, async () => {
  const { id, bounceAddress } = await delivered("slow@mx81.test");
  const before = await changes();
  const r = await deliverReport([bounceAddress], postfixDsn({ to: bounceAddress, finalRecipient: "slow@mx81.test", action: "delayed", status: "4.4.1", diagnostic: "connect to mailstore: Connection timed out" }));
  assert.match(r.data!, /^250/);
  assert.equal(await statusOf(id), "delivered");
  assert.equal(await changes(), before);
});

test("unknown, forged and other domains' bounce addresses are refused at RCPT; a DSN about another recipient changes nothing", { timeout: 60_000 }, async () => {
  const { bounceAddress } = await delivered("bo@mx81.test");
  const [local] = bounceAddress.split("@");
  const forged = `${local!.slice(0, -1)}${local!.endsWith("a") ? "b" : "a"}@bounces.shop.example`;
  const r = await deliverReport(["postmaster@bounces.shop.example", forged, `${local}@elsewhere.example`, "bounce+@bounces.shop.example"], null);
  for (const reply of r.rcpt) assert.match(reply, /^550 5\.1\.1/);

  const before = await changes();
  const other = await deliverReport([bounceAddress], postfixDsn({ to: bounceAddress, finalRecipient: "ann@mx81.test" }));
  assert.match(other.data!, /^250/, "accepted and dropped");
  assert.equal(await changes(), before);
  assert.equal((await suppressed()).some((s) => s.address === "bo@mx81.test"), false);
});

test("a bounce address whose recipient was delivered longer ago than INBOUND_REPORT_MAX_AGE is refused at RCPT like an unknown one", { timeout: 60_000 }, async () => {
  const { id, bounceAddress } = await delivered("old@mx81.test");
  // The clock is the one thing faked: the delivery is moved back in time.
  const deliveredAgo = (days: number) => app.tdb.db.pool.query(`UPDATE recipients SET updated_at = now() - make_interval(days => $2) WHERE message_id = $1`, [id, days]);
  await deliveredAgo(31);
  const before = await changes();
  const r = await deliverReport([bounceAddress], postfixDsn({ to: bounceAddress, finalRecipient: "old@mx81.test" }));
  assert.match(r.rcpt[0]!, /^550 5\.1\.1/);
  assert.equal(await changes(), before);
  await deliveredAgo(29);
  assert.match((await deliverReport([bounceAddress], null)).rcpt[0]!, /^250/, "delivered 29 days ago is still within the window");
  // The window starts at the delivery, not at acceptance: a message scheduled weeks ahead is sent late.
  await deliveredAgo(0);
  await app.tdb.db.pool.query("UPDATE messages SET created_at = now() - interval '35 days' WHERE id = $1", [id]);
  assert.match((await deliverReport([bounceAddress], null)).rcpt[0]!, /^250/, "accepted 35 days ago, delivered now");
});

test("30 MB, a broken MIME tree and a DATA that never ends change nothing, and the server keeps serving", { timeout: 60_000 }, async () => {
  const { id, bounceAddress } = await delivered("cy@mx81.test");
  const before = await changes();

  const big = await deliverReport([bounceAddress], `Subject: big\r\n\r\n${"x".repeat(998)}\r\n`.repeat(30 * 1024));
  assert.match(big.data!, /^552/);
  const broken = [
    'Content-Type: multipart/report; report-type=delivery-status; boundary="a"', "", "--a",
    'Content-Type: multipart/mixed; boundary="a"', "", "--a", "Content-Type: message/delivery-status", "",
    "Final-Recipient: rfc822", "Status: 5.1", "--a--", "--a", "Content-Type: message/delivery-status", "",
  ].join("\r\n");
  assert.match((await deliverReport([bounceAddress], broken)).data!, /^250/);
  assert.match((await deliverReport([bounceAddress], "not a report at all\r\n")).data!, /^250/);

  // A client that starts DATA and never finishes it is closed after the idle time, while others are served.
  const stalled = await smtp();
  await stalled.say("EHLO stall.test");
  await stalled.say("MAIL FROM:<>");
  await stalled.say(`RCPT TO:<${bounceAddress}>`);
  await stalled.say("DATA");
  stalled.raw("Content-Type: multipart/report; report-type=delivery-status\r\n\r\npartial");
  const closed = new Promise<void>((resolve) => stalled.socket.once("close", () => resolve()));
  const meanwhile = await deliverReport([bounceAddress], postfixDsn({ to: bounceAddress, finalRecipient: "cy@mx81.test", action: "delayed", status: "4.4.1" }));
  assert.match(meanwhile.data!, /^250/);
  await closed;

  assert.equal(await changes(), before);
  assert.equal(await statusOf(id), "delivered");
});
