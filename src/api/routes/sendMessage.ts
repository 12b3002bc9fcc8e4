import { z } from "zod";
import { AppError } from "../../domain/errors.ts";
import { SendRequestSchema } from "../../domain/message.ts";
import { acceptMessage, prepareMessage } from "../../services/send-message.ts";
import type { Config } from "../../config.ts";
import { defineRoute } from "../route.ts";
import { SendResponseSchema } from "../schemas.ts";

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

export const attachmentLimits = (c: Config) => ({ attachmentMaxBytes: c.ATTACHMENT_MAX_BYTES, attachmentsTotalMaxBytes: c.ATTACHMENTS_TOTAL_MAX_BYTES });

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
      description: "Replays the first response for 24 h when the same key and body are sent again; another body is 409.",
      schema: z.string().regex(IDEMPOTENCY_KEY),
    },
  ],
  responses: {
    202: { description: "Accepted; the message is queued or scheduled", schema: SendResponseSchema },
  },
  errors: [400, 401, 403, 409, 413, 415, 422, 429, 503],
  async handler({ body, request, reply }, deps) {
    const idem = request.headers["idempotency-key"];
    if (idem !== undefined && (typeof idem !== "string" || !IDEMPOTENCY_KEY.test(idem)))
      throw new AppError("invalid_request", "Idempotency-Key must be 1-255 visible ASCII characters", {
        errors: [{ path: "headers.idempotency-key", message: "1-255 visible ASCII characters" }],
      });
    const now = deps.now?.() ?? new Date();
    const message = prepareMessage(body, attachmentLimits(deps.config), now);
    const result = await acceptMessage(
      { db: deps.db.prisma, ...(deps.writer ? { writer: deps.writer } : {}), cipher: deps.cipher, serverTlsPolicy: deps.config.SMTP_TLS_POLICY, now: () => now },
      request.apiKey!,
      message,
      { idempotencyKey: idem, requestBody: body },
    );
    if (result.replayed) reply.header("idempotent-replayed", "true");
    return reply.code(result.statusCode).send(result.body);
  },
});
