// Signed delivery receipts (issue 15, item 7): GET /messages/{id}/receipt is a JWT signed
// with the installation's Ed25519 key, verified here with jose (not our code) against the
// keys GET /.well-known/jwks.json publishes; the evidence in it names the exact bytes the
// peer received; one changed byte makes it fail.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { startTestApp, testCipher, type TestApp } from "../helpers/app.ts";
import { rotateReceiptKey } from "../../src/services/receipts.ts";
import { startFakeDns, type FakeDns } from "../helpers/fake-dns.ts";
import { sendMessage, waitForMessage } from "../helpers/messages.ts";
import { startPeer, TEST_MX_HOST, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import type { WorkerHandle } from "../../src/worker/claim-loop.ts";

let app: TestApp;
let key: string;
let dns: FakeDns;
let peer: SmtpPeer;
let worker: WorkerHandle;

before(async () => {
  app = await startTestApp();
  key = (await app.createKey()).key;
  peer = await startPeer({ ip: "127.0.0.91" });
  dns = await startFakeDns({ "receipt.test": { MX: [{ preference: 10, exchange: TEST_MX_HOST }] }, [TEST_MX_HOST]: { A: ["127.0.0.91"] } });
  worker = startTestWorker(app.tdb, { DNS_SERVERS: dns.address, SMTP_MX_PORT: String(peer.port), SMTP_TLS_POLICY: "required" });
});

after(async () => {
  await worker?.stop(5000);
  await peer?.close();
  await dns?.close();
  await app?.close();
});

interface ReceiptClaims {
  iss: string; sub: string; iat: number; jti: string;
  receipt: {
    version: number;
    message: { id: string; message_id: string; from: string; status: string; tls_policy: string };
    recipients: Array<{
      address: string; status: string;
      attempt: { outcome: string; message_sha256: string; mx_host: string; ip: string; policy: string;
        tls: { used: boolean; version: string; verified: boolean; certificate: { fingerprint_sha256: string } | null }; smtp: { code: number } } | null;
    }>;
  };
}

async function keySet(): Promise<JSONWebKeySet> {
  const r = await app.call("GET", "/.well-known/jwks.json"); // no key: anyone verifying a receipt may fetch it
  assert.equal(r.status, 200, r.body);
  return r.json() as JSONWebKeySet;
}

test("a receipt verifies with jose against the published keys and names the bytes the peer received, over verified TLS", async () => {
  const id = await sendMessage(app, key, { to: "ann@receipt.test", subject: "Reset your password", tls: "required" });
  const m = await waitForMessage(app, key, id, ["delivered"]);
  const r = await app.call("GET", `/messages/${id}/receipt`, { key });
  assert.equal(r.status, 200, r.body);
  const { receipt, key_id } = r.json() as { receipt: string; key_id: string };

  const jwks = await keySet();
  assert.deepEqual(jwks.keys.map((k) => k.kid), [key_id]);
  const { payload, protectedHeader } = await jwtVerify<ReceiptClaims>(receipt, createLocalJWKSet(jwks), { algorithms: ["EdDSA"], subject: id });
  assert.equal(protectedHeader.kid, key_id);
  assert.deepEqual(payload.receipt.message, { id, message_id: m.message_id, from: "noreply@shop.example", created_at: m.created_at, status: "delivered", tls_policy: "required" });
  const [ann] = payload.receipt.recipients;
  assert.equal(ann!.address, "ann@receipt.test");
  assert.equal(ann!.status, "delivered");
  const a = ann!.attempt!;
  assert.deepEqual([a.outcome, a.mx_host, a.ip, a.policy, a.smtp.code], ["delivered", TEST_MX_HOST, "127.0.0.91", "required", 250]);
  assert.ok(a.tls.used && a.tls.verified, "verified TLS");
  assert.equal(a.tls.version, "TLSv1.3");
  assert.match(a.tls.certificate!.fingerprint_sha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  // The hash of exactly what the peer got after DATA.
  const got = peer.received.find((x) => x.to.includes("ann@receipt.test"))!;
  assert.equal(a.message_sha256, createHash("sha256").update(got.data).digest("hex"));
});

test("one changed byte anywhere makes the receipt fail to verify", async () => {
  const id = await sendMessage(app, key, { to: "bo@receipt.test" });
  await waitForMessage(app, key, id, ["delivered"]);
  const { receipt } = (await app.call("GET", `/messages/${id}/receipt`, { key })).json() as { receipt: string };
  const jwks = createLocalJWKSet(await keySet());
  await jwtVerify(receipt, jwks, { algorithms: ["EdDSA"] });
  const [header, payload, signature] = receipt.split(".") as [string, string, string];
  const claims = Buffer.from(payload, "base64url");
  const at = claims.indexOf(Buffer.from("bo@receipt.test"));
  claims[at] = claims[at]! ^ 0x01; // "co@receipt.test"
  const forged = [header, claims.toString("base64url"), signature].join(".");
  await assert.rejects(jwtVerify(forged, jwks, { algorithms: ["EdDSA"] }), { code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
  const sig = Buffer.from(signature, "base64url");
  sig[0] = sig[0]! ^ 0x01;
  await assert.rejects(jwtVerify([header, payload, sig.toString("base64url")].join("."), jwks, { algorithms: ["EdDSA"] }), { code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
});

/** Verifies a JWT with Python's jwcrypto (Debian's python3-jwcrypto), another language's JOSE library: its claims, or its error. */
function jwcryptoVerify(token: string, jwks: JSONWebKeySet): { ok: true; claims: ReceiptClaims } | { ok: false; error: string } {
  const py = [
    "import json, sys",
    "from jwcrypto import jwk, jwt",
    "keys = jwk.JWKSet.from_json(sys.argv[1])",
    "try:",
    "    t = jwt.JWT(jwt=sys.stdin.read().strip(), key=keys, algs=['EdDSA'])",
    "    print(json.dumps({'ok': True, 'claims': json.loads(t.claims)}))",
    "except Exception as e:",
    "    print(json.dumps({'ok': False, 'error': type(e).__name__}))",
  ].join("\n");
  const r = spawnSync("/usr/bin/python3", ["-c", py, JSON.stringify(jwks)], { input: token, encoding: "utf8", timeout: 20_000 });
  assert.equal(r.status, 0, `jwcrypto (Debian python3-jwcrypto) must run: ${r.stderr}${r.error?.message ?? ""}`);
  return JSON.parse(r.stdout);
}

test("Python's jwcrypto verifies a receipt too, with its policy and the layer it came from, and refuses one changed byte", async () => {
  const id = await sendMessage(app, key, { to: "cy@receipt.test", tls: "required" });
  await waitForMessage(app, key, id, ["delivered"]);
  const { receipt } = (await app.call("GET", `/messages/${id}/receipt`, { key })).json() as { receipt: string };
  const jwks = await keySet();
  const v = jwcryptoVerify(receipt, jwks);
  assert.ok(v.ok, JSON.stringify(v));
  const a = v.claims.receipt.recipients[0]!.attempt as unknown as { policy: string; policy_source: string; tls: { verified: boolean } };
  // This file's worker runs with SMTP_TLS_POLICY=required: the server's layer comes first.
  assert.deepEqual([v.claims.sub, a.policy, a.policy_source, a.tls.verified], [id, "required", "server", true]);
  const [header, payload, signature] = receipt.split(".") as [string, string, string];
  const claims = Buffer.from(payload, "base64url");
  const at = claims.indexOf(Buffer.from('"required"'));
  claims[at + 1] = "R".charCodeAt(0);
  assert.deepEqual(jwcryptoVerify([header, claims.toString("base64url"), signature].join("."), jwks), { ok: false, error: "InvalidJWSSignature" });
});

test("a message that is not delivered yet gets a receipt that says so; another key's message is not found", async () => {
  const id = await sendMessage(app, key, { to: "cy@receipt.test", send_at: new Date(Date.now() + 3_600_000).toISOString() });
  const { receipt } = (await app.call("GET", `/messages/${id}/receipt`, { key })).json() as { receipt: string };
  const { payload } = await jwtVerify<ReceiptClaims>(receipt, createLocalJWKSet(await keySet()), { algorithms: ["EdDSA"] });
  assert.deepEqual(payload.receipt.recipients.map((r) => [r.status, r.attempt]), [["scheduled", null]]);
  const other = (await app.createKey({ name: "other" })).key;
  assert.equal((await app.call("GET", `/messages/${id}/receipt`, { key: other })).status, 404);
});

test("after a key rotation the JWKS keeps the old key, so receipts it signed still verify", async () => {
  const id = await sendMessage(app, key, { to: "dee@receipt.test" });
  await waitForMessage(app, key, id, ["delivered"]);
  const before = (await app.call("GET", `/messages/${id}/receipt`, { key })).json() as { receipt: string; key_id: string };
  const { kid, retired } = await rotateReceiptKey(app.tdb.db.prisma, testCipher());
  assert.equal(retired, before.key_id);
  const jwks = await keySet();
  assert.deepEqual(jwks.keys.map((k) => k.kid), [kid, before.key_id], "the signing key first, the retired one still published");
  const { protectedHeader } = await jwtVerify(before.receipt, createLocalJWKSet(jwks), { algorithms: ["EdDSA"] });
  assert.equal(protectedHeader.kid, before.key_id);
});
