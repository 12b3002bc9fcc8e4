import { getMessageEvents } from "../../services/messages.ts";
import { defineRoute } from "../route.ts";
import { EventsSchema, IdParams } from "../schemas.ts";

export default defineRoute({
  operationId: "getMessageEvents",
  method: "GET",
  url: "/messages/:id/events",
  summary: "The attempt log of a message, oldest first, with the TLS evidence of every attempt",
  scope: "read",
  tags: ["messages"],
  params: IdParams,
  responses: { 200: { description: "The attempt log", schema: EventsSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    return getMessageEvents(deps.db.prisma, request.apiKey!.id, params.id);
  },
});
