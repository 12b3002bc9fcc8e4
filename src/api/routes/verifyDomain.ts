import { verifySettings } from "../../config.ts";
import { verifyDomain } from "../../services/sender-domains.ts";
import { defineRoute } from "../route.ts";
import { DomainIdParams, VerifyDomainResponseSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "verifyDomain",
  method: "POST",
  url: "/domains/:id/verify",
  summary: "Check the domain's DNS records (DKIM, SPF, DMARC) through the worker's resolver",
  description: "Each record's state, with what DNS holds beside what is expected. A DNS timeout is `pending`, not a failure.",
  scope: "admin",
  tags: ["domains"],
  params: DomainIdParams,
  responses: { 200: { description: "The check", schema: VerifyDomainResponseSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    const key = request.apiKey!;
    return verifyDomain(deps.db.prisma, deps.dns, { allowedDomains: key.allowedDomains, keyId: key.id }, params.id, verifySettings(deps.config));
  },
});
