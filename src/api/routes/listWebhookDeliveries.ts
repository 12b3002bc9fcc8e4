import { z } from "zod";
import { listWebhookDeliveries } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { WebhookDeliveryListSchema, WebhookIdParams } from "../schemas.ts";

const Query = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(40).optional(),
});

export default defineRoute({
  operationId: "listWebhookDeliveries",
  method: "GET",
  url: "/webhooks/:id/deliveries",
  summary: "The endpoint's deliveries, newest first, each with its attempts",
  scope: "admin",
  tags: ["webhooks"],
  params: WebhookIdParams,
  query: Query,
  responses: { 200: { description: "One page of deliveries", schema: WebhookDeliveryListSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, query, request }, deps) {
    return listWebhookDeliveries(deps.db.prisma, request.apiKey!.id, params.id, query);
  },
});
