// The suppression list (issue 13, items 1-3): a permanent address failure puts the address
// on the sender domain's list (a temporary failure or a policy refusal does not); a
// recipient on the list is not attempted, is `suppressed` with an event, and the answer to
// POST /send names it; the list is per sender domain and managed through the API.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { getMessage, waitForMessage } from "../helpers/messages.ts";
import { startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { waitFor } from "../helpers/wait.ts";
import type { WorkerHandle } from "../../src/worker/claim-loop.ts";

let app: TestApp;
let key: string; // may send from shop.example and news.example
let dns: FakeDns;
let peer: SmtpPeer;
let worker: WorkerHandle;
const logs: string[] = [];

before(async () => {
  app = await startTestApp();
  key = (await app.createKey({ name: "shop", domains: ["shop.example", "news.example"], scopes: ["send", "read", "admin"] })).key;
  peer = await startPeer({
    ip: "127.0.0.71",
    rcpt: {
      "gone@mx71.test": { code: 550, message: "5.1.1 <gone@mx71.test>: Recipient address rejected: User unknown" },
      "disabled@mx71.test": { code: 550, message: "5.2.1 mailbox disabled" },
      "full@mx71.test": { code: 452, message: "4.2.2 mailbox full" },
      "busy@mx71.test": { code: 421, message: "4.3.2 try again later" },
      "spam@mx71.test": { code: 550, message: "5.7.1 message rejected as spam" },
      "vague@mx71.test": { code: 550, message: "no such user here" },
    },
  });
  dns = await startFakeDns({ "mx71.test": { MX: [{ preference: 10, exchange: "mx.mx71.test" }] }, "mx.mx71.test": { A: ["127.0.0.71"] } });
  worker = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port), SMTP_MAX_RETRY: "1s" }, logs);
});

after(async () => {
  await worker?.stop(5000);
  await peer?.close();
  await dns?.close();
  await app?.close();
});

const send = async (body: Record<string, unknown>, headers: Record<string, string> = {}) => {
  const r = await app.call("POST", "/send", { key, headers, body: { from: "Shop <noreply@shop.example>", subject: "Your receipt", text: "Thanks.", ...body } });
  assert.equal(r.status, 202, r.body);
  return r.json() as { id: string; status: string; suppressed?: string[] };
};
const suppressions = async (query = "") => {
  const r = await app.call("GET", `/suppressions${query}`, { key });
  assert.equal(r.status, 200, r.body);
  return (r.json() as { data: Array<{ address: string; domain: string; reason: string; message_id: string | null; reply: { code: number; enhanced_code: string } | null }> }).data;
};
const rcptsAt = (address: string) => peer.sessions.filter((s) => s.rcptTo.includes(address)).length;

test("a 5.1.1 or 5.2.1 refusal suppresses the address; 452, 421, 5.7.1 and a 550 without an enhanced code do not", async () => {
  const to = ["gone@mx71.test", "disabled@mx71.test", "full@mx71.test", "busy@mx71.test", "spam@mx71.test", "vague@mx71.test"];
  const sent = await send({ to });
  await waitForMessage(app, key, sent.id, undefined, { logs, timeoutMs: 20_000 });

  const list = await suppressions();
  assert.deepEqual(list.map((s) => s.address).sort(), ["disabled@mx71.test", "gone@mx71.test"]);
  const gone = list.find((s) => s.address === "gone@mx71.test")!;
  assert.equal(gone.reason, "hard_bounce");
  assert.equal(gone.domain, "shop.example");
  assert.equal(gone.message_id, sent.id);
  assert.deepEqual([gone.reply?.code, gone.reply?.enhanced_code], [550, "5.1.1"]);
  assert.deepEqual((await suppressions("?reason=manual")).length, 0);
});

test("a suppressed recipient is not attempted: it is suppressed with an event, the answer names it, and the others are delivered", async () => {
  await suppressions(); // the first test's bounces are on the list
  const before = rcptsAt("gone@mx71.test");
  const sent = await send({ to: ["gone@mx71.test", "ok1@mx71.test"], cc: "ok2@mx71.test" });
  assert.equal(sent.status, "queued");
  assert.deepEqual(sent.suppressed, ["gone@mx71.test"]);
  const m = await waitForMessage(app, key, sent.id, undefined, { logs });
  assert.equal(m.status, "partially_delivered");
  const byAddress = new Map(m.recipients.map((r) => [r.address, r]));
  assert.equal(byAddress.get("gone@mx71.test")!.status, "suppressed");
  assert.equal(byAddress.get("gone@mx71.test")!.delivery_attempts.length, 0);
  assert.equal(byAddress.get("ok1@mx71.test")!.status, "delivered");
  assert.equal(rcptsAt("gone@mx71.test"), before, "never given to the peer");
  // The event log shows an event once every transaction that began before it has ended: polled, not read once.
  const suppressedEvents = await waitFor(async () => {
    const events = await app.call("GET", `/events?message_id=${sent.id}&type=message.suppressed`, { key });
    assert.equal(events.status, 200, events.body);
    const data = (events.json() as { data: Array<{ data: { recipient: { address: string } } }> }).data;
    return data.length > 0 ? data : null;
  }, { timeoutMs: 10_000, intervalMs: 50, what: "the message.suppressed event" });
  assert.deepEqual(suppressedEvents.map((e) => e.data.recipient.address), ["gone@mx71.test"]);
});

test("a message whose every recipient is suppressed is accepted and finished at once; its Idempotency-Key replays the same answer", async () => {
  const headers = { "idempotency-key": "all-suppressed-1" };
  const first = await send({ to: ["Gone@MX71.test", "disabled@mx71.test"] }, headers);
  assert.equal(first.status, "suppressed");
  assert.deepEqual(first.suppressed, ["Gone@mx71.test", "disabled@mx71.test"]);
  const m = await getMessage(app, key, first.id);
  assert.equal(m.status, "suppressed");
  assert.ok(m.recipients.every((r) => r.status === "suppressed" && r.next_attempt_at === null));
  const pending = await app.tdb.db.pool.query(`SELECT 1 FROM deliveries WHERE message_id = $1::uuid AND state = 'pending'`, [first.id]);
  assert.equal(pending.rowCount, 0, "no queue work");
  const again = await send({ to: ["Gone@MX71.test", "disabled@mx71.test"] }, headers);
  assert.deepEqual(again, first);
});

test("the list is the sender domain's: another domain's mail to the same address still goes", async () => {
  const sent = await send({ from: "News <hello@news.example>", to: "gone@mx71.test" });
  assert.equal(sent.suppressed, undefined);
  const m = await waitForMessage(app, key, sent.id, undefined, { logs, timeoutMs: 20_000 });
  assert.equal(m.recipients[0]!.delivery_attempts[0]!.smtp.code, 550, "it was attempted (and bounced) under news.example");
  assert.deepEqual((await suppressions("?domain=news.example")).map((s) => s.address), ["gone@mx71.test"]);
});

test("added by hand, listed, refused for another domain, and removed", async () => {
  const add = (body: Record<string, unknown>, k = key) => app.call("POST", "/suppressions", { key: k, body });
  const created = await add({ address: "Carol@Example.org", domain: "shop.example", description: "unsubscribed" });
  assert.equal(created.status, 201, created.body);
  assert.deepEqual((created.json() as { address: string; reason: string }).address, "carol@example.org");
  const again = await add({ address: "carol@example.org", domain: "shop.example" });
  assert.equal(again.status, 200, "already there: the existing entry");
  // The address is suppressed from now on.
  assert.deepEqual((await send({ to: "carol@example.org" })).status, "suppressed");

  const noDomain = await add({ address: "dan@example.org" });
  assert.equal(noDomain.status, 422);
  assert.equal((noDomain.json() as { errors: Array<{ path: string }> }).errors[0]!.path, "domain");
  const badAddress = await add({ address: "not an address", domain: "shop.example" });
  assert.equal(badAddress.status, 422);
  assert.equal((badAddress.json() as { errors: Array<{ path: string }> }).errors[0]!.path, "address");
  assert.equal((await add({ address: "dan@example.org", domain: "other.example" })).status, 403);
  const single = (await app.createKey({ name: "single", domains: ["solo.example"] })).key;
  const defaulted = await add({ address: "dan@example.org" }, single);
  assert.equal(defaulted.status, 201, defaulted.body);
  assert.equal((defaulted.json() as { domain: string }).domain, "solo.example", "a key of one domain needs not name it");

  // Another key sees its own domains' lists only.
  const seenBySingle = await app.call("GET", "/suppressions", { key: single });
  assert.deepEqual((seenBySingle.json() as { data: Array<{ address: string }> }).data.map((s) => s.address), ["dan@example.org"]);
  assert.deepEqual((await suppressions("?address=CAROL@example.org")).map((s) => s.reason), ["manual"]);

  const removed = await app.call("DELETE", "/suppressions/carol@example.org", { key });
  assert.equal(removed.status, 200, removed.body);
  assert.deepEqual(removed.json(), { address: "carol@example.org", removed_from: ["shop.example"] });
  assert.equal((await app.call("DELETE", "/suppressions/carol@example.org", { key })).status, 404);
  assert.equal((await send({ to: "carol@example.org" })).status, "queued");
});
