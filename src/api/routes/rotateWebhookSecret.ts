import { rotateWebhookSecret } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { WebhookIdParams, WebhookWithSecretSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "rotateWebhookSecret",
  method: "POST",
  url: "/webhooks/:id/rotate-secret",
  summary: "A new signing secret, shown once; the previous one also signs for 24 hours",
  description: "Until previous_secret_valid_until, webhook-signature carries two signatures, one per secret, so the receiver can switch over without dropping a delivery.",
  scope: "admin",
  tags: ["webhooks"],
  params: WebhookIdParams,
  responses: { 200: { description: "The endpoint and its new secret", schema: WebhookWithSecretSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    return rotateWebhookSecret(deps.db.prisma, deps.cipher, request.apiKey!.id, params.id);
  },
});
