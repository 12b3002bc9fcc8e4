import { webhookTargetPolicy } from "../../security/webhook-targets.ts";
import { createWebhook, CreateWebhookSchema } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { WebhookWithSecretSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "createWebhook",
  method: "POST",
  url: "/webhooks",
  summary: "Register a webhook endpoint; its signing secret is in this answer only",
  description:
    "Events of this key are POSTed to the URL per the Standard Webhooks specification (webhook-id, webhook-timestamp, webhook-signature). " +
    "In production the URL must be https:// and must not name or resolve to a loopback, private or link-local address (WEBHOOK_ALLOWED_NETWORKS allows some).",
  scope: "admin",
  tags: ["webhooks"],
  body: CreateWebhookSchema,
  responses: { 201: { description: "The endpoint and its secret", schema: WebhookWithSecretSchema } },
  errors: [400, 401, 403, 415, 422, 429, 503],
  async handler({ body, request, reply }, deps) {
    const view = await createWebhook(deps.db.prisma, deps.cipher, request.apiKey!.id, body, webhookTargetPolicy(deps.config));
    reply.code(201);
    return view;
  },
});
