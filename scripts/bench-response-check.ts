// Cost of the response contract check (src/api/route.ts checkResponse): microseconds per
// body, for the 202 of POST /send (the hot path) and for a large GET /messages/{id} (50
// recipients, the most a message has, with 3 attempts each).
// Compare with the server CPU per request that `npm run bench:send` prints.
//
//   node scripts/bench-response-check.ts
import { randomUUID } from "node:crypto";
import { checkResponse, type AnyRoute } from "../src/api/route.ts";
import sendMessage from "../src/api/routes/sendMessage.ts";
import getMessage from "../src/api/routes/getMessage.ts";
import type { AttemptView, MessageView, SendResponseView } from "../src/api/schemas.ts";

const at = "2030-01-01T00:00:00.000Z";
const id = randomUUID();
const sent: SendResponseView = { id, status: "queued", tls_policy: "required", created_at: at };
const attempt = (n: number): AttemptView => ({
  attempt: n, started_at: at, duration_ms: 120, outcome: "deferred", mx_host: "mx.example.com", ip: "192.0.2.1", port: 25, policy: "required",
  policy_source: "message",
  policy_detail: {
    accepted: "message", map: null, mta_sts: { state: "none", reason: "example.com publishes no MTA-STS policy" },
    dane: { state: "off", reason: "no DNSSEC-validating resolver is configured (DANE_RESOLVER)" }, mx_name_check: "match", verified_by: "pkix", matched: null, tls_required_no: false, requiretls: false,
  },
  tls: {
    used: true, version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", verified: true, verify_error: null,
    certificate: { subject: "CN=mx.example.com", issuer: "CN=Example CA", not_after: at, fingerprint_sha256: "AB:CD:EF" },
  },
  dkim: { selectors: ["sp203001r", "sp203001e"] },
  smtp: { code: 451, enhanced_code: "4.7.1", text: "try again later" },
});
const message: MessageView = {
  id, status: "deferred", tls_policy: "required", priority: "normal", from: { address: "noreply@shop.example", name: "Shop" }, subject: "Your receipt",
  tags: ["receipt"], metadata: { order: "1042" }, created_at: at, send_at: null, content_purged: false, content_unreadable: null,
  message_id: `<${id}@shop.example>`, reply_to: [], updated_at: at,
  recipients: Array.from({ length: 50 }, (_, i) => ({
    address: `r${i}@example.com`, name: null, kind: "to" as const, status: "deferred" as const, attempts: 3,
    last_response: { code: 451, enhanced_code: "4.7.1", text: "try again later" }, next_attempt_at: at, expires_at: at,
    delivery_attempts: [attempt(1), attempt(2), attempt(3)],
  })),
};

function measure(what: string, route: AnyRoute, status: number, body: unknown, runs: number): void {
  for (let i = 0; i < runs / 5; i++) checkResponse(route, status, body); // warm-up: compiled and optimised
  const started = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) checkResponse(route, status, body);
  const us = Number(process.hrtime.bigint() - started) / runs / 1000;
  console.log(`${what.padEnd(52)} ${us.toFixed(2).padStart(8)} µs per body`);
}

measure("POST /send 202", sendMessage, 202, sent, 300_000);
measure("GET /messages/{id}, 50 recipients x 3 attempts", getMessage, 200, message, 3_000);
