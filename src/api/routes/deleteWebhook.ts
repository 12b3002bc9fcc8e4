import { removeWebhook } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { DeleteWebhookResponseSchema, WebhookIdParams } from "../schemas.ts";

export default defineRoute({
  operationId: "deleteWebhook",
  method: "DELETE",
  url: "/webhooks/:id",
  summary: "Remove a webhook endpoint and its delivery log; its pending deliveries are dropped",
  scope: "admin",
  tags: ["webhooks"],
  params: WebhookIdParams,
  responses: { 200: { description: "Removed", schema: DeleteWebhookResponseSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    return removeWebhook(deps.db.prisma, request.apiKey!.id, params.id);
  },
});
