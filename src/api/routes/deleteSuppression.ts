import { z } from "zod";
import { deleteSuppression } from "../../services/suppressions.ts";
import { defineRoute } from "../route.ts";
import { DeleteSuppressionResponseSchema } from "../schemas.ts";

const Params = z.strictObject({ address: z.string().max(254) });
const Query = z.strictObject({
  domain: z.string().max(253).optional().meta({ description: "Only from this sender domain's list; without it, from every list this key may see" }),
});

export default defineRoute({
  operationId: "deleteSuppression",
  method: "DELETE",
  url: "/suppressions/:address",
  summary: "Mail an address again: remove it from the suppression list",
  description:
    "Removing a hard bounce or a complaint is on you: mailing an address that does not exist, or someone who reported you, harms how receivers treat all of the domain's mail.",
  scope: "admin",
  tags: ["suppressions"],
  params: Params,
  query: Query,
  responses: { 200: { description: "Removed", schema: DeleteSuppressionResponseSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, query, request }, deps) {
    const key = request.apiKey!;
    return deleteSuppression(deps.db.prisma, { keyId: key.id, allowedDomains: key.allowedDomains }, { address: params.address, domain: query.domain });
  },
});
