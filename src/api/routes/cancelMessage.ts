import { cancelMessage } from "../../services/messages.ts";
import { defineRoute } from "../route.ts";
import { CancelResponseSchema, IdParams } from "../schemas.ts";

export default defineRoute({
  operationId: "cancelMessage",
  method: "POST",
  url: "/messages/:id/cancel",
  summary: "Cancel a queued or scheduled message (409 once sending started)",
  scope: "send",
  tags: ["messages"],
  params: IdParams,
  responses: {
    200: { description: "Cancelled", schema: CancelResponseSchema },
  },
  errors: [401, 403, 404, 409, 422, 429, 503],
  async handler({ params, request }, deps) {
    return cancelMessage(deps.db.prisma, request.apiKey!.id, params.id);
  },
});
