import { listWebhooks } from "../../services/webhooks.ts";
import { defineRoute } from "../route.ts";
import { WebhookListSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "listWebhooks",
  method: "GET",
  url: "/webhooks",
  summary: "This key's webhook endpoints, oldest first",
  scope: "admin",
  tags: ["webhooks"],
  responses: { 200: { description: "The endpoints (never their secrets)", schema: WebhookListSchema } },
  errors: [401, 403, 429, 503],
  async handler({ request }, deps) {
    return listWebhooks(deps.db.prisma, request.apiKey!.id);
  },
});
