import { z } from "zod";
import { AppError } from "../../domain/errors.ts";
import { normalizeSendRequest, SendRequestSchema } from "../../domain/message.ts";
import { acceptMessage } from "../../services/send-message.ts";
import { defineRoute } from "../route.ts";
import { SendResponseSchema } from "../schemas.ts";

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

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
    const n = normalizeSendRequest(
      body,
      { attachmentMaxBytes: deps.config.ATTACHMENT_MAX_BYTES, attachmentsTotalMaxBytes: deps.config.ATTACHMENTS_TOTAL_MAX_BYTES },
      now,
    );
    if (!n.ok) {
      const tooBig = n.errors.some((e) => e.path.startsWith("attachments"));
      throw new AppError(tooBig ? "payload_too_large" : "invalid_request", tooBig ? "attachments exceed the size limit" : "the request is not valid", { errors: n.errors });
    }
    const result = await acceptMessage(
      { db: deps.db.prisma, cipher: deps.cipher, serverTlsPolicy: deps.config.SMTP_TLS_POLICY, now: () => now },
      request.apiKey!,
      n.value,
      { idempotencyKey: idem, requestBody: body },
    );
    if (result.replayed) reply.header("idempotent-replayed", "true");
    return reply.code(result.statusCode).send(result.body);
  },
});
