// Logs of a full send and delivery (API and worker, relay with AUTH) must contain
// none of: the API key, the relay password, the subject, the body, a header value.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestApp, validSend, type TestApp } from "../helpers/app.ts";
import { peerCertificate, startPeer, type SmtpPeer } from "../helpers/smtp-peers.ts";
import { startTestWorker } from "../helpers/worker.ts";
import { waitFor } from "../helpers/wait.ts";
import type { WorkerHandle } from "../../src/worker/worker.ts";

const RELAY_IP = "127.0.0.8";
const PASSWORD = "relay-pass-Zq8xK2";
const SUBJECT = "Reset link subject-marker-31";
const BODY = "https://shop.example/reset/body-marker-77";
const HEADER = "header-marker-55";

let t: TestApp;
let peer: SmtpPeer;
let worker: WorkerHandle;
const workerLogs: string[] = [];

before(async () => {
  t = await startTestApp({ LOG_LEVEL: "trace" });
  peer = await startPeer({ ip: RELAY_IP, certificate: peerCertificate("ca-signed", RELAY_IP), auth: { user: "sealpost", pass: PASSWORD } });
  worker = startTestWorker(t.tdb, { SMTP_RELAY_URL: `smtp://sealpost:${PASSWORD}@${RELAY_IP}:${peer.port}`, SMTP_TLS_POLICY: "opportunistic" }, workerLogs);
});
after(async () => {
  await worker?.stop(2000);
  await peer?.close();
  await t?.close();
});

test("a full send and relay delivery logs no key, password, subject, body or header value", async () => {
  const { key } = await t.createKey();
  const bad = await t.call("POST", "/send", { key: key.slice(0, -4) + "aaaa", body: validSend() });
  assert.equal(bad.status, 401);
  const r = await t.call("POST", "/send", { key, body: validSend({ subject: SUBJECT, text: BODY, html: `<a href="${BODY}">reset</a>`, headers: { "X-Ref": HEADER } }) });
  assert.equal(r.status, 202, r.body);
  const id = r.json().id;
  await waitFor(async () => (await t.call("GET", `/messages/${id}`, { key })).json().status === "delivered", { what: "delivery", timeoutMs: 30_000 }).catch(async (err) => {
    const state = (await t.call("GET", `/messages/${id}`, { key })).body;
    throw new Error(`${(err as Error).message}; state ${state}; worker log ${workerLogs.slice(-5).join("")}`);
  });
  assert.equal(peer.received.length, 1);
  assert.ok(peer.sessions.some((s) => s.authAttempts > 0 && s.secure), "AUTH happened, over TLS");
  assert.match(peer.received[0]!.data.toString(), /subject-marker-31/, "the content did travel");

  const all = [...t.logs, ...workerLogs].join("");
  assert.ok(t.logs.length > 3 && workerLogs.length > 0, "there were logs to inspect");
  assert.match(all, /delivery attempt recorded/);
  const secret = key.split("_")[2]!;
  for (const [what, needle] of [
    ["API key", key], ["API key secret", secret], ["relay password", PASSWORD], ["subject", "subject-marker-31"],
    ["body", "body-marker-77"], ["header value", HEADER],
  ] as const) {
    assert.ok(!all.includes(needle), `${what} appears in the logs`);
  }
  assert.doesNotMatch(all, /authorization/i);
});
