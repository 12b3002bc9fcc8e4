import { testWebhook } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { TestWebhookResponseSchema, WebhookIdParams } from "../schemas.ts";

export default defineRoute({
  operationId: "testWebhook",
  method: "POST",
  url: "/webhooks/:id/test",
  summary: "Send a signed webhook.test event to the endpoint now",
  description: "A worker sends it like any event (signed, retried on failure); its outcome is in GET /webhooks/{id}/deliveries.",
  scope: "admin",
  tags: ["webhooks"],
  params: WebhookIdParams,
  responses: { 202: { description: "Queued", schema: TestWebhookResponseSchema } },
  errors: [401, 403, 404, 409, 422, 429, 503],
  errorDescriptions: { 409: "The endpoint is disabled" },
  async handler({ params, request, reply }, deps) {
    const r = await testWebhook(deps.db.prisma, request.apiKey!.id, params.id);
    reply.code(202);
    return r;
  },
});
