// The bounce walk-through of the README ("Try the bounces", issue 13), run as a user runs it:
// the sink script with its zone-file DNS and its DSNs, `sealpost start` with the bounce
// receiver on the embedded database (no DATABASE_URL, as in the README), the CLI for the
// domain and the key against that same DATA_DIR, the webhook receiver script that checks
// signatures with the standardwebhooks package, and curl's requests over HTTPS. A message to
// a mailbox the sink then bounces ends `bounced`, the address is on the suppression list as
// a hard bounce, the next message to it is `suppressed`, and the webhook receiver verified
// an event for each step. A second endpoint, the tests' HTTPS receiver (a certificate from
// the test CA, trusted through WEBHOOK_CA_FILE), gets the same events for their contents.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, spawnCli, type CliProcess } from "../helpers/cli-process.ts";
import { request } from "../helpers/https-client.ts";
import { waitFor } from "../helpers/wait.ts";
import { startWebhookReceiver } from "../helpers/webhook-receiver.ts";
import { testCaFile } from "../helpers/worker.ts";

/** Runs a sealpost command to its end; its exit code and output. */
async function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const p = spawnCli(process.execPath, ["src/cli.ts", ...args], env);
  const { code } = await p.exited;
  return { code, out: p.output() };
}

test("README walk-through: delivered, bounced by a DSN, suppressed, and a verified webhook for each step", { timeout: 180_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "sp-walk-"));
  const [sinkPort, dnsPort, inboundPort, apiPort, hookPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const zoneFile = join(dir, "zone.txt");
  const procs: CliProcess[] = [];
  t.after(async () => {
    await Promise.all(procs.map((p) => p.kill()));
    rmSync(dir, { recursive: true, force: true });
  });
  const base = { CERTS_DIR: join(dir, "certs"), DATA_DIR: join(dir, "data") };

  // Terminal 1: the sink, with DNS from the zone file and DSNs back to the bounce receiver.
  const sink = spawnCli(process.execPath, ["scripts/smtp-sink.ts"], {
    ...base, SINK_PORT: String(sinkPort), SINK_DNS: `127.0.0.1:${dnsPort}`, SINK_ZONE: zoneFile, SINK_BOUNCE_TO: `127.0.0.1:${inboundPort}`,
  });
  procs.push(sink);
  await sink.waitForLine(/STARTTLS sink on localhost/, "the sink to listen");
  await sink.waitForLine(/sink DNS on 127\.0\.0\.1/, "the sink's DNS");

  // Terminal 2: sealpost, relaying to the sink, its DNS the sink's, the bounce receiver on.
  const env = {
    ...base, PORT: String(apiPort), HOST: "127.0.0.1",
    SMTP_RELAY_URL: `smtp://localhost:${sinkPort}`, SMTP_CA_FILE: join(dir, "certs", "ca.crt"), DNS_SERVERS: `127.0.0.1:${dnsPort}`,
    BOUNCE_MX_HOST: "localhost", INBOUND_LISTEN: `127.0.0.1:${inboundPort}`, WORKER_POLL_MS: "50", WEBHOOK_CA_FILE: testCaFile(),
  };
  const sealpost = spawnCli(process.execPath, ["src/cli.ts", "start"], env);
  procs.push(sealpost);
  await sealpost.waitForLine(/API listening/, "the API to listen");
  await sealpost.waitForLine(/bounce receiver listening/i, "the bounce receiver to listen");

  const created = await cli(["keys", "create", "--name", "shop", "--scopes", "send,read,admin"], env);
  assert.equal(created.code, 0, created.out);
  const key = created.out.trim().split("\n").at(-1)!;
  assert.match(key, /^sp_[0-9a-f]{16}_[a-z2-7]{52}$/);

  // The domain with its bounce domain; its records into the zone file the sink answers from; verified.
  const added = await cli(["domains", "add", "shop.example", "--bounce-domain", "bounces.shop.example"], env);
  assert.equal(added.code, 0, added.out);
  const zone = await cli(["domains", "show", "shop.example", "--zone"], env);
  assert.equal(zone.code, 0, zone.out);
  writeFileSync(zoneFile, zone.out + "\n");
  assert.match(zone.out, /^bounces\.shop\.example\. 3600 IN MX 10 localhost\.$/m);
  assert.match(zone.out, /^sp\d{6}r\._domainkey\.shop\.example\. 3600 IN TXT "v=DKIM1; k=rsa; p=[^"]{200,}" "[^"]+"/m, "the RSA key split in 255-character strings");
  const verified = await cli(["domains", "verify", "shop.example"], env);
  assert.equal(verified.code, 0, verified.out);
  assert.match(verified.out, /^shop\.example: verified; bounce domain bounces\.shop\.example: verified$/m);

  const ca = readFileSync(join(dir, "certs", "ca.crt"));
  const api = (method: string, path: string, body?: unknown) =>
    request(`https://localhost:${apiPort}${path}`, { method, ca, headers: { authorization: `Bearer ${key}` }, ...(body ? { body } : {}) });

  // Terminal 3: the webhook receiver, checking each signature with standardwebhooks.
  const hook = await api("POST", "/webhooks", { url: `http://localhost:${hookPort}/hooks`, event_types: ["message.delivered", "message.bounced", "message.suppressed"] });
  assert.equal(hook.status, 201, hook.body);
  const receiver = spawnCli(process.execPath, ["scripts/webhook-receiver.ts"], { PORT: String(hookPort), SEALPOST_WEBHOOK_SECRET: hook.json().secret });
  procs.push(receiver);
  await receiver.waitForLine(/webhook receiver on http:\/\/localhost/, "the webhook receiver");
  const https = await startWebhookReceiver();
  t.after(() => https.close());
  const hook2 = await api("POST", "/webhooks", { url: https.url, event_types: ["message.delivered", "message.bounced", "message.suppressed"] });
  assert.equal(hook2.status, 201, hook2.body);

  const send = () => api("POST", "/send", {
    from: "Shop <orders@shop.example>", to: "bounce-me@example.com", subject: "Your receipt", text: "Thank you for your order.",
  }).then((r) => (assert.equal(r.status, 202, r.body), r.json()));
  const first = await send();
  // Delivered to the sink, which then sends the DSN back: the message ends bounced.
  const bounced = await waitFor(async () => {
    const m = (await api("GET", `/messages/${first.id}`)).json();
    return m.status === "bounced" ? m : null;
  }, { what: "the message to be bounced by the sink's DSN", timeoutMs: 30_000 }).catch((err: Error) => {
    throw new Error(`${err.message}\nsink:\n${sink.output()}\nsealpost:\n${sealpost.lines.slice(-15).join("\n")}`);
  });
  assert.equal(bounced.recipients[0].delivery_attempts[0].outcome, "delivered", "it was delivered first");
  assert.equal(bounced.recipients[0].last_response.enhanced_code, "5.1.1");
  assert.match(bounced.recipients[0].last_response.text, /^reported later: 550 5\.1\.1 <bounce-me@example\.com>: /);
  const got = JSON.parse(sink.lines.find((l) => l.includes('"received"'))!);
  assert.match(got.from, /^bounce\+[a-z2-7]+@bounces\.shop\.example$/, "the envelope sender was the bounce address");
  assert.equal(got.secure, true, "sealpost relayed over STARTTLS");
  const dsnSent = JSON.parse(sink.lines.find((l) => l.includes('"dsn_sent"'))!);
  assert.deepEqual([dsnSent.to, dsnSent.about], [got.from, "bounce-me@example.com"], "the DSN went back to that bounce address");

  const list = (await api("GET", "/suppressions?reason=hard_bounce")).json();
  assert.deepEqual(
    list.data.map((s: { address: string; domain: string; reason: string; message_id: string; reply: { enhanced_code: string } }) => [s.address, s.domain, s.reason, s.message_id, s.reply.enhanced_code]),
    [["bounce-me@example.com", "shop.example", "hard_bounce", first.id, "5.1.1"]],
  );

  const second = await send();
  assert.equal(second.status, "suppressed");
  assert.deepEqual(second.suppressed, ["bounce-me@example.com"]);

  // Webhook deliveries run concurrently and may arrive out of order (Standard Webhooks
  // promises no order); the event ids (webhook-id, evt_<n>) give the order of the steps.
  const eventNumber = (id: string) => Number(/^evt_(\d+)$/.exec(id)?.[1] ?? NaN);
  const verifiedLines = await waitFor(() => {
    const l = receiver.lines.filter((x) => x.startsWith("verified "));
    return l.length >= 3 ? l : null;
  }, { what: "three verified webhooks", timeoutMs: 30_000 });
  const byEvent = verifiedLines.map((l) => l.split(" ")).sort((a, b) => eventNumber(a[1]!) - eventNumber(b[1]!));
  assert.deepEqual(byEvent.map((w) => [w[2], w[3]]), [
    ["message.delivered", "bounce-me@example.com"], ["message.bounced", "bounce-me@example.com"], ["message.suppressed", "bounce-me@example.com"],
  ]);
  assert.ok(!receiver.lines.some((l) => l.startsWith("REJECTED")), receiver.output());

  type Delivered = { id: string; type: string; data: { message_id: string; recipient: { address: string }; smtp: { code: number | null; enhanced_code: string | null } | null } };
  const overHttps = await waitFor(() => (https.received.length >= 3 ? https.received : null), { what: "three webhooks over HTTPS", timeoutMs: 30_000 });
  const events = overHttps.map((h): Delivered => ({ id: String(h.headers["webhook-id"]), ...JSON.parse(h.body) }))
    .sort((a, b) => eventNumber(a.id) - eventNumber(b.id));
  assert.deepEqual(events.map((e) => [e.type, e.data.message_id, e.data.recipient.address, e.data.smtp?.enhanced_code ?? null]), [
    ["message.delivered", first.id, "bounce-me@example.com", "2.0.0"],
    ["message.bounced", first.id, "bounce-me@example.com", "5.1.1"],
    ["message.suppressed", second.id, "bounce-me@example.com", null],
  ]);
  assert.deepEqual(events.map((e) => e.id), byEvent.map((w) => w[1]), "both endpoints got the same events");
});
