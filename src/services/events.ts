// The event log (issue 12): GET /events pages through a key's events in commit order. The
// same view is the `data` of a webhook.
import type { z } from "zod";
import type { EventSchema } from "../api/schemas.ts";
import type { Db } from "../db/client.ts";
import { findEvents, type EventRow } from "../db/events.ts";
import { decodeEventCursor, encodeEventCursor, eventId, type EventType } from "../domain/event.ts";
import { attemptView } from "./messages.ts";

export interface EventQuery {
  limit: number;
  cursor?: string | undefined;
  types?: readonly EventType[] | undefined;
  messageId?: string | undefined;
  since?: Date | undefined;
}

export function eventView(e: EventRow): z.output<typeof EventSchema> {
  const base = { id: eventId(e.id), created_at: e.createdAt.toISOString() };
  if (e.type === "webhook.disabled") return { ...base, type: e.type, data: { endpoint_id: e.endpointId!, reason: e.replyText ?? "" } };
  const smtp = e.replyCode !== null || e.enhancedCode !== null || e.replyText !== null ? { code: e.replyCode, enhanced_code: e.enhancedCode, text: e.replyText } : null;
  return {
    ...base,
    type: e.type,
    data: {
      message_id: e.messageId!,
      recipient: { address: e.address!, kind: e.kind as "to" | "cc" | "bcc" },
      tags: e.tags ?? [],
      metadata: (e.metadata ?? null) as Record<string, string> | null,
      smtp,
      next_attempt_at: e.retryAt?.toISOString() ?? null,
      attempt: e.attemptId === null ? null : attemptView({
        ...e, attempt: e.attempt!, startedAt: e.startedAt!, durationMs: e.durationMs!, outcome: e.outcome!, policy: e.policy!, tls: e.tls!,
        dkimSelectors: e.dkimSelectors ?? [], replyCode: e.attemptReplyCode, enhancedCode: e.attemptEnhancedCode, replyText: e.attemptReplyText,
      }),
    },
  };
}

/**
 * One page of the key's events after `cursor`. `next_cursor` is always given: at the end of
 * the log it is where to ask again for events that come later.
 */
export async function listEvents(db: Db, apiKeyId: string, q: EventQuery) {
  const after = q.cursor ? decodeEventCursor(q.cursor) : null;
  const rows = await findEvents(db, apiKeyId, {
    after, types: q.types ?? null, messageId: q.messageId ?? null, since: q.since ?? null, limit: q.limit + 1,
  });
  const page = rows.slice(0, q.limit);
  const last = page[page.length - 1];
  return {
    data: page.map(eventView),
    has_more: rows.length > q.limit,
    next_cursor: last ? encodeEventCursor(last) : (q.cursor ?? null),
  };
}
