import { retryWebhookDeliveries, RetryWebhookSchema } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { RetryWebhookResponseSchema, WebhookIdParams } from "../schemas.ts";

export default defineRoute({
  operationId: "retryWebhookDeliveries",
  method: "POST",
  url: "/webhooks/:id/retry",
  summary: "Send failed deliveries again: one, those since a time, or all",
  description: "Each failed delivery chosen gets one more attempt now. Use it after fixing a receiver that was down, once the endpoint is enabled again.",
  scope: "admin",
  tags: ["webhooks"],
  params: WebhookIdParams,
  body: RetryWebhookSchema,
  responses: { 200: { description: "How many deliveries are due again", schema: RetryWebhookResponseSchema } },
  errors: [400, 401, 403, 404, 409, 415, 422, 429, 503],
  errorDescriptions: { 404: "No such endpoint, or delivery_id names no failed delivery of it", 409: "The endpoint is disabled" },
  async handler({ params, body, request }, deps) {
    return retryWebhookDeliveries(deps.db.prisma, request.apiKey!.id, params.id, body);
  },
});
