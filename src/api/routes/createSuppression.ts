import { z } from "zod";
import { addSuppression } from "../../services/suppressions.ts";
import { defineRoute } from "../route.ts";
import { SuppressionSchema } from "../schemas.ts";

const Body = z
  .strictObject({
    address: z.string().max(254).meta({ description: 'The address to stop mailing, such as "alice@example.com"' }),
    domain: z.string().max(253).optional().meta({
      description: "The sender domain whose list it goes on; may be left out when this key may send from exactly one domain",
    }),
    description: z.string().max(500).optional().meta({ description: 'Your note, such as "unsubscribed on 2026-03-02"' }),
  })
  .meta({ id: "CreateSuppressionRequest" });

export default defineRoute({
  operationId: "createSuppression",
  method: "POST",
  url: "/suppressions",
  summary: "Stop mailing an address from a sender domain (an unsubscribe, a closed account)",
  description: "Idempotent: an address already on the list keeps its entry and reason, and the answer is 200 with it instead of 201.",
  scope: "send",
  tags: ["suppressions"],
  body: Body,
  responses: {
    201: { description: "Added", schema: SuppressionSchema },
    200: { description: "Already on the list: the existing entry", schema: SuppressionSchema },
  },
  errors: [400, 401, 403, 415, 422, 429, 503],
  async handler({ body, request, reply }, deps) {
    const key = request.apiKey!;
    const r = await addSuppression(deps.db.prisma, { keyId: key.id, allowedDomains: key.allowedDomains }, body);
    reply.code(r.created ? 201 : 200);
    return r.view;
  },
});
