// Webhooks (issue 12) end to end: endpoints registered through the API, events sent by a
// real worker to a real HTTPS receiver (test CA), every signature checked with the
// `standardwebhooks` package, not with our code; failures retried on the schedule, 410
// and five days of failures disabling the endpoint, a lost worker's delivery sent again
// under the same webhook-id.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { BlockList } from "node:net";
import { Resolver } from "node:dns/promises";
import { Webhook } from "standardwebhooks";
import { claimWebhookDeliveries } from "../../src/db/webhooks.ts";
import { refusedAddress, refusedUrl } from "../../src/security/webhook-targets.ts";
import { postWebhook } from "../../src/worker/webhook-http.ts";
import { nextStep, RETRY_SCHEDULE_MS, MAX_WEBHOOK_ATTEMPTS } from "../../src/worker/webhook-sender.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { peerCertificate, startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { spawnTestWorker, startTestWorker, testCaFile } from "../helpers/worker.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { waitFor } from "../helpers/wait.ts";
import { startWebhookReceiver, type WebhookReceiver } from "../helpers/webhook-receiver.ts";

let app: TestApp;
let admin: string;
let dns: FakeDns;
let peer: SmtpPeer;
const logs: string[] = [];

before(async () => {
  app = await startTestApp();
  admin = (await app.createKey({ name: "shop", scopes: ["send", "read", "admin"] })).key;
  peer = await startPeer({ ip: "127.0.0.51", certificate: peerCertificate("ca-signed", "mx.hooks.test") });
  dns = await startFakeDns({ "hooks.test": { MX: [{ preference: 10, exchange: "mx.hooks.test" }] }, "mx.hooks.test": { A: ["127.0.0.51"] } });
});

after(async () => {
  await peer?.close();
  await dns?.close();
  await app?.close();
});

function useWorker(t: TestContext, env: Record<string, string> = {}) {
  const w = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port), WEBHOOK_CA_FILE: testCaFile(), ...env }, logs);
  t.after(() => w.stop(5000));
  return w;
}

async function useReceiver(t: TestContext): Promise<WebhookReceiver> {
  const r = await startWebhookReceiver();
  t.after(() => r.close());
  return r;
}

async function startWebhookReceiverOn(t: TestContext, port: number): Promise<WebhookReceiver> {
  const r = await startWebhookReceiver("/hooks/sealpost", port);
  t.after(() => r.close());
  return r;
}

async function register(url: string, body: Record<string, unknown> = {}, key = admin): Promise<{ id: string; secret: string }> {
  const r = await app.call("POST", "/webhooks", { key, body: { url, ...body } });
  assert.equal(r.status, 201, r.body);
  return r.json() as { id: string; secret: string };
}

const headersOf = (h: Record<string, string | string[] | undefined>) =>
  ({ "webhook-id": String(h["webhook-id"]), "webhook-timestamp": String(h["webhook-timestamp"]), "webhook-signature": String(h["webhook-signature"]) });

const deliveryRows = async (endpointId: string) =>
  (await app.tdb.db.pool.query<{ id: string; state: string; attempts: number; next_attempt_at: Date; last_status: number | null; last_error: string | null }>(
    `SELECT id::text AS id, state, attempts, next_attempt_at, last_status, last_error FROM webhook_deliveries WHERE endpoint_id = $1::uuid ORDER BY id`, [endpointId])).rows;

/** Makes the endpoint's pending deliveries due now: the clock moved on to their next attempt. */
const advance = (endpointId: string) =>
  app.tdb.db.pool.query(`UPDATE webhook_deliveries SET next_attempt_at = now() WHERE endpoint_id = $1::uuid AND state = 'pending' AND lease_owner IS NULL`, [endpointId]);

test("an endpoint's secret is shown once; another key never sees the endpoint", async () => {
  const created = await register("https://hooks.shop.example/in", { event_types: ["message.delivered"], description: "shop" });
  assert.match(created.secret, /^whsec_[A-Za-z0-9+/]{32}$/);
  const shown = (await app.call("GET", `/webhooks/${created.id}`, { key: admin })).json() as Record<string, unknown>;
  assert.equal(shown.secret, undefined);
  assert.deepEqual(shown.event_types, ["message.delivered"]);
  const listed = (await app.call("GET", "/webhooks", { key: admin })).json() as { data: Array<Record<string, unknown>> };
  assert.ok(listed.data.some((w) => w.id === created.id) && listed.data.every((w) => w.secret === undefined));
  const other = (await app.createKey({ name: "other", scopes: ["admin"] })).key;
  assert.equal((await app.call("GET", `/webhooks/${created.id}`, { key: other })).status, 404);
  assert.deepEqual(((await app.call("GET", "/webhooks", { key: other })).json() as { data: unknown[] }).data, []);
  const patched = await app.call("PATCH", `/webhooks/${created.id}`, { key: admin, body: { enabled: false } });
  assert.equal(patched.status, 200, patched.body);
  assert.equal((patched.json() as { enabled: boolean }).enabled, false);
  assert.equal((await app.call("DELETE", `/webhooks/${created.id}`, { key: admin })).status, 200);
  assert.equal((await app.call("GET", `/webhooks/${created.id}`, { key: admin })).status, 404);
  const bad = await app.call("POST", "/webhooks", { key: admin, body: { url: "ftp://hooks.shop.example/in" } });
  assert.equal(bad.status, 422, bad.body);
  assert.equal((bad.json() as { errors: Array<{ path: string }> }).errors[0]!.path, "url");
});

test("a delivered message reaches the receiver signed per Standard Webhooks, with the attempt's TLS evidence", async (t) => {
  const receiver = await useReceiver(t);
  const hook = await register(receiver.url, { event_types: ["message.delivered"] });
  useWorker(t);
  const id = await sendMessage(app, admin, { to: "ann@hooks.test", tls: "required", tags: ["receipt"], metadata: { order: "1042" } });
  await waitForMessage(app, admin, id, ["delivered"], { logs });
  const got = await waitFor(() => receiver.received.find((r) => r.body.includes(id)), { what: "the delivered webhook" });

  const wh = new Webhook(hook.secret);
  const payload = wh.verify(got.body, headersOf(got.headers)) as { type: string; created_at: string; data: Record<string, any> };
  assert.equal(payload.type, "message.delivered");
  assert.equal(payload.data.message_id, id);
  assert.deepEqual(payload.data.recipient, { address: "ann@hooks.test", kind: "to" });
  assert.deepEqual(payload.data.metadata, { order: "1042" });
  assert.equal(payload.data.attempt.tls.used, true);
  assert.equal(payload.data.attempt.tls.verified, true);
  assert.equal(payload.data.smtp.code, 250);
  assert.equal(got.headers["content-type"], "application/json");
  // Its webhook-id is the event's id in GET /events.
  const listedDelivered = await waitFor(async () => {
    const page = (await app.call("GET", `/events?message_id=${id}&type=message.delivered`, { key: admin })).json() as { data: Array<{ id: string }> };
    return page.data[0];
  }, { what: "the delivered event listed" });
  assert.equal(got.headers["webhook-id"], listedDelivered.id);
  assert.equal(receiver.received.filter((r) => r.body.includes(id)).length, 1, "only the subscribed type was sent");

  // What the package refuses: a body changed in transit, a timestamp outside its tolerance.
  assert.throws(() => wh.verify(got.body.replace("ann@hooks.test", "eve@hooks.test"), headersOf(got.headers)));
  const stale = { ...headersOf(got.headers), "webhook-timestamp": String(Number(got.headers["webhook-timestamp"]) - 3600) };
  assert.throws(() => wh.verify(got.body, stale));

  const log = (await app.call("GET", `/webhooks/${hook.id}/deliveries`, { key: admin })).json() as { data: Array<{ state: string; attempt_log: Array<{ status_code: number }> }> };
  assert.deepEqual(log.data.map((d) => [d.state, d.attempt_log.map((a) => a.status_code)]), [["delivered", [200]]]);
});

test("after a secret rotation both signatures verify, each with its own secret", async (t) => {
  const receiver = await useReceiver(t);
  const hook = await register(receiver.url);
  const rotated = (await app.call("POST", `/webhooks/${hook.id}/rotate-secret`, { key: admin })).json() as { secret: string; previous_secret_valid_until: string };
  assert.notEqual(rotated.secret, hook.secret);
  assert.ok(Date.parse(rotated.previous_secret_valid_until) > Date.now() + 23 * 3_600_000);
  useWorker(t);
  const queued = await app.call("POST", `/webhooks/${hook.id}/test`, { key: admin });
  assert.equal(queued.status, 202, queued.body);
  const got = await waitFor(() => receiver.received[0], { what: "the test webhook" });
  const signatures = String(got.headers["webhook-signature"]).split(" ");
  assert.equal(signatures.length, 2);
  for (const secret of [rotated.secret, hook.secret]) {
    const payload = new Webhook(secret).verify(got.body, headersOf(got.headers)) as { type: string; data: { endpoint_id: string } };
    assert.deepEqual([payload.type, payload.data.endpoint_id], ["webhook.test", hook.id]);
    // Each secret verifies on its own signature alone.
    const own = signatures.filter((s) => { try { new Webhook(secret).verify(got.body, { ...headersOf(got.headers), "webhook-signature": s }); return true; } catch { return false; } });
    assert.equal(own.length, 1);
  }
});

test("a receiver answering 500, then 503 with Retry-After, then 200: retried on the schedule, delivered once", async (t) => {
  const receiver = await useReceiver(t);
  receiver.script({ status: 500 }, { status: 503, headers: { "retry-after": "600" } });
  const hook = await register(receiver.url);
  useWorker(t);
  await app.call("POST", `/webhooks/${hook.id}/test`, { key: admin });
  const first = await waitFor(async () => (await deliveryRows(hook.id)).find((d) => d.attempts === 1 && d.state === "pending" && d.last_status === 500), { what: "the first failure recorded" });
  const wait1 = first.next_attempt_at.getTime() - receiver.received[0]!.at;
  assert.ok(wait1 >= RETRY_SCHEDULE_MS[0]! - 1000 && wait1 <= RETRY_SCHEDULE_MS[0]! + 1000, `second attempt due ${wait1} ms after the first`);
  await advance(hook.id);
  const second = await waitFor(async () => (await deliveryRows(hook.id)).find((d) => d.attempts === 2 && d.state === "pending" && d.last_status === 503), { what: "the second failure recorded" });
  const wait2 = second.next_attempt_at.getTime() - receiver.received[1]!.at;
  assert.ok(wait2 >= 599_000 && wait2 <= 601_000, `Retry-After: 600, longer than the schedule, honoured (next attempt ${wait2} ms later, the schedule says ${RETRY_SCHEDULE_MS[1]})`);
  await advance(hook.id);
  await waitFor(async () => (await deliveryRows(hook.id))[0]?.state === "delivered", { what: "delivered on the third attempt" });
  assert.equal(receiver.received.length, 3);
  assert.equal(new Set(receiver.received.map((r) => r.headers["webhook-id"])).size, 1, "one webhook-id across retries");
  const log = (await app.call("GET", `/webhooks/${hook.id}/deliveries`, { key: admin })).json() as { data: Array<{ attempt_log: Array<{ status_code: number }> }> };
  assert.deepEqual(log.data[0]!.attempt_log.map((a) => a.status_code), [500, 503, 200]);
});

test("410 Gone disables the endpoint at once, with a webhook.disabled event; a slow receiver is a failed attempt", async (t) => {
  const receiver = await useReceiver(t);
  receiver.script({ status: 200, delayMs: 3000 }, { status: 410 });
  const hook = await register(receiver.url);
  useWorker(t, { WEBHOOK_TIMEOUT_MS: "1000" });
  await app.call("POST", `/webhooks/${hook.id}/test`, { key: admin });
  const slow = await waitFor(async () => (await deliveryRows(hook.id)).find((d) => d.attempts === 1 && d.state === "pending" && d.last_error), { what: "the timeout recorded" });
  assert.match(slow.last_error!, /no answer within 1000 ms/);
  await advance(hook.id);
  await waitFor(async () => (await deliveryRows(hook.id))[0]?.state === "failed", { what: "the delivery failed for good" });
  const shown = (await app.call("GET", `/webhooks/${hook.id}`, { key: admin })).json() as { enabled: boolean; disabled_reason: string };
  assert.deepEqual([shown.enabled, shown.disabled_reason], [false, "the endpoint answered 410 Gone"]);
  await waitFor(async () => {
    const page = (await app.call("GET", "/events?type=webhook.disabled", { key: admin })).json() as { data: Array<{ data: { endpoint_id: string; reason: string } }> };
    return page.data.some((e) => e.data.endpoint_id === hook.id && e.data.reason === "the endpoint answered 410 Gone");
  }, { what: "the webhook.disabled event listed" });
  // Nothing goes to a disabled endpoint; enabled again, a failed delivery can be retried by hand.
  assert.equal((await app.call("POST", `/webhooks/${hook.id}/retry`, { key: admin, body: {} })).status, 409);
  assert.equal((await app.call("PATCH", `/webhooks/${hook.id}`, { key: admin, body: { enabled: true } })).status, 200);
  const retried = await app.call("POST", `/webhooks/${hook.id}/retry`, { key: admin, body: {} });
  assert.deepEqual(retried.json(), { retried: 1 });
  await waitFor(async () => (await deliveryRows(hook.id))[0]?.state === "delivered", { what: "the retried delivery delivered" });
});

test("a receiver that is down: each refused connection is a failed attempt, retried until it is back", async (t) => {
  // A port nothing listens on: the receiver is down.
  const down = await startWebhookReceiver();
  const url = down.url;
  await down.close();
  const hook = await register(url);
  useWorker(t);
  await app.call("POST", `/webhooks/${hook.id}/test`, { key: admin });
  const first = await waitFor(async () => (await deliveryRows(hook.id)).find((d) => d.attempts === 1 && d.state === "pending" && d.last_error), { what: "the refused attempt recorded" });
  assert.match(first.last_error!, /ECONNREFUSED/);
  assert.equal(first.last_status, null);
  const shown = (await app.call("GET", `/webhooks/${hook.id}`, { key: admin })).json() as { enabled: boolean; failing_since: string | null };
  assert.equal(shown.enabled, true);
  assert.ok(shown.failing_since, "the failing streak has begun");
  // Back up on the same port: the next attempt delivers, and the streak ends.
  const port = Number(new URL(url).port);
  const back = await startWebhookReceiverOn(t, port);
  await advance(hook.id);
  await waitFor(async () => (await deliveryRows(hook.id))[0]?.state === "delivered", { what: "delivered once the receiver is back" });
  assert.equal(back.received.length, 1);
  assert.equal(((await app.call("GET", `/webhooks/${hook.id}`, { key: admin })).json() as { failing_since: string | null }).failing_since, null);
});

test("an endpoint whose every attempt failed for five days is disabled", async (t) => {
  const receiver = await useReceiver(t);
  receiver.script({ status: 500 });
  const hook = await register(receiver.url);
  await app.tdb.db.pool.query(`UPDATE webhook_endpoints SET failing_since = now() - interval '5 days 1 minute' WHERE id = $1::uuid`, [hook.id]);
  useWorker(t);
  await app.call("POST", `/webhooks/${hook.id}/test`, { key: admin });
  await waitFor(async () => (await deliveryRows(hook.id))[0]?.state === "failed", { what: "the delivery failed" });
  const shown = (await app.call("GET", `/webhooks/${hook.id}`, { key: admin })).json() as { enabled: boolean; disabled_reason: string };
  assert.equal(shown.enabled, false);
  assert.match(shown.disabled_reason, /every attempt failed for 5 days/);
});

test("a delivery held by a worker that died is sent once its lease ends, under the same webhook-id", async (t) => {
  const receiver = await useReceiver(t);
  const hook = await register(receiver.url, { event_types: ["message.scheduled"] });
  const id = await sendMessage(app, admin, { to: "ann@hooks.test", send_at: new Date(Date.now() + 3_600_000).toISOString() });
  // A worker claimed it (a lease of one second) and was killed before it could answer.
  const held = await claimWebhookDeliveries(app.tdb.db.pool, "dead-worker", 1000, 1000);
  const mine = held.find((d) => d.endpointId === hook.id)!;
  assert.ok(mine, "the dead worker held the delivery");
  useWorker(t);
  const got = await waitFor(() => receiver.received[0], { what: "the delivery after the lease", timeoutMs: 10_000 });
  assert.equal(got.headers["webhook-id"], `evt_${mine.event!.id}`);
  assert.equal((new Webhook(hook.secret).verify(got.body, headersOf(got.headers)) as { data: { message_id: string } }).data.message_id, id);
  assert.equal((await deliveryRows(hook.id))[0]!.attempts, 2, "the lost attempt counts");
});

test("a worker killed (SIGKILL) while its receiver is still answering: another sends the event again after the lease, same webhook-id", async (t) => {
  const receiver = await useReceiver(t);
  receiver.script({ status: 200, delayMs: 4000 });
  const hook = await register(receiver.url);
  const doomed = spawnTestWorker(t, app.tdb, { WORKER_ID: "doomed", DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port), WEBHOOK_CA_FILE: testCaFile(), WEBHOOK_TIMEOUT_MS: "1000" });
  await waitFor(() => doomed.output.join("").includes("ready "), { what: "the child worker", timeoutMs: 20_000 });
  await app.call("POST", `/webhooks/${hook.id}/test`, { key: admin });
  await waitFor(() => receiver.received[0], { what: "the doomed worker's request", timeoutMs: 10_000 });
  doomed.child.kill("SIGKILL");
  await doomed.exited;
  const held = (await deliveryRows(hook.id))[0]!;
  assert.equal(held.state, "pending", "the kill left the delivery unanswered");
  const lease = held.next_attempt_at.getTime() - receiver.received[0]!.at;
  assert.ok(lease > 9_000 && lease < 12_000, `lease ${lease} ms: the timeout (1 s) plus 10 s`);
  // The lease is what decides: for the test, the clock moves to its end.
  useWorker(t, { WEBHOOK_TIMEOUT_MS: "1000" });
  await app.tdb.db.pool.query(`UPDATE webhook_deliveries SET next_attempt_at = now() WHERE endpoint_id = $1::uuid`, [hook.id]);
  await waitFor(async () => (await deliveryRows(hook.id))[0]?.state === "delivered", { what: "sent again by the other worker" });
  assert.equal(receiver.received.length, 2, "a duplicate, never a loss");
  assert.equal(receiver.received[0]!.headers["webhook-id"], receiver.received[1]!.headers["webhook-id"]);
  assert.equal((await deliveryRows(hook.id))[0]!.attempts, 2);
});

test("the schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h, then failed", () => {
  const at = new Date("2026-12-05T00:00:00Z");
  const waits = [];
  for (let attempt = 1; attempt < MAX_WEBHOOK_ATTEMPTS; attempt++) waits.push(nextStep({ attempt, failingSince: at }, 500, null, at).retryAt!.getTime() - at.getTime());
  assert.deepEqual(waits.map((ms) => ms / 1000), [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]);
  assert.deepEqual(nextStep({ attempt: MAX_WEBHOOK_ATTEMPTS, failingSince: at }, 500, null, at), { state: "failed", retryAt: null, disable: null });
  assert.equal(nextStep({ attempt: 3, failingSince: null }, 204, null, at).state, "delivered");
  assert.equal(nextStep({ attempt: 1, failingSince: null }, 302, null, at).state, "pending", "a redirect is not followed: a failure");
});

test("in production, targets that name or resolve to loopback, private, link-local or metadata addresses are refused", async (t) => {
  const production = { production: true, allowed: new BlockList() };
  for (const u of ["https://127.0.0.1/x", "https://10.0.0.1/x", "https://169.254.169.254/latest/meta-data", "https://[::1]/x", "https://[::ffff:127.0.0.1]/x",
    "https://192.168.1.10/x", "https://100.64.0.1/x", "https://[fd00::1]/x", "https://localhost/x", "http://shop.example/x"])
    assert.ok(refusedUrl(new URL(u), production), `${u} allowed`);
  assert.equal(refusedUrl(new URL("https://203.0.113.10/x"), production), null);
  assert.equal(refusedAddress("2001:4860:4860::8888", production), null);
  const allowed = new BlockList();
  allowed.addSubnet("10.1.0.0", 16, "ipv4");
  assert.equal(refusedAddress("10.1.2.3", { production: true, allowed }), null);
  assert.ok(refusedAddress("10.2.0.1", { production: true, allowed }));

  // A name that resolves to loopback (here through a DNS server of our own) is refused
  // before connecting, whatever the URL looks like.
  const receiver = await useReceiver(t);
  const rebind = await startFakeDns({ "hooks.rebind.test": { A: ["127.0.0.1"] } });
  t.after(() => rebind.close());
  const resolver = new Resolver();
  resolver.setServers([rebind.address]);
  const resolveAll = async (h: string) => (await resolver.resolve4(h)).map((address) => ({ address, family: 4 }));
  const byName = new URL(receiver.url.replace("127.0.0.1", "hooks.rebind.test"));
  const r = await postWebhook(byName, {}, "{}", { policy: production, timeoutMs: 2000, ca: [app.ca], resolveAll });
  assert.match(r.error ?? "", /target refused/);
  assert.equal(receiver.received.length, 0);
  // A redirect is never followed, even to where the first request was allowed to go.
  const loopbackAllowed = new BlockList();
  loopbackAllowed.addSubnet("127.0.0.0", 8, "ipv4");
  receiver.script({ status: 302, headers: { location: "https://127.0.0.1:1/admin" } });
  const redirected = await postWebhook(new URL(receiver.url), {}, "{}", { policy: { production: true, allowed: loopbackAllowed }, timeoutMs: 2000, ca: [app.ca] });
  assert.equal(redirected.status, 302);
  assert.match(redirected.error ?? "", /redirect to https:\/\/127\.0\.0\.1:1\/admin not followed/);
  assert.equal(receiver.received.length, 1);

  // The API refuses such endpoints in production configuration.
  const prod = await startTestApp({ NODE_ENV: "production", SMTP_TLS_POLICY: "required" });
  t.after(() => prod.close());
  const key = (await prod.createKey({ name: "prod", scopes: ["admin"] })).key;
  for (const u of ["https://127.0.0.1/x", "https://10.0.0.1/x", "https://169.254.169.254/latest", "https://[::1]/x", "https://localhost/x", "https://app.localhost/x"]) {
    const res = await prod.call("POST", "/webhooks", { key, body: { url: u } });
    assert.equal(res.status, 422, `${u}: ${res.body}`);
    assert.equal((res.json() as { errors: Array<{ path: string }> }).errors[0]!.path, "url");
  }
});
