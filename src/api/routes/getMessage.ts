import { getMessage } from "../../services/messages.ts";
import { defineRoute } from "../route.ts";
import { IdParams, MessageSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "getMessage",
  method: "GET",
  url: "/messages/:id",
  summary: "A message with its recipients and each recipient's delivery attempts (with TLS evidence)",
  scope: "read",
  tags: ["messages"],
  params: IdParams,
  responses: { 200: { description: "The message", schema: MessageSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    return getMessage(deps.db.prisma, deps.cipher, request.apiKey!.id, params.id, { maxRetryMs: deps.config.SMTP_MAX_RETRY });
  },
});
