// Prometheus metrics (issue 12): /metrics answers only with METRICS_TOKEN, or on a loopback
// listener; its counters move by exactly what the test sends and delivers, and the queue
// gauges say what the database holds.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, captureLogger, validSend, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { peerCertificate, startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { sendMessage } from "../helpers/messages.ts";
import { waitFor } from "../helpers/wait.ts";

import { loadConfig, ConfigError } from "../../src/config.ts";
import { enableMetrics, registry } from "../../src/metrics.ts";
import { queueStats } from "../../src/db/metrics.ts";
import { startMetricsListener } from "../../src/metrics-listener.ts";

const TOKEN = "metrics-token-0123456789abcdef";
let app: TestApp;
let key: string;
let dns: FakeDns;
let peer: SmtpPeer;

before(async () => {
  app = await startTestApp({ METRICS_TOKEN: TOKEN });
  key = (await app.createKey()).key;
  enableMetrics(() => queueStats(app.tdb.db.pool));
  peer = await startPeer({ ip: "127.0.0.61", certificate: peerCertificate("ca-signed", "mx.metrics.test") });
  dns = await startFakeDns({ "metrics.test": { MX: [{ preference: 10, exchange: "mx.metrics.test" }] }, "mx.metrics.test": { A: ["127.0.0.61"] } });
});

after(async () => {
  await peer?.close();
  await dns?.close();
  await app?.close();
});

async function scrape(): Promise<string> {
  const r = await app.call("GET", "/metrics", { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 200, r.body);
  assert.match(String(r.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
  return r.body;
}

/** The value of one series, 0 when it has not appeared yet. */
function value(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

test("/metrics refuses without the token, and with a wrong one", async () => {
  const attempts: Array<Record<string, string>> = [{}, { authorization: "Bearer wrong-token-0123456789" }, { authorization: TOKEN }, { authorization: `Bearer ${key}` }];
  for (const headers of attempts) {
    const r = await app.call("GET", "/metrics", { headers });
    assert.equal(r.status, 401, JSON.stringify(headers));
    assert.match(String(r.headers["www-authenticate"]), /^Bearer /);
    assert.doesNotMatch(r.body, /sealpost_/);
  }
  const off = await startTestApp();
  try {
    assert.equal((await off.call("GET", "/metrics", { headers: { authorization: `Bearer ${TOKEN}` } })).status, 404, "without METRICS_TOKEN there is no /metrics");
  } finally {
    await off.close();
  }
});

test("accepted, HTTP and queue figures move by exactly what was sent", async () => {
  const before = await scrape();
  const accepted0 = value(before, "sealpost_messages_accepted_total");
  const sent0 = value(before, 'sealpost_http_requests_total{method="POST",route="/send",status="202"}');
  for (let i = 0; i < 3; i++) await sendMessage(app, key, { to: `q${i}@metrics.test` });
  const batch = await app.call("POST", "/send/batch", { key, body: { messages: [validSend({ to: "b1@metrics.test" }), validSend({ to: "not an address" })] } });
  assert.equal(batch.status, 200, batch.body);
  assert.equal((await app.call("POST", "/send", { key, body: { to: "x" } })).status, 422);
  const after = await scrape();
  assert.equal(value(after, "sealpost_messages_accepted_total") - accepted0, 4);
  assert.equal(value(after, 'sealpost_http_requests_total{method="POST",route="/send",status="202"}') - sent0, 3);
  assert.ok(value(after, 'sealpost_http_requests_total{method="POST",route="/send",status="422"}') >= 1);
  // No worker runs: the four wait, due now.
  const { rows } = await app.tdb.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM deliveries WHERE state = 'pending' AND next_attempt_at <= now() AND lease_owner IS NULL`);
  assert.equal(value(after, "sealpost_queue_due"), Number(rows[0]!.n));
  assert.ok(Number(rows[0]!.n) >= 4);
  assert.ok(value(after, "sealpost_queue_oldest_due_age_seconds") > 0);
  assert.match(after, /^process_cpu_seconds_total /m, "process metrics");
});

test("deliveries are counted by outcome and TLS, attempts timed; the loopback listener serves the same registry", async (t) => {
  const w = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port) });
  t.after(() => w.stop(5000));
  const series = 'sealpost_deliveries_total{outcome="delivered",tls="verified"}';
  await waitFor(async () => value(await registry.metrics(), "sealpost_queue_due") === 0, { what: "the earlier messages delivered" });
  await w.idle();
  const before = value(await registry.metrics(), series);
  const attempts0 = value(await registry.metrics(), "sealpost_smtp_attempt_duration_seconds_count");
  for (let i = 0; i < 5; i++) await sendMessage(app, key, { to: `d${i}@metrics.test`, tls: "required" });
  await waitFor(async () => value(await registry.metrics(), series) - before === 5, { what: "five verified deliveries counted" });
  assert.equal(value(await registry.metrics(), "sealpost_smtp_attempt_duration_seconds_count") - attempts0, 5);

  const logs: string[] = [];
  const listener = await startMetricsListener(loadConfig({ NODE_ENV: "test", METRICS_LISTEN: "127.0.0.1:0" }), captureLogger(logs, "info"));
  assert.ok(listener);
  t.after(() => listener.close());
  const r = await fetch(listener.url);
  assert.equal(r.status, 200);
  assert.equal(value(await r.text(), series), value(await registry.metrics(), series));
  assert.equal((await fetch(listener.url.replace("/metrics", "/other"))).status, 404);

  // Port in use: one line naming the variable.
  const port = new URL(listener.url).port;
  await assert.rejects(startMetricsListener(loadConfig({ NODE_ENV: "test", METRICS_LISTEN: `127.0.0.1:${port}` }), captureLogger(logs, "info")),
    (err: Error) => err instanceof ConfigError && /^METRICS_LISTEN: 127\.0\.0\.1:\d+ is in use/.test(err.message));
});

test("METRICS_LISTEN must be loopback; METRICS_TOKEN must be long enough", () => {
  assert.throws(() => loadConfig({ NODE_ENV: "test", METRICS_LISTEN: "0.0.0.0:9464" }), /METRICS_LISTEN.*loopback/);
  assert.throws(() => loadConfig({ NODE_ENV: "test", METRICS_TOKEN: "short" }), /METRICS_TOKEN.*16 characters/);

});
