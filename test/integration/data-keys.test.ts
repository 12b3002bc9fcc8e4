// Data keys (issue 7, item 4): a process whose keys cannot read what is stored refuses to
// start with one line; `keys rotate-data` runs only after the rotation procedure; a
// worker defers (never fails) content under a key id it does not hold and delivers it
// once a process with the key runs; tampered content is never sent.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { startTestApp, TEST_DATA_KEY, type TestApp } from "../helpers/app.ts";
import { createEmptyDatabase, createTestDatabase } from "../helpers/db.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { startPeer, TEST_MX_HOST, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { waitFor } from "../helpers/wait.ts";
import { openDatabase } from "../../src/db/client.ts";
import { DEFAULT_MIGRATIONS_DIR, migrate, readMigrations } from "../../src/db/migrate.ts";
import { ContentCipher, contentAad } from "../../src/security/content-cipher.ts";
import { parseDataKeys } from "../../src/security/data-keys.ts";
import { checkDataKeys } from "../../src/security/data-key-check.ts";
import { rotateDataKey } from "../../src/services/rotate-data-key.ts";

const tmp = mkdtempSync(join(tmpdir(), "sealpost-data-keys-"));
const K1 = TEST_DATA_KEY; // what the test app encrypts with, as k1
const K2 = randomBytes(32).toString("base64");
const cipherOf = (value: string) => new ContentCipher(parseDataKeys(value));

let app: TestApp;
let key: string;
let peer: SmtpPeer;
let dns: FakeDns;
const logs: string[] = [];

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  peer = await startPeer({ ip: "127.0.0.2" });
  dns = await startFakeDns({ "keys.test": { MX: [{ preference: 10, exchange: TEST_MX_HOST }] }, [TEST_MX_HOST]: { A: ["127.0.0.2"] } });
});

after(async () => {
  await Promise.all([peer?.close(), dns?.close()]);
  await app?.close();
  rmSync(tmp, { recursive: true, force: true });
});

function useWorker(t: TestContext, dataKey: string, extra: Record<string, string> = {}) {
  const env = { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port), SEALPOST_DATA_KEY: dataKey, ...extra };
  const w = startTestWorker(app.tdb, env, logs, { cipher: cipherOf(dataKey) });
  t.after(() => w.stop(5000));
  return w;
}

/** The real CLI in a child process. */
function cli(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, ["src/cli.ts", ...args], {
    env: { PATH: process.env.PATH ?? "", NODE_ENV: "development", DATA_DIR: join(tmp, "data"), CERTS_DIR: join(tmp, "certs"), LOG_LEVEL: "warn", HOST: "127.0.0.1", PORT: "0", ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The refusal an operator must see: one line naming what to change, no stack trace, exit 1. */
function assertOneLineRefusal(r: { code: number | null; stdout: string; stderr: string }, pattern: RegExp) {
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^sealpost: /);
  assert.match(lines[0]!, pattern);
  assert.match(lines[0]!, /SEALPOST_DATA_KEY/);
  assert.doesNotMatch(r.stderr + r.stdout, /\n\s+at \S+.*:\d+:\d+/, "no stack trace");
}

test("the worker defers content under a key id it does not hold, and a worker with the key delivers it", async (t) => {
  const id = await sendMessage(app, key, { to: "ann@keys.test", subject: "Deferred until the key comes" });
  // The procedure ran ahead of this worker: k2 was introduced, serving processes encrypt
  // with it, and the rotation re-encrypted the stored content under it.
  const db = app.tdb.db.prisma;
  await checkDataKeys(db, cipherOf(`k1:${K1}`), "encrypts");
  await checkDataKeys(db, cipherOf(`k1:${K1},k2:${K2}`), "encrypts");
  await checkDataKeys(db, cipherOf(`k2:${K2},k1:${K1}`), "encrypts");
  await rotateDataKey(db, cipherOf(`k2:${K2},k1:${K1}`));

  const stale = useWorker(t, `k1:${K1}`); // never restarted: it holds k1 only
  const deferred = await waitFor(async () => {
    const r = await app.call("GET", `/messages/${id}`, { key });
    const rcpt = r.json().recipients[0];
    return rcpt.status === "deferred" && rcpt.delivery_attempts.length > 0 ? r.json() : null;
  }, { what: "the recipient to be deferred" });
  const rcpt = deferred.recipients[0];
  assert.equal(rcpt.last_response.enhanced_code, "4.3.5");
  assert.match(rcpt.last_response.text, /data key k2, which this worker does not hold; add it to SEALPOST_DATA_KEY/);
  assert.equal(rcpt.delivery_attempts[0].outcome, "deferred");
  assert.equal(peer.received.filter((m) => m.to.includes("ann@keys.test")).length, 0, "nothing was sent");
  assert.notEqual(deferred.status, "failed");
  // The API holds k1 only too: it shows the message and names the key it lacks.
  assert.equal(deferred.subject, null);
  assert.equal(deferred.content_unreadable.data_key_id, "k2");
  await stale.stop(5000);

  useWorker(t, `k2:${K2},k1:${K1}`);
  const done = await waitForMessage(app, key, id, ["delivered"], { logs, timeoutMs: 20_000 });
  assert.equal(done.recipients[0]!.status, "delivered");
  const got = peer.received.filter((m) => m.to.includes("ann@keys.test"));
  assert.equal(got.length, 1);
  assert.match(got[0]!.data.toString("utf8"), /Subject: Deferred until the key comes/);
});

test("a deferral for a missing key still ends at SMTP_MAX_RETRY", async (t) => {
  const id = await sendMessage(app, key, { to: "bob@keys.test" });
  const other = cipherOf(`k7:${randomBytes(32).toString("base64")}`);
  const row = await app.tdb.db.prisma.message.findUniqueOrThrow({ where: { id } });
  await app.tdb.db.prisma.message.update({ where: { id }, data: { subject: new Uint8Array(other.encrypt(String(row.id), contentAad(id, "subject"))) } });
  useWorker(t, `k2:${K2},k1:${K1}`, { SMTP_MAX_RETRY: "1s" });
  const m = await waitForMessage(app, key, id, ["failed"], { logs, timeoutMs: 20_000 });
  assert.match(m.recipients[0]!.last_response!.text!, /^gave up after \d+ attempts: not sent yet: the content is encrypted under data key k7/);
  assert.ok(m.recipients[0]!.delivery_attempts.every((a) => a.outcome === "deferred"), "every attempt was a deferral");
  assert.equal(peer.received.filter((x) => x.to.includes("bob@keys.test")).length, 0);
});

test("tampered content fails without being sent: no retry can make it readable", async (t) => {
  const id = await sendMessage(app, key, { to: "cy@keys.test", text: "tamper-marker" });
  await app.tdb.db.pool.query(
    `UPDATE messages SET text_body = set_byte(text_body, length(text_body) - 1, (get_byte(text_body, length(text_body) - 1) + 1) % 256) WHERE id = $1`, [id]);
  useWorker(t, `k2:${K2},k1:${K1}`);
  const m = await waitForMessage(app, key, id, ["failed"], { logs });
  assert.equal(m.recipients[0]!.last_response!.enhanced_code, "5.3.0");
  assert.match(m.recipients[0]!.last_response!.text!, /not sent: stored content failed authentication under data key "k1"/);
  assert.equal(peer.received.filter((x) => x.to.includes("cy@keys.test")).length, 0, "nothing was sent");
});

test("a process given a different key under a recorded id refuses to start, with one line", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  await checkDataKeys(tdb.db.prisma, cipherOf(`k1:${K1}`), "encrypts");
  const wrong = randomBytes(32).toString("base64");
  for (const cmd of ["serve", "worker", "start"]) {
    const r = cli([cmd], { DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: `k1:${wrong}` });
    assertOneLineRefusal(r, /a different key under id k1 than the one stored content was encrypted with/);
  }
  // Without an id a single key is k1 too: the same refusal.
  assertOneLineRefusal(cli(["serve"], { DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: wrong }), /under id k1/);
  assert.equal(await tdb.db.prisma.apiKey.count(), 0, "a refused start changes nothing (no first API key)");
  const rows = await tdb.db.prisma.dataKey.findMany();
  assert.deepEqual(rows.map((r) => r.id), ["k1"]);
  assert.ok(cipherOf(`k1:${K1}`).matchesCheckValue("k1", rows[0]!.checkValue!), "the recorded check value is untouched");
});

test("a process missing a key id that stored content uses refuses to start, naming it", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  await checkDataKeys(tdb.db.prisma, cipherOf(`k1:${K1}`), "encrypts");
  await checkDataKeys(tdb.db.prisma, cipherOf(`k1:${K1},k2:${K2}`), "decrypts");
  await checkDataKeys(tdb.db.prisma, cipherOf(`k2:${K2},k1:${K1}`), "encrypts");
  const r = cli(["worker"], { DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: `k1:${K1}` });
  assertOneLineRefusal(r, /stored content is encrypted under data key k2, which SEALPOST_DATA_KEY does not hold: add it/);
  const none = cli(["serve"], { DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: `k3:${randomBytes(32).toString("base64")}` });
  assertOneLineRefusal(none, /encrypted under data keys k1, k2, which SEALPOST_DATA_KEY does not hold/);
});

test("a new key cannot encrypt before it was introduced; keys rotate-data refuses until the procedure ran", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  const db = tdb.db.prisma;
  await checkDataKeys(db, cipherOf(`k1:${K1}`), "encrypts"); // the deployment runs on k1
  const newFirst = { DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: `k2:${K2},k1:${K1}` };

  // Put first straight away, the new key would write content the running processes cannot read.
  assertOneLineRefusal(cli(["serve"], newFirst), /data key k2 is first in SEALPOST_DATA_KEY, so it would encrypt new content, but no sealpost process has held it yet: first restart every process with it listed after k1/);
  // The rotation the issue describes: run while the serving processes hold only k1.
  const early = cli(["keys", "rotate-data"], newFirst);
  assertOneLineRefusal(early, /^sealpost: keys rotate-data: data key k2 does not encrypt new content yet.*SEALPOST_DATA_KEY=k1:\.\.\.,k2:\.\.\., then every process with k2:\.\.\.,k1:\.\.\./);
  assert.equal((await db.dataKey.findMany()).length, 1, "the refused commands recorded nothing");

  // Step 1: every process restarted with k2 listed second (k1 still encrypts).
  await checkDataKeys(db, cipherOf(`k1:${K1},k2:${K2}`), "encrypts");
  assertOneLineRefusal(cli(["keys", "rotate-data"], newFirst), /data key k2 does not encrypt new content yet/);
  // Step 2: every process restarted with k2 first.
  await checkDataKeys(db, cipherOf(`k2:${K2},k1:${K1}`), "encrypts");
  // Step 3: the rotation runs, and says when k1 may go.
  const ok = cli(["keys", "rotate-data"], newFirst);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /re-encrypted 0 messages, 0 DKIM private keys, 0 webhook endpoints' secrets and 0 receipt signing keys under data key k2/);
  assert.match(ok.stdout, /no stored content uses data key k1 any more: remove it from SEALPOST_DATA_KEY once every process runs with k2 first/);
  // Step 4: k2 alone is enough now.
  await checkDataKeys(db, cipherOf(`k2:${K2}`), "encrypts");
});

test("a process on a database not migrated to this version says so in one line", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  await tdb.db.pool.query("DROP TABLE data_keys"); // as if the code was upgraded and `migrate` not run
  const r = cli(["serve"], { DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: `k1:${K1}`, MIGRATE_ON_START: "false" });
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stderr.trim(), "sealpost: the database has no data_keys table: it is not migrated to this version of sealpost; run `sealpost migrate` as the database owner");
});

test("content stored before the data_keys table existed: its key ids are required, and the key is proven against it", async (t) => {
  // A database at the first migration, with a message stored under k1.
  const empty = await createEmptyDatabase();
  const initOnly = join(tmp, "migrations-init");
  const [init] = readMigrations();
  cpSync(join(DEFAULT_MIGRATIONS_DIR, init!.name), join(initOnly, init!.name), { recursive: true });
  await migrate(empty.url, { dir: initOnly });
  const c = new pg.Client({ connectionString: empty.url });
  await c.connect();
  const id = "0192a9b8-0000-7000-8000-000000000001";
  const k1 = cipherOf(`k1:${K1}`);
  await c.query(`INSERT INTO api_keys (id, name, secret_hash, scopes, allowed_domains) VALUES ('0123456789abcdef', 'old', $1, '{send}', '{*}')`, ["0".repeat(64)]);
  await c.query(
    `INSERT INTO messages (id, api_key_id, status, tls_policy, message_id_header, from_address, subject, tags, created_at, updated_at)
     VALUES ($1, '0123456789abcdef', 'queued', 'opportunistic', '<x@y>', 'a@b.example', $2, '{}', now(), now())`,
    [id, k1.encrypt("old subject", contentAad(id, "subject"))]);

  await migrate(empty.url); // the data_keys migration records k1 as in use, without a check value
  const db = openDatabase({ url: empty.url, poolMax: 2, statementTimeoutMs: 5000, connectTimeoutMs: 2000 });
  t.after(async () => {
    await c.end();
    await db.close();
    await empty.drop();
  });
  const seeded = await db.prisma.dataKey.findMany();
  assert.deepEqual(seeded.map((r) => [r.id, r.checkValue, r.encryptingSince !== null]), [["k1", null, true]]);

  await assert.rejects(checkDataKeys(db.prisma, cipherOf(`k9:${K2}`), "decrypts"), /encrypted under data key k1, which SEALPOST_DATA_KEY does not hold/);
  await assert.rejects(checkDataKeys(db.prisma, cipherOf(`k1:${K2}`), "encrypts"), /a different key under id k1/);
  assert.equal((await db.prisma.dataKey.findUniqueOrThrow({ where: { id: "k1" } })).checkValue, null, "a wrong key records nothing");
  await checkDataKeys(db.prisma, k1, "encrypts");
  const proven = await db.prisma.dataKey.findUniqueOrThrow({ where: { id: "k1" } });
  assert.ok(proven.checkValue && k1.matchesCheckValue("k1", proven.checkValue), "the right key wrote its check value");
});

test("keys rotate-data re-encrypts DKIM private keys too, so the old data key retires and signing keys stay readable", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  const db = tdb.db.prisma;
  const { addDomain } = await import("../../src/services/sender-domains.ts");
  const { dkimKeyAad } = await import("../../src/security/dkim-keys.ts");
  await checkDataKeys(db, cipherOf(`k1:${K1}`), "encrypts");
  await addDomain(db, cipherOf(`k1:${K1}`), null, { name: "rotate.example" }, "mx.rotate.example");
  await checkDataKeys(db, cipherOf(`k1:${K1},k2:${K2}`), "encrypts");
  await checkDataKeys(db, cipherOf(`k2:${K2},k1:${K1}`), "encrypts");
  const stored = async () => (await tdb.db.pool.query<{ id: string; private_key: Buffer }>("SELECT id::text AS id, private_key FROM dkim_keys ORDER BY id")).rows;
  const before = await stored();
  assert.equal(before.length, 2);
  const r = await rotateDataKey(db, cipherOf(`k2:${K2},k1:${K1}`));
  assert.equal(r.dkimKeysRewritten, 2);
  assert.deepEqual(r.retired, ["k1"], "no stored value needs k1 any more");
  const k2Only = cipherOf(`k2:${K2}`);
  for (const [i, k] of (await stored()).entries()) {
    assert.equal(k2Only.keyIdOf(k.private_key), "k2");
    // The same private key, now readable with k2 alone.
    assert.deepEqual(k2Only.decrypt(k.private_key, dkimKeyAad(k.id)), cipherOf(`k1:${K1}`).decrypt(before[i]!.private_key, dkimKeyAad(k.id)));
  }
  assert.equal((await rotateDataKey(db, cipherOf(`k2:${K2},k1:${K1}`))).dkimKeysRewritten, 0, "a second run has nothing left to do");
});

test("keys rotate-data re-encrypts webhook secrets (current and previous), so the old data key retires and deliveries stay signed", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  const db = tdb.db.prisma;
  const { createWebhook, rotateWebhookSecret } = await import("../../src/services/webhooks.ts");
  const { webhookSecretAad } = await import("../../src/security/webhook-secrets.ts");
  const { BlockList } = await import("node:net");
  const k1 = cipherOf(`k1:${K1}`);
  await checkDataKeys(db, k1, "encrypts");
  const policy = { production: false, allowed: new BlockList() };
  const first = await createWebhook(db, k1, "key1", { url: "https://hooks.rotate.example/in" }, policy);
  const second = await rotateWebhookSecret(db, k1, "key1", first.id);
  await checkDataKeys(db, cipherOf(`k1:${K1},k2:${K2}`), "encrypts");
  await checkDataKeys(db, cipherOf(`k2:${K2},k1:${K1}`), "encrypts");
  const r = await rotateDataKey(db, cipherOf(`k2:${K2},k1:${K1}`));
  assert.equal(r.webhookSecretsRewritten, 1);
  assert.deepEqual(r.retired, ["k1"], "no stored value needs k1 any more");
  const row = await db.webhookEndpoint.findUniqueOrThrow({ where: { id: first.id } });
  const k2Only = cipherOf(`k2:${K2}`);
  assert.equal(k2Only.decrypt(row.secret, webhookSecretAad(first.id, "secret")).toString(), second.secret);
  assert.equal(k2Only.decrypt(row.previousSecret!, webhookSecretAad(first.id, "previous_secret")).toString(), first.secret);
  assert.equal((await rotateDataKey(db, cipherOf(`k2:${K2},k1:${K1}`))).webhookSecretsRewritten, 0, "a second run has nothing left to do");
});

test("keys rotate-data re-encrypts the receipt signing key, so the old data key retires and receipts are still signed by it", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  const db = tdb.db.prisma;
  const { ReceiptSigner } = await import("../../src/services/receipts.ts");
  const k1 = cipherOf(`k1:${K1}`);
  await checkDataKeys(db, k1, "encrypts");
  const before = await new ReceiptSigner(db, k1, "sealpost.test").jwks();
  await checkDataKeys(db, cipherOf(`k1:${K1},k2:${K2}`), "encrypts");
  await checkDataKeys(db, cipherOf(`k2:${K2},k1:${K1}`), "encrypts");
  const r = await rotateDataKey(db, cipherOf(`k2:${K2},k1:${K1}`));
  assert.equal(r.receiptKeysRewritten, 1);
  assert.deepEqual(r.retired, ["k1"], "no stored value needs k1 any more");
  // With k2 alone, the same key still signs: the JWKS is unchanged and a signature verifies under it.
  const signer = new ReceiptSigner(db, cipherOf(`k2:${K2}`), "sealpost.test");
  assert.deepEqual(await signer.jwks(), before);
  const { token } = await signer.sign("m1", { receipt: { version: 1 } });
  const { createLocalJWKSet, jwtVerify } = await import("jose");
  assert.equal((await jwtVerify(token, createLocalJWKSet(before), { algorithms: ["EdDSA"] })).payload.sub, "m1");
});
