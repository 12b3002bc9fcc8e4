// The bounce address (issue 11): once DNS shows the bounce domain's MX naming sealpost
// (BOUNCE_MX_HOST) and its SPF record, each recipient's message leaves with its own
// envelope sender bounce+<token>@<bounce domain>, whose token names that recipient; until
// then, and once the MX points elsewhere again, MAIL FROM stays the From address.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, testCipher, type TestApp } from "../helpers/app.ts";
import { startFakeDns, type FakeDns, type FakeZone } from "../helpers/fake-dns.ts";
import { startPeer, TEST_MX_HOST, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { createTxtResolver } from "../../src/worker/mx.ts";
import { BounceTokens } from "../../src/security/bounce-token.ts";

const BOUNCE_MX = "bounce-in.sealpost.test";
const BASE_ZONE: FakeZone = {
  "good.test": { MX: [{ preference: 10, exchange: TEST_MX_HOST }] },
  [TEST_MX_HOST]: { A: ["127.0.0.3"] },
};

let t: TestApp;
let dns: FakeDns;
let peer: SmtpPeer;
let admin: string;
let sender: string;
let domainId: string;
let zone: FakeZone;

const split = (value: string) => value.match(/.{1,255}/g)!;
const setZone = (z: FakeZone) => dns.setZone(structuredClone(z)); // a copy: answering turns its strings into Buffers

before(async () => {
  dns = await startFakeDns(structuredClone(BASE_ZONE));
  t = await startTestApp({ BOUNCE_MX_HOST: BOUNCE_MX }, { dns: createTxtResolver({ servers: [dns.address], timeoutMs: 500, tries: 1 }) });
  admin = (await t.createKey({ name: "admin", scopes: ["admin"] })).key;
  sender = (await t.createKey()).key;
  const d = (await t.call("POST", "/domains", { key: admin, body: { name: "shop.example", bounce_domain: "bounces.shop.example" } })).json() as {
    id: string; records: Array<{ purpose: string; type: string; name: string; value: string }>;
  };
  domainId = d.id;
  const mx = d.records.find((r) => r.purpose === "bounce_mx")!;
  assert.deepEqual([mx.type, mx.name, mx.value], ["MX", "bounces.shop.example", `10 ${BOUNCE_MX}`]);
  // Everything but the bounce domain's MX.
  zone = { ...BASE_ZONE, ...Object.fromEntries(d.records.filter((r) => r.type === "TXT").map((r) => [r.name, { TXT: [split(r.value)] }])) };
  setZone(zone);
  peer = await startPeer({ ip: "127.0.0.3" });
});

after(async () => {
  await peer?.close();
  await dns?.close();
  await t?.close();
});

async function verify(): Promise<{ status: string; bounce_status: string | null; checks: Array<{ purpose: string; state: string; found: string | null }> }> {
  const r = await t.call("POST", `/domains/${domainId}/verify`, { key: admin });
  assert.equal(r.status, 200, r.body);
  return r.json() as never;
}

/** Sends one message to two recipients with a fresh worker (its bounce-domain cache empty) and returns the transactions the peer saw. */
async function deliver(tag: string): Promise<{ id: string; got: Array<{ from: string; to: string[] }> }> {
  const w = startTestWorker(t.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port), BOUNCE_MX_HOST: BOUNCE_MX });
  try {
    const id = await sendMessage(t, sender, { from: "orders@shop.example", to: ["ann@good.test", "bo@good.test"], subject: tag, text: "receipt" });
    await waitForMessage(t, sender, id, ["delivered"]);
    const got = peer.received.filter((m) => m.data.includes(Buffer.from(tag))).map((m) => ({ from: m.from, to: m.to }));
    return { id, got };
  } finally {
    await w.stop(2000);
  }
}

test("until the bounce domain's MX names sealpost, MAIL FROM is the From address, one transaction for both recipients", async () => {
  const v = await verify();
  assert.equal(v.status, "verified");
  assert.equal(v.bounce_status, "failed");
  assert.equal(v.checks.find((c) => c.purpose === "bounce_mx")?.state, "missing");
  const { got } = await deliver("before-mx");
  assert.deepEqual(got, [{ from: "orders@shop.example", to: ["ann@good.test", "bo@good.test"] }]);
});

test("once it does, each recipient gets its own envelope sender, whose token names that recipient and no other", async () => {
  setZone({ ...zone, "bounces.shop.example": { ...zone["bounces.shop.example"], MX: [{ preference: 10, exchange: BOUNCE_MX }] } });
  const v = await verify();
  assert.equal(v.bounce_status, "verified", JSON.stringify(v.checks));
  const view = (await t.call("GET", `/domains/${domainId}`, { key: admin })).json() as { bounce_status: string };
  assert.equal(view.bounce_status, "verified");

  const { id, got } = await deliver("after-mx");
  assert.equal(got.length, 2, JSON.stringify(got));
  const ids = new Map((await t.tdb.db.pool.query<{ id: string; address: string }>(
    "SELECT id::text AS id, address FROM recipients WHERE message_id = $1", [id])).rows.map((r) => [r.address, BigInt(r.id)]));
  const tokens = new BounceTokens(testCipher());
  for (const m of got) {
    assert.equal(m.to.length, 1);
    assert.match(m.from, /^bounce\+[a-z2-7]+@bounces\.shop\.example$/);
    assert.equal(tokens.recipientOf(m.from.slice(0, m.from.indexOf("@"))), ids.get(m.to[0]!), `${m.from} names ${m.to[0]}`);
  }
  assert.notEqual(got[0]!.from, got[1]!.from);
});

test("an MX that points elsewhere again un-verifies the bounce domain, and MAIL FROM goes back to the From address", async () => {
  setZone({ ...zone, "bounces.shop.example": { ...zone["bounces.shop.example"], MX: [{ preference: 10, exchange: "mx.elsewhere.test" }] } });
  const v = await verify();
  assert.equal(v.bounce_status, "failed");
  const mx = v.checks.find((c) => c.purpose === "bounce_mx")!;
  assert.equal(mx.state, "mismatch");
  assert.equal(mx.found, "mx.elsewhere.test");
  const { got } = await deliver("elsewhere");
  assert.deepEqual(got.map((m) => m.from), ["orders@shop.example"]);
});
