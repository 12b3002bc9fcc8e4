import { z } from "zod";
import { MESSAGE_STATUSES, TAG } from "../../domain/message.ts";
import { listMessages } from "../../services/messages.ts";
import { defineRoute } from "../route.ts";
import { MessageListSchema } from "../schemas.ts";

const Query = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(200).optional(),
  status: z.enum(MESSAGE_STATUSES).optional(),
  tag: z.string().regex(TAG).optional(),
  created_after: z.iso.datetime({ offset: true }).optional().meta({ description: "inclusive" }),
  created_before: z.iso.datetime({ offset: true }).optional().meta({ description: "exclusive" }),
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
