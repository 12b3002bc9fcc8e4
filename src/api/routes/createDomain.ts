import { bounceMxHost } from "../../config.ts";
import { AddDomainRequestSchema } from "../../domain/sender-domain.ts";
import { addDomain } from "../../services/sender-domains.ts";
import { defineRoute } from "../route.ts";
import { SenderDomainSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "createDomain",
  method: "POST",
  url: "/domains",
  summary: "Add a sender domain: makes its DKIM keys and answers the DNS records to publish",
  scope: "admin",
  tags: ["domains"],
  body: AddDomainRequestSchema,
  responses: { 201: { description: "The domain, pending until its records are verified", schema: SenderDomainSchema } },
  errors: [400, 401, 403, 409, 415, 422, 429, 503],
  errorDescriptions: {
    403: "The key lacks the admin scope, or may not send from this domain (keys create --domains)",
    409: "The domain exists already",
  },
  async handler({ body, request, reply }, deps) {
    const key = request.apiKey!;
    const view = await addDomain(deps.db.prisma, deps.cipher, { allowedDomains: key.allowedDomains, keyId: key.id }, body, bounceMxHost(deps.config));
    reply.code(201);
    return view;
  },
});
