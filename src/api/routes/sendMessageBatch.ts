import { z } from "zod";
import { AppError, summarizeFieldErrors } from "../../domain/errors.ts";
import { SendRequestSchema } from "../../domain/message.ts";
import { acceptMessage } from "../../services/send-message.ts";
import { fieldErrors } from "../field-errors.ts";
import { problemFor } from "../plugins/errors.ts";
import { isDatabaseUnavailable } from "../../db/errors.ts";
import { defineRoute } from "../route.ts";
import { countAccepted } from "../../metrics.ts";
import { SendBatchResponseSchema, type SendBatchResponseView } from "../schemas.ts";
import { sendContext } from "./sendMessage.ts";

const MAX_BATCH = 100;

// Items are validated each on its own so that one bad message does not sink the others;
// the envelope itself (an array of 1-100 objects) must be valid.
const BatchRequest = z
  .strictObject({ messages: z.array(z.looseObject({})).min(1).max(MAX_BATCH) })
  .meta({ id: "SendBatchRequest", description: `Up to ${MAX_BATCH} messages; each item is a SendRequest.` });

export default defineRoute({
  operationId: "sendMessageBatch",
  method: "POST",
  url: "/send/batch",
  summary: `Accept up to ${MAX_BATCH} messages in one call, with a result per message`,
  description:
    "Each message is validated and stored as POST /send would store it, so valid messages are accepted even when others are rejected. " +
    "The answer is 200 with one result per message; an accepted item has the fields of a 202 from POST /send. Idempotency-Key is not supported on batches.",
  scope: "send",
  tags: ["messages"],
  body: BatchRequest,
  responses: { 200: { description: "Per-message results", schema: SendBatchResponseSchema } },
  errors: [400, 401, 403, 413, 415, 422, 429, 503],
  errorDescriptions: {
    503:
      "No message of the batch was accepted because the database is unavailable or too slow to answer in time; retry after Retry-After " +
      "seconds. As with POST /send, a 503 does not always mean nothing was stored: a statement the database had already received may " +
      "still commit after the answer, so resending the batch may store some messages twice. Where duplicates matter, send each message " +
      "with POST /send and an Idempotency-Key. (When only some messages meet the outage, the answer is 200 and those items carry a 503 problem, with the same meaning.)",
  },
  async handler({ body, request }, deps) {
    if (request.headers["idempotency-key"] !== undefined)
      throw new AppError("invalid_request", "Idempotency-Key is not supported on /send/batch; use it per message with POST /send", {
        errors: [{ path: "Idempotency-Key", message: "is not supported on /send/batch; send each message to POST /send with its own key" }],
      });
    const ctx = sendContext(deps);
    // All items are checked and written concurrently: the message writer puts them in as
    // few statements as it can, and each item still gets its own result.
    const outcomes = await Promise.allSettled(
      body.messages.map(async (item) => {
        const parsed = SendRequestSchema.safeParse(item, { reportInput: true });
        if (!parsed.success) {
          // Paths are relative to the item, whose index the result carries.
          const errors = fieldErrors(parsed.error, SendRequestSchema);
          throw new AppError("invalid_request", summarizeFieldErrors(errors, "the message is not valid"), { errors });
        }
        return (await acceptMessage(ctx, request.apiKey!, parsed.data)).body;
      }),
    );
    const failures = outcomes.flatMap((o) => (o.status === "rejected" ? [o.reason as Error] : []));
    const unexpected = failures.find((e) => !(e instanceof AppError) && !isDatabaseUnavailable(e));
    if (unexpected) throw unexpected;
    // Nothing accepted and the database is down: one 503 for the call, so it is retried whole.
    const outage = failures.find(isDatabaseUnavailable);
    if (outage && failures.length === outcomes.length) throw outage;
    // Otherwise each item says what happened to it, so a client resends only what was not
    // accepted (resending everything would duplicate the accepted ones).
    const data: SendBatchResponseView["data"] = outcomes.map((o, index) =>
      o.status === "fulfilled" ? { index, ...o.value } : { index, error: problemFor(o.reason as Error, request.id) },
    );
    const accepted = data.filter((d) => !("error" in d)).length;
    countAccepted(accepted);
    return { accepted, rejected: data.length - accepted, data };
  },
});
