import { getWebhook } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { WebhookIdParams, WebhookSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "getWebhook",
  method: "GET",
  url: "/webhooks/:id",
  summary: "One webhook endpoint: whether it is enabled, and since when it has been failing",
  scope: "admin",
  tags: ["webhooks"],
  params: WebhookIdParams,
  responses: { 200: { description: "The endpoint (never its secret)", schema: WebhookSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    return getWebhook(deps.db.prisma, request.apiKey!.id, params.id);
  },
});
