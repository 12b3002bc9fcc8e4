import { bounceMxHost } from "../../config.ts";
import { rotateDkim } from "../../services/sender-domains.ts";
import { defineRoute } from "../route.ts";
import { DomainIdParams, SenderDomainSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "rotateDkim",
  method: "POST",
  url: "/domains/:id/rotate-dkim",
  summary: "Start a DKIM key rotation: new key pairs under new selectors, to publish beside the current ones",
  description:
    "The current keys keep signing until the new records verify (`POST /domains/{id}/verify`); then the new keys sign and the old ones stay published, " +
    "`retiring`, for DKIM_ROTATION_GRACE (7 days) so mail they signed still verifies, then retire.",
  scope: "admin",
  tags: ["domains"],
  params: DomainIdParams,
  responses: { 200: { description: "The domain, with the new keys pending and their records to publish", schema: SenderDomainSchema } },
  errors: [401, 403, 404, 409, 422, 429, 503],
  errorDescriptions: { 409: "A rotation is already waiting for its DNS records" },
  async handler({ params, request }, deps) {
    const key = request.apiKey!;
    return rotateDkim(deps.db.prisma, deps.cipher, { allowedDomains: key.allowedDomains, keyId: key.id }, params.id, bounceMxHost(deps.config));
  },
});
