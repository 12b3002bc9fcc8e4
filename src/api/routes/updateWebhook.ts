import { webhookTargetPolicy } from "../../security/webhook-targets.ts";
import { updateWebhook, UpdateWebhookSchema } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { WebhookIdParams, WebhookSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "updateWebhook",
  method: "PATCH",
  url: "/webhooks/:id",
  summary: "Change a webhook endpoint: URL, event types, description, enabled",
  description: "Fields left out stay as they are. `enabled: true` also resumes an endpoint that was disabled for failing or for 410 Gone.",
  scope: "admin",
  tags: ["webhooks"],
  params: WebhookIdParams,
  body: UpdateWebhookSchema,
  responses: { 200: { description: "The endpoint as changed", schema: WebhookSchema } },
  errors: [400, 401, 403, 404, 415, 422, 429, 503],
  async handler({ params, body, request }, deps) {
    return updateWebhook(deps.db.prisma, request.apiKey!.id, params.id, body, webhookTargetPolicy(deps.config));
  },
});
