import { bounceMxHost } from "../../config.ts";
import { getDomain } from "../../services/sender-domains.ts";
import { defineRoute } from "../route.ts";
import { DomainIdParams, SenderDomainSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "getDomain",
  method: "GET",
  url: "/domains/:id",
  summary: "A sender domain, its DKIM selectors and the DNS records to publish",
  scope: "admin",
  tags: ["domains"],
  params: DomainIdParams,
  responses: { 200: { description: "The domain", schema: SenderDomainSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    const key = request.apiKey!;
    return getDomain(deps.db.prisma, { allowedDomains: key.allowedDomains, keyId: key.id }, params.id, bounceMxHost(deps.config));
  },
});
