import { z } from "zod";
import { EVENT_TYPES, type EventType } from "../../domain/event.ts";
import { listEvents } from "../../services/events.ts";
import { defineRoute } from "../route.ts";
import { EventListSchema } from "../schemas.ts";

const TYPE_LIST = new RegExp(`^(${EVENT_TYPES.map((t) => t.replace(".", "\\.")).join("|")})(,(${EVENT_TYPES.map((t) => t.replace(".", "\\.")).join("|")}))*$`);

const Query = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(200).optional(),
  type: z
    .string()
    .regex(TYPE_LIST, `must be one or more of ${EVENT_TYPES.join(", ")}, separated by commas`)
    .optional()
    .meta({ description: `Only these types, separated by commas: ${EVENT_TYPES.join(", ")}` }),
  message_id: z.uuid({ message: "message_id must be a message id (UUID)" }).optional(),
  since: z.iso
    .datetime({ offset: true, error: 'must be an ISO 8601 time with a time zone, such as "2030-01-01T00:00:00Z"' })
    .optional()
    .meta({ description: "Only events created at or after this time (inclusive)" }),
});

export default defineRoute({
  operationId: "listEvents",
  method: "GET",
  url: "/events",
  summary: "This key's events, oldest first, in the order they were committed",
  description:
    "Every change of a recipient's status, written in the same transaction as the change: an event is never missing for a committed change and never " +
    "present for one that was rolled back. Page with `next_cursor`; at the end of the log, keep the last `next_cursor` and ask again later " +
    "for the events that follow (a pull alternative to webhooks). An event appears once every transaction that began before it has ended.",
  scope: "read",
  tags: ["events"],
  query: Query,
  responses: { 200: { description: "One page of events", schema: EventListSchema } },
  errors: [401, 403, 422, 429, 503],
  async handler({ query, request }, deps) {
    return listEvents(deps.db.prisma, request.apiKey!.id, {
      limit: query.limit,
      cursor: query.cursor,
      types: query.type ? (query.type.split(",") as EventType[]) : undefined,
      messageId: query.message_id,
      since: query.since ? new Date(query.since) : undefined,
    });
  },
});
