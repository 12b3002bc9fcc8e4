// The bounce walk-through of the README ("Try the bounces", issue 13), run as a user runs it:
// the sink script with its zone-file DNS and its DSNs, `sealpost start` with the bounce
// receiver, the CLI for the domain and the key, the webhook receiver script that checks
// signatures with the standardwebhooks package, and curl's requests over HTTPS. A message to
// a mailbox the sink then bounces ends `bounced`, the address is on the suppression list as
// a hard bounce, the next message to it is `suppressed`, and the webhook receiver verified
// an event for each step.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestDatabase } from "../helpers/db.ts";
import { freePort, spawnCli, type CliProcess } from "../helpers/cli-process.ts";
import { request } from "../helpers/https-client.ts";
import { waitFor } from "../helpers/wait.ts";
import { TEST_DATA_KEY } from "../helpers/app.ts";

/** Runs a sealpost command to its end; its exit code and output. */
async function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const p = spawnCli(process.execPath, ["src/cli.ts", ...args], env);
  const { code } = await p.exited;
  return { code, out: p.output() };
}

test("README walk-through: delivered, bounced by a DSN, suppressed, and a verified webhook for each step", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  const dir = mkdtempSync(join(tmpdir(), "sp-walk-"));
  const [sinkPort, dnsPort, inboundPort, apiPort, hookPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const zoneFile = join(dir, "zone.txt");
  const procs: CliProcess[] = [];
  t.after(() => Promise.all(procs.map((p) => p.kill())));
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
    ...base, DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: TEST_DATA_KEY, PORT: String(apiPort), HOST: "127.0.0.1",
    SMTP_RELAY_URL: `smtp://localhost:${sinkPort}`, SMTP_CA_FILE: join(dir, "certs", "ca.crt"), DNS_SERVERS: `127.0.0.1:${dnsPort}`,
    BOUNCE_MX_HOST: "localhost", INBOUND_LISTEN: `127.0.0.1:${inboundPort}`, WORKER_POLL_MS: "50",
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
  const got = JSON.parse(sink.lines.find((l) => l.includes('"received"'))!);
  assert.match(got.from, /^bounce\+[A-Za-z0-9]+@bounces\.shop\.example$/, "the envelope sender was the bounce address");

  const list = (await api("GET", "/suppressions?reason=hard_bounce")).json();
  assert.deepEqual(list.data.map((s: { address: string; domain: string }) => [s.address, s.domain]), [["bounce-me@example.com", "shop.example"]]);

  const second = await send();
  assert.equal(second.status, "suppressed");
  assert.deepEqual(second.suppressed, ["bounce-me@example.com"]);

  const verifiedLines = await waitFor(() => {
    const l = receiver.lines.filter((x) => x.startsWith("verified "));
    return l.length >= 3 ? l : null;
  }, { what: "three verified webhooks", timeoutMs: 30_000 });
  assert.deepEqual(verifiedLines.map((l) => l.split(" ")[2]), ["message.delivered", "message.bounced", "message.suppressed"]);
  assert.ok(!receiver.lines.some((l) => l.startsWith("REJECTED")), receiver.output());
});
