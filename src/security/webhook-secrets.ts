// Webhook signing secrets and signatures, per the Standard Webhooks specification: a
// secret is `whsec_` and base64 of 24 random bytes; a signature is `v1,` and base64 of
// HMAC-SHA256 keyed with those bytes over `<webhook-id>.<webhook-timestamp>.<body>`.
// Secrets are stored encrypted under the data key, bound to their row and column like
// message content (content-cipher.ts).
import { createHmac, randomBytes } from "node:crypto";

export const newWebhookSecret = () => `whsec_${randomBytes(24).toString("base64")}`;

export type SecretColumn = "secret" | "previous_secret";
export const webhookSecretAad = (endpointId: string, column: SecretColumn) => `sealpost:webhook_endpoints:${endpointId}:${column}`;

/** The `v1,` signature of one message under one secret. */
export function signWebhook(secret: string, msgId: string, timestampSeconds: number, body: string): string {
  const key = Buffer.from(secret.startsWith("whsec_") ? secret.slice(6) : secret, "base64");
  return `v1,${createHmac("sha256", key).update(`${msgId}.${timestampSeconds}.${body}`).digest("base64")}`;
}
