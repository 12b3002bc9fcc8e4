import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";

let t: TestApp;
let key: string;
before(async () => {
  t = await startTestApp();
  key = (await t.createKey()).key;
});
after(() => t.close());

test("POST /send stores the message, its recipients and its queue rows in one go", async () => {
  const r = await t.call("POST", "/send", {
    key,
    body: validSend({ to: ["alice@example.com", "Bob <bob@example.com>"], cc: "carol@other.example", tags: ["reset"] }),
  });
  assert.equal(r.status, 202, r.body);
  const body = r.json();
  assert.equal(body.status, "queued");
  assert.equal(body.tls_policy, "opportunistic");
  const rec = await t.tdb.db.prisma.recipient.findMany({ where: { messageId: body.id }, orderBy: { position: "asc" } });
  assert.deepEqual(rec.map((x) => [x.kind, x.address, x.status]), [
    ["to", "alice@example.com", "queued"],
    ["to", "bob@example.com", "queued"],
    ["cc", "carol@other.example", "queued"],
  ]);
  const dl = await t.tdb.db.prisma.delivery.findMany({ where: { messageId: body.id }, orderBy: { domain: "asc" } });
  assert.deepEqual(dl.map((d) => [d.domain, d.state]), [["example.com", "pending"], ["other.example", "pending"]]);
  const got = await t.call("GET", `/messages/${body.id}`, { key });
  assert.equal(got.status, 200);
  assert.equal(got.json().subject, "Reset your password");
  assert.equal(got.json().recipients.length, 3);
});
