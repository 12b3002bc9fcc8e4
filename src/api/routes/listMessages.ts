import { z } from "zod";
import { MESSAGE_STATUSES, TAG } from "../../domain/message.ts";
import { listMessages } from "../../services/messages.ts";
import { defineRoute } from "../route.ts";
import { MessageListSchema } from "../schemas.ts";

const Query = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(200).optional(),
  status: z.enum(MESSAGE_STATUSES).optional(),
  tag: z.string().regex(TAG, "must be 1-64 characters from A-Z a-z 0-9 _ . : -").optional(),
  created_after: z.iso
    .datetime({ offset: true, error: 'must be an ISO 8601 time with a time zone, such as "2030-01-01T00:00:00Z"' })
    .optional()
    .meta({ description: 'An ISO 8601 time with a time zone, such as "2030-01-01T00:00:00Z": messages created at or after it (inclusive)' }),
  created_before: z.iso
    .datetime({ offset: true, error: 'must be an ISO 8601 time with a time zone, such as "2030-01-01T00:00:00Z"' })
    .optional()
    .meta({ description: 'An ISO 8601 time with a time zone, such as "2030-01-01T00:00:00Z": messages created before it (exclusive)' }),
});

export default defineRoute({
  operationId: "listMessages",
  method: "GET",
  url: "/messages",
  summary: "Messages of this key, newest first, cursor-paginated",
  scope: "read",
  tags: ["messages"],
  query: Query,
  responses: { 200: { description: "One page of messages", schema: MessageListSchema } },
  errors: [401, 403, 422, 429, 503],
  async handler({ query, request }, deps) {
    return listMessages(deps.db.prisma, deps.cipher, request.apiKey!.id, {
      limit: query.limit,
      cursor: query.cursor,
      status: query.status,
      tag: query.tag,
      createdAfter: query.created_after ? new Date(query.created_after) : undefined,
      createdBefore: query.created_before ? new Date(query.created_before) : undefined,
    });
  },
});
