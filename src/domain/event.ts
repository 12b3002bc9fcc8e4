// Events (issue 12): every change of a recipient's status, as the event log (GET /events)
// and webhooks show it. Written by the statements that make the change (the outbox, see
// migration 20261206000000_events); this file names them and their pagination cursor.
import { AppError } from "./errors.ts";

export const MESSAGE_EVENT_TYPES = [
  "message.queued", "message.scheduled", "message.delivered", "message.deferred", "message.bounced", "message.failed", "message.cancelled", "message.suppressed",
  "message.complained",
] as const;
/** `webhook.disabled`: an endpoint that failed for five days, or answered 410 Gone, no longer gets deliveries. */
export const EVENT_TYPES = [...MESSAGE_EVENT_TYPES, "webhook.disabled"] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Where a reader of the log got to: the (transaction, id) of the last event it read. */
export interface EventPosition {
  txid: string;
  id: string;
}

/** Opaque to clients: base64url of "<txid>.<id>". */
export function encodeEventCursor(p: EventPosition): string {
  return Buffer.from(`${p.txid}.${p.id}`, "utf8").toString("base64url");
}

export function decodeEventCursor(cursor: string): EventPosition {
  const m = /^(\d{1,20})\.(\d{1,19})$/.exec(Buffer.from(cursor, "base64url").toString("utf8"));
  if (!m) throw new AppError("invalid_request", "the cursor is not valid", { errors: [{ path: "query.cursor", message: "not a cursor returned by GET /events" }] });
  return { txid: m[1]!, id: m[2]! };
}

/** The public id of an event (also its webhook-id). */
export const eventId = (id: string | bigint) => `evt_${id}`;
