import { z } from "zod";
import { SUPPRESSION_REASONS } from "../../domain/suppression.ts";
import { listSuppressions } from "../../services/suppressions.ts";
import { defineRoute } from "../route.ts";
import { SuppressionListSchema } from "../schemas.ts";

const Query = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(200).optional(),
  reason: z.enum(SUPPRESSION_REASONS).optional(),
  domain: z.string().max(253).optional().meta({ description: "Only this sender domain's list (one this key may send from)" }),
  address: z.string().max(254).optional().meta({ description: "Only this address: whether, where and why it is suppressed" }),
});

export default defineRoute({
  operationId: "listSuppressions",
  method: "GET",
  url: "/suppressions",
  summary: "Suppressed addresses of the sender domains this key may send from, newest first",
  description:
    "Each sender domain has its own list: an address that hard-bounced or complained for one merchant's domain is still mailed from another's. " +
    "A recipient on the list is not sent to: it gets status `suppressed` and a `message.suppressed` event, and the `POST /send` answer names it.",
  scope: "read",
  tags: ["suppressions"],
  query: Query,
  responses: { 200: { description: "One page of entries", schema: SuppressionListSchema } },
  errors: [401, 403, 422, 429, 503],
  async handler({ query, request }, deps) {
    const key = request.apiKey!;
    return listSuppressions(deps.db.prisma, { keyId: key.id, allowedDomains: key.allowedDomains }, query);
  },
});
