import { removeDomain } from "../../services/sender-domains.ts";
import { defineRoute } from "../route.ts";
import { DeleteDomainResponseSchema, DomainIdParams } from "../schemas.ts";

export default defineRoute({
  operationId: "deleteDomain",
  method: "DELETE",
  url: "/domains/:id",
  summary: "Remove a sender domain and its DKIM keys; mail from it is no longer signed",
  scope: "admin",
  tags: ["domains"],
  params: DomainIdParams,
  responses: { 200: { description: "Removed", schema: DeleteDomainResponseSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    const key = request.apiKey!;
    await removeDomain(deps.db.prisma, { allowedDomains: key.allowedDomains, keyId: key.id }, params.id);
    return { id: params.id, deleted: true as const };
  },
});
