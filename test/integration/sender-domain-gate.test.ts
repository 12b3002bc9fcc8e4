// SENDER_DOMAINS=verified (issue 11): POST /send and /send/batch accept only a From domain
// that is a verified sender domain; an unknown one, or one whose DKIM records are not
// verified yet, gets a 403 naming what to do, and nothing is written.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { assertProblem } from "../helpers/route-security.ts";

let t: TestApp;
let sender: string;
let pendingSelectors: string[];

before(async () => {
  t = await startTestApp({ SENDER_DOMAINS: "verified" });
  const admin = (await t.createKey({ name: "admin", scopes: ["admin"] })).key;
  sender = (await t.createKey()).key;
  const add = async (name: string) => {
    const r = await t.call("POST", "/domains", { key: admin, body: { name } });
    assert.equal(r.status, 201, r.body);
    return r.json() as { id: string; dkim: Array<{ selector: string }> };
  };
  pendingSelectors = (await add("pending.example")).dkim.map((k) => k.selector);
  const ok = await add("verified.example");
  // As a successful POST /domains/{id}/verify leaves it (that check is tested in domains.test.ts).
  await t.tdb.db.pool.query("UPDATE sender_domains SET verified_at = now() WHERE id = $1", [ok.id]);
});
after(async () => {
  await t?.close();
});

const messages = async () => Number((await t.tdb.db.pool.query<{ n: string }>("SELECT count(*) AS n FROM messages")).rows[0]!.n);
const body = (from: string) => ({ from, to: "alice@example.com", subject: "Your receipt", text: "Thanks" });

test("a verified sender domain is accepted; an unknown or unverified one is 403 naming what is missing, and nothing is written", async () => {
  const before = await messages();
  const unknown = assertProblem(await t.call("POST", "/send", { key: sender, body: body("orders@unknown.example") }), 403, "forbidden");
  assert.match(unknown.detail!, /unknown\.example is not a sender domain of this server: add it \(sealpost domains add unknown\.example/);
  const pending = assertProblem(await t.call("POST", "/send", { key: sender, body: body("orders@pending.example") }), 403, "forbidden");
  for (const s of pendingSelectors) assert.ok(pending.detail!.includes(`${s}._domainkey.pending.example`), pending.detail);
  assert.equal(await messages(), before, "a refused message is not stored");

  const accepted = await t.call("POST", "/send", { key: sender, body: body("orders@verified.example") });
  assert.equal(accepted.status, 202, accepted.body);
  assert.equal(await messages(), before + 1);
});

test("in a batch, each item is judged on its own sender domain", async () => {
  const r = await t.call("POST", "/send/batch", { key: sender, body: { messages: [body("a@verified.example"), body("b@unknown.example")] } });
  assert.equal(r.status, 200, r.body);
  const b = r.json() as { accepted: number; rejected: number; data: Array<{ index: number; id?: string; error?: { status: number; code: string } }> };
  assert.equal(b.accepted, 1);
  assert.equal(b.rejected, 1);
  assert.ok(b.data[0]!.id, "the verified domain's message is accepted");
  assert.equal(b.data[1]!.error?.status, 403);
  assert.equal(b.data[1]!.error?.code, "forbidden");
});
