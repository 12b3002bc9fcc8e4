import { bounceMxHost } from "../../config.ts";
import { listDomains } from "../../services/sender-domains.ts";
import { defineRoute } from "../route.ts";
import { SenderDomainListSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "listDomains",
  method: "GET",
  url: "/domains",
  summary: "The sender domains this key may send from, with their DNS records",
  scope: "admin",
  tags: ["domains"],
  responses: { 200: { description: "The domains, by name", schema: SenderDomainListSchema } },
  errors: [401, 403, 429, 503],
  async handler({ request }, deps) {
    const key = request.apiKey!;
    return { data: await listDomains(deps.db.prisma, { allowedDomains: key.allowedDomains, keyId: key.id }, bounceMxHost(deps.config)) };
  },
});
