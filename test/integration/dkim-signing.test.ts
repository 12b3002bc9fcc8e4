// DKIM signing end to end (issue 11): a verified sender domain's messages leave the worker
// with an RSA and an Ed25519 signature that verify, from the bytes the receiving peer got,
// with two verifiers that are not our code: mailauth's dkimVerify against the fake DNS,
// and Python's dkimpy (Debian's python3-dkim). One changed byte of the body or of a
// signed header fails both; a domain that is not verified is not signed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { Resolver } from "node:dns/promises";
import { dkimVerify } from "mailauth/lib/dkim/verify.js";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns, type FakeZone } from "../helpers/fake-dns.ts";
import { startPeer, TEST_MX_HOST, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { createTxtResolver } from "../../src/worker/mx.ts";
import type { WorkerHandle } from "../../src/worker/worker.ts";

const BASE_ZONE: FakeZone = {
  "good.test": { MX: [{ preference: 10, exchange: TEST_MX_HOST }] },
  [TEST_MX_HOST]: { A: ["127.0.0.2"] },
};

let t: TestApp;
let dns: FakeDns;
let peer: SmtpPeer;
let worker: WorkerHandle;
let sender: string;
let admin: string;
let domainId: string;
let zone: FakeZone;
const workerLogs: string[] = [];

/** A TXT value as a zone file holds a long one: 255-byte character-strings. */
const split = (value: string) => value.match(/.{1,255}/g)!;

before(async () => {
  dns = await startFakeDns(structuredClone(BASE_ZONE));
  t = await startTestApp({}, { dns: createTxtResolver({ servers: [dns.address], timeoutMs: 500, tries: 1 }) });
  admin = (await t.createKey({ name: "admin", scopes: ["admin"] })).key;
  sender = (await t.createKey()).key;
  const d = (await t.call("POST", "/domains", { key: admin, body: { name: "shop.example", bounce_domain: "bounces.shop.example" } })).json() as {
    id: string; records: Array<{ name: string; type: string; value: string }>;
  };
  domainId = d.id;
  zone = { ...BASE_ZONE, ...Object.fromEntries(d.records.filter((r) => r.type === "TXT").map((r) => [r.name, { TXT: [split(r.value)] }])) };
  dns.setZone(structuredClone(zone)); // a copy: encoding an answer turns its strings into Buffers in place
  const v = await t.call("POST", `/domains/${d.id}/verify`, { key: admin });
  assert.equal((v.json() as { status: string }).status, "verified", v.body);
  peer = await startPeer({ ip: "127.0.0.2" });
  worker = startWorker();
});

const startWorker = () => startTestWorker(t.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port) }, workerLogs);

after(async () => {
  await worker?.stop(2000);
  await peer?.close();
  await dns?.close();
  await t?.close();
});

/** The bytes the peer received, and the selectors the message view says signed them. */
async function delivered(body: Record<string, unknown>): Promise<{ raw: Buffer; selectors: string[] }> {
  const id = await sendMessage(t, sender, body);
  const view = await waitForMessage(t, sender, id, ["delivered"], { logs: workerLogs });
  const selectors = view.recipients[0]!.delivery_attempts.at(-1)!.dkim.selectors;
  const got = peer.received.find((m) => m.data.includes(Buffer.from(String(body.subject).slice(0, 8))) || m.data.toString("latin1").includes(id));
  assert.ok(got, "the peer received the message");
  return { raw: got.data, selectors };
}

async function mailauthResults(raw: Buffer): Promise<Array<{ selector: string; result: string; algo: string }>> {
  const resolver = new Resolver();
  resolver.setServers([dns.address]);
  const r = await dkimVerify(raw, { resolver: (name: string, type: string) => resolver.resolve(name, type as "TXT") });
  return r.results.map((x: any) => ({ selector: x.selector, result: x.status.result, algo: x.algo }));
}

// dkimpy verifies signature by signature; its DNS lookups are answered from the same zone.
const PY = `
import sys, json, dkim
zone = json.loads(sys.argv[1])
msg = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    rec = zone.get(name.rstrip('.'), {}).get('TXT')
    return ''.join(rec[0]).encode() if rec else None
d = dkim.DKIM(msg)
n = len([h for h in d.headers if h[0].lower() == b'dkim-signature'])
def ok(i):
    try:
        return bool(d.verify(idx=i, dnsfunc=dnsfunc))
    except dkim.ValidationError:
        return False  # a body hash mismatch is raised, not returned
print(json.dumps([ok(i) for i in range(n)]))
`;

function dkimpyResults(raw: Buffer): boolean[] {
  const r = spawnSync("/usr/bin/python3", ["-c", PY, JSON.stringify(zone)], { input: raw, encoding: "utf8", timeout: 20_000 });
  assert.equal(r.status, 0, `dkimpy (Debian python3-dkim, python3-nacl) must run: ${r.stderr}${r.error?.message ?? ""}`);
  return JSON.parse(r.stdout) as boolean[];
}

test("a verified domain's message carries RSA and Ed25519 signatures that mailauth and dkimpy accept; one changed byte fails both", async () => {
  const subject = "Votre reçu – commande n° 1042 ✓";
  const longLine = `Lorem-${"x".repeat(1200)}-end`;
  const { raw, selectors } = await delivered({
    from: { name: "Boutique Été", address: "orders@shop.example" },
    to: "Alice <alice@good.test>",
    cc: "bob@good.test",
    reply_to: "support@shop.example",
    subject,
    text: `Merci pour votre commande.\n${longLine}\nÀ bientôt.`,
    html: `<p>Merci pour votre commande.</p><p>${longLine}</p>`,
    attachments: [{ filename: "reçu.pdf", content: Buffer.from("%PDF-1.4 receipt ".repeat(300)).toString("base64"), content_type: "application/pdf" }],
  });
  const headerText = raw.subarray(0, raw.indexOf("\r\n\r\n")).toString("latin1");
  assert.equal(headerText.match(/^DKIM-Signature:/gim)?.length, 2, "two signatures");
  assert.match(headerText, /^DKIM-Signature:[^]*?c=relaxed\/relaxed/m);

  const ma = await mailauthResults(raw);
  assert.deepEqual(ma.map((r) => r.result), ["pass", "pass"], JSON.stringify(ma));
  assert.deepEqual(ma.map((r) => r.algo).sort(), ["ed25519-sha256", "rsa-sha256"]);
  // The evidence names the selectors that signed, as the receiver saw them.
  assert.deepEqual([...selectors].sort(), ma.map((r) => r.selector).sort());
  assert.deepEqual(dkimpyResults(raw), [true, true]);

  // One byte of the body changed.
  const body = Buffer.from(raw);
  const at = body.indexOf("Merci", raw.indexOf("\r\n\r\n"));
  assert.ok(at > 0);
  body[at] = "N".charCodeAt(0);
  // mailauth reports a body hash mismatch as "neutral" (body hash did not verify), a bad signature as "fail".
  assert.deepEqual((await mailauthResults(body)).map((r) => r.result), ["neutral", "neutral"]);
  assert.deepEqual(dkimpyResults(body), [false, false]);

  // One byte of a signed header (the Reply-To address) changed.
  const header = Buffer.from(raw);
  const rt = header.indexOf("support@shop.example");
  assert.ok(rt > 0 && rt < raw.indexOf("\r\n\r\n"));
  header[rt] = "S".charCodeAt(0);
  assert.deepEqual((await mailauthResults(header)).map((r) => r.result), ["fail", "fail"]);
  assert.deepEqual(dkimpyResults(header), [false, false]);
});

test("a message from a domain that is not a verified sender domain is sent unsigned", async () => {
  const { raw, selectors } = await delivered({ from: "orders@elsewhere.example", to: "carol@good.test", subject: "Unsigned receipt", text: "hello" });
  assert.deepEqual(selectors, []);
  assert.doesNotMatch(raw.subarray(0, raw.indexOf("\r\n\r\n")).toString("latin1"), /^DKIM-Signature:/im);
});

interface DomainView {
  dkim: Array<{ selector: string; algorithm: string; state: string; retired_at: string | null }>;
  records: Array<{ purpose: string; type: string; name: string; value: string }>;
}

test("key rotation: new selectors sign only once they verify, the old ones stay published through the grace period, then retire", async () => {
  // A fresh worker each time signing should change: workers read a domain's keys once a minute.
  const restartWorker = async () => {
    await worker.stop(2000);
    worker = startWorker();
  };
  const selectorsIn = (v: DomainView, state: string) => v.dkim.filter((k) => k.state === state).map((k) => k.selector).sort();
  const r = await t.call("POST", `/domains/${domainId}/rotate-dkim`, { key: admin });
  assert.equal(r.status, 200, r.body);
  const rotated = r.json() as DomainView;
  const oldSelectors = selectorsIn(rotated, "active");
  const newSelectors = selectorsIn(rotated, "pending");
  assert.equal(oldSelectors.length, 2);
  assert.equal(newSelectors.length, 2);
  for (const s of newSelectors) assert.match(s, /^sp\d{6}[er]2$/, "a second key of the month gets its own selector");
  assert.equal(rotated.records.filter((x) => x.purpose === "dkim").length, 4, "the new records to publish beside the current ones");
  const again = await t.call("POST", `/domains/${domainId}/rotate-dkim`, { key: admin });
  assert.equal(again.status, 409, again.body);
  assert.match(again.body, /waiting for its DNS records/);

  // Not published yet: the current keys still sign.
  await restartWorker();
  const before = await delivered({ from: "orders@shop.example", to: "dan@good.test", subject: "Before the rotation", text: "old keys" });
  assert.deepEqual([...before.selectors].sort(), oldSelectors);
  assert.deepEqual((await mailauthResults(before.raw)).map((x) => x.result), ["pass", "pass"]);

  // Published and verified: the new keys take over, the old ones retire after the grace period.
  zone = { ...zone, ...Object.fromEntries(rotated.records.filter((x) => x.type === "TXT").map((x) => [x.name, { TXT: [split(x.value)] }])) };
  dns.setZone(structuredClone(zone));
  const v = await t.call("POST", `/domains/${domainId}/verify`, { key: admin });
  const verified = v.json() as { status: string; domain: DomainView };
  assert.equal(verified.status, "verified", v.body);
  assert.deepEqual(selectorsIn(verified.domain, "active"), newSelectors);
  assert.deepEqual(selectorsIn(verified.domain, "retiring"), oldSelectors);
  for (const k of verified.domain.dkim.filter((x) => x.state === "retiring")) {
    const inDays = (Date.parse(k.retired_at!) - Date.now()) / 86_400_000;
    assert.ok(inDays > 6.9 && inDays <= 7, `retires after DKIM_ROTATION_GRACE (7 days): ${k.retired_at}`);
  }
  assert.equal(verified.domain.records.filter((x) => x.purpose === "dkim").length, 4, "retiring keys stay listed: keep their records");

  await restartWorker();
  const after = await delivered({ from: "orders@shop.example", to: "erin@good.test", subject: "After the rotation", text: "new keys" });
  assert.deepEqual([...after.selectors].sort(), newSelectors);
  const ma = await mailauthResults(after.raw);
  assert.deepEqual(ma.map((x) => x.result), ["pass", "pass"]);
  assert.deepEqual(ma.map((x) => x.selector).sort(), newSelectors);
  assert.deepEqual(dkimpyResults(after.raw), [true, true]);
  // Mail signed before the switch still verifies during the grace period.
  assert.deepEqual((await mailauthResults(before.raw)).map((x) => x.result), ["pass", "pass"]);

  // The grace period is over (its end moved into the past): the old keys are retired, unlisted, unused.
  await t.tdb.db.pool.query("UPDATE dkim_keys SET retired_at = now() - interval '1 second' WHERE retired_at IS NOT NULL");
  const later = (await t.call("GET", `/domains/${domainId}`, { key: admin })).json() as DomainView;
  assert.deepEqual(selectorsIn(later, "retired"), oldSelectors);
  assert.deepEqual(later.records.filter((x) => x.purpose === "dkim").map((x) => x.name.split(".")[0]).sort(), newSelectors);
  await restartWorker();
  const last = await delivered({ from: "orders@shop.example", to: "fay@good.test", subject: "Long after the rotation", text: "new keys only" });
  assert.deepEqual([...last.selectors].sort(), newSelectors);
});
