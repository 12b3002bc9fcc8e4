import { z } from "zod";
import { AppError } from "../../domain/errors.ts";
import { SendRequestSchema } from "../../domain/message.ts";
import { acceptMessage, type SendContext } from "../../services/send-message.ts";
import type { AppDeps } from "../deps.ts";
import { countAccepted } from "../../metrics.ts";
import { defineRoute } from "../route.ts";
import { SendResponseSchema } from "../schemas.ts";

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** What a 503 from POST /send means (the contract's text; README says the same). */
const SEND_UNAVAILABLE =
  "The database is unavailable or too slow to answer in time (an outage, a failover, a lock held past the statement timeout, a full disk); " +
  "retry after Retry-After seconds. A 503 does not always mean the message was not stored: a statement the database had already " +
  "received may still commit after the answer. Retrying with the same Idempotency-Key is safe (it replays the first 202 if the message " +
  "was stored, and stores it once if not); a retry without an Idempotency-Key may store the message twice.";

/** What accepting a message needs from the app, shared by /send and /send/batch. */
export function sendContext(deps: AppDeps): SendContext {
  const c = deps.config;
  return {
    db: deps.db.prisma,
    writer: deps.writer,
    cipher: deps.cipher,
    serverTlsPolicy: c.SMTP_TLS_POLICY,
    limits: { attachmentMaxBytes: c.ATTACHMENT_MAX_BYTES, attachmentsTotalMaxBytes: c.ATTACHMENTS_TOTAL_MAX_BYTES },
    senderDomains: deps.senderDomains,
    ...(deps.now ? { now: deps.now } : {}),
  };
}

export default defineRoute({
  operationId: "sendMessage",
  method: "POST",
  url: "/send",
  summary: "Accept a message for delivery",
  description:
    "Validates the message, stores it encrypted and queues it. Answers 202 only after the message and its queued work are committed together.",
  scope: "send",
  tags: ["messages"],
  body: SendRequestSchema,
  headers: [
    {
      name: "Idempotency-Key",
      description:
        "Replays the first response for 24 h when the same key and body are sent again; another body is 409. " +
        "Send one with every message, so that retrying after a 503 or a lost connection can never store it twice.",
      schema: z.string().regex(IDEMPOTENCY_KEY),
    },
  ],
  responses: {
    202: { description: "Accepted; the message is queued or scheduled", schema: SendResponseSchema },
  },
  errors: [400, 401, 403, 409, 413, 415, 422, 429, 503],
  errorDescriptions: { 503: SEND_UNAVAILABLE },
  async handler({ body, request, reply }, deps) {
    const idem = request.headers["idempotency-key"];
    if (idem !== undefined && (typeof idem !== "string" || !IDEMPOTENCY_KEY.test(idem)))
      throw new AppError("invalid_request", "Idempotency-Key: must be 1-255 visible ASCII characters without spaces, such as a UUID", {
        // A request header, not a field of the body: named as the header is.
        errors: [{ path: "Idempotency-Key", message: "must be 1-255 visible ASCII characters without spaces, such as a UUID" }],
      });
    const result = await acceptMessage(sendContext(deps), request.apiKey!, body, { idempotencyKey: idem });
    if (result.replayed) reply.header("idempotent-replayed", "true");
    else countAccepted(1);
    // A replay answers the status stored with the first response (always 202 today).
    reply.code(result.statusCode);
    return result.body;
  },
});
