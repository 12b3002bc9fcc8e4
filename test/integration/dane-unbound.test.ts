// DANE against a real DNSSEC-validating resolver (issue 15, item 2): scripts/dane-check.ts
// signs zones with ldns, has Unbound validate them, and reads them with the DANE client; then a
// whole delivery goes through Unbound (test/helpers/unbound.ts).
// The other DANE tests use a fake resolver that sets the AD flag where told; this one shows
// the client reads a real validator's answers right: AD on validated data, SERVFAIL for a
// record changed after signing, no AD for an unsigned zone. Needs Debian's unbound and
// ldnsutils (CI installs them).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { spawnCli } from "../helpers/cli-process.ts";
import { startValidatingResolver } from "../helpers/unbound.ts";
import { startTestApp } from "../helpers/app.ts";
import { startPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { issueCertificate } from "../../src/tls/certificates.ts";
import { createDaneResolver, matchTlsa } from "../../src/worker/dane.ts";
import { createSocket } from "node:dgram";
import dnsPacket from "dns-packet";

test("Unbound validates a signed TLSA record, refuses a bogus one, and an unsigned zone is not DANE", async () => {
  const p = spawnCli(process.execPath, ["scripts/dane-check.ts"], {});
  const { code } = await p.exited;
  const out = p.output();
  assert.equal(code, 0, out);
  for (const line of [
    /^pass {2}signed zone: TLSA validated \(AD\): \["3 1 1 [0-9a-f]{64}"\]$/m,
    /^pass {2}the certificate matches the validated record: "3 1 1"$/m,
    /^pass {2}record changed after signing: bogus, deferred: .*SERVFAIL/m,
    /^pass {2}unsigned zone: not DANE: .*no AD flag/m,
  ]) assert.match(out, line);
});

test("a whole delivery through Unbound: the signed TLSA record verifies a self-signed MX certificate; a bogus one defers with nothing sent", async (t) => {
  const pem = issueCertificate({ names: ["mx.deliver.test", "mx.bogusmx.test"] });
  const spki = Buffer.from(new X509Certificate(pem.cert).publicKey.export({ type: "spki", format: "der" }));
  const tlsa = createHash("sha256").update(spki).digest("hex");
  const records = (name: string) => [`@ IN MX 10 mx.${name}.`, "mx IN A 127.0.18.2", `_25._tcp.mx IN TLSA 3 1 1 ${tlsa}`];
  const resolver = await startValidatingResolver([
    { name: "deliver.test", records: records("deliver.test") },
    { name: "bogusmx.test", records: records("bogusmx.test"), tamper: { from: tlsa, to: "ab".repeat(32) } },
  ]);
  t.after(() => resolver.close());
  const app = await startTestApp();
  t.after(() => app.close());
  const peer = await startPeer({ ip: "127.0.18.2", certificate: pem });
  t.after(() => peer.close());
  const key = (await app.createKey()).key;
  const logs: string[] = [];
  const w = startTestWorker(app.tdb, { DNS_SERVERS: resolver.address, DANE_RESOLVER: resolver.address, SMTP_MX_PORT: String(peer.port), MTA_STS: "off" }, logs);
  t.after(() => w.stop(5000));

  const good = await sendMessage(app, key, { to: "alice@deliver.test" });
  const bad = await sendMessage(app, key, { to: "bob@bogusmx.test" });
  const a = (await waitForMessage(app, key, good, ["delivered"], { logs })).recipients[0]!.delivery_attempts.at(-1)!;
  assert.deepEqual([a.policy, a.policy_source, a.tls.verified, a.policy_detail?.verified_by, a.policy_detail?.matched], ["required", "dane", true, "dane", `3 1 1 ${tlsa}`]);
  const b = (await waitForMessage(app, key, bad, ["deferred"], { logs })).recipients[0]!.delivery_attempts.at(-1)!;
  assert.deepEqual([b.mx_host, b.policy_source, b.policy_detail?.dane.state], [null, "dane", "lookup_failed"]);
  assert.equal(peer.received.filter((m) => m.to.includes("bob@bogusmx.test")).length, 0);
});

test("an answer too large for UDP comes truncated and is read over TCP, still validated", async (t) => {
  const pem = issueCertificate({ names: ["mx.big.test"] });
  const der = new X509Certificate(pem.cert).raw.toString("hex");
  // Three full-certificate records (about 800 bytes each) and their signature: over 512 bytes.
  const resolver = await startValidatingResolver([
    { name: "big.test", records: ["mx IN A 127.0.0.1", ...[0, 1, 2].map((n) => `_25._tcp.mx IN TLSA 3 0 0 ${n === 0 ? der : der.slice(0, -2) + String(n).padStart(2, "0")}`)] },
  ], { maxUdpSize: 512 });
  t.after(() => resolver.close());
  // Over UDP the answer is truncated (TC), so the records can only have come over TCP.
  const udp = await new Promise<dnsPacket.DecodedPacket>((resolve, reject) => {
    const s = createSocket("udp4");
    const timer = setTimeout(() => (s.close(), reject(new Error("no UDP answer"))), 3000);
    s.on("message", (m) => (clearTimeout(timer), s.close(), resolve(dnsPacket.decode(m))));
    s.send(dnsPacket.encode({ type: "query", id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "TLSA", name: "_25._tcp.mx.big.test", class: "IN" }],
      additionals: [{ type: "OPT", name: ".", udpPayloadSize: 1232, flags: dnsPacket.DNSSEC_OK } as dnsPacket.Answer] }), resolver.port, resolver.host);
  });
  assert.equal(udp.flag_tc, true, "the UDP answer is truncated");
  const r = await createDaneResolver({ host: resolver.host, port: resolver.port }).tlsa("mx.big.test");
  assert.equal(r.kind, "secure", JSON.stringify(r));
  if (r.kind === "secure") {
    assert.equal(r.records.length, 3);
    assert.ok("matched" in matchTlsa(r.records, [new X509Certificate(pem.cert).raw], "mx.big.test"));
  }
});
