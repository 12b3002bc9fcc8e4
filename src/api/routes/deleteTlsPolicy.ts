import { removeTlsPolicy } from "../../services/tls-policies.ts";
import { defineRoute } from "../route.ts";
import { DeleteTlsPolicyResponseSchema, TlsPolicyIdParams } from "../schemas.ts";

export default defineRoute({
  operationId: "deleteTlsPolicy",
  method: "DELETE",
  url: "/tls-policies/:id",
  summary: "Remove a rule of the TLS policy map",
  description: "Only an admin key not limited to some sender domains may remove one. Workers stop applying it within a minute.",
  scope: "admin",
  tags: ["tls-policies"],
  params: TlsPolicyIdParams,
  responses: { 200: { description: "Removed", schema: DeleteTlsPolicyResponseSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    return removeTlsPolicy(deps.db.pool, { allowedDomains: request.apiKey!.allowedDomains }, params.id);
  },
});
