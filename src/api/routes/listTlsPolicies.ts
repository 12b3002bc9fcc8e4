import { listTlsPolicies } from "../../services/tls-policies.ts";
import { defineRoute } from "../route.ts";
import { TlsPolicyListSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "listTlsPolicies",
  method: "GET",
  url: "/tls-policies",
  summary: "The TLS policy map: rules that make delivery to some recipient domains stricter",
  description:
    "Rules of SMTP_TLS_POLICY_MAP (origin config) and of this API (origin api). A rule makes TLS required for a recipient domain, " +
    "optionally only to the MX hosts listed or only with a pinned certificate. The effective policy of a delivery is the strictest of " +
    "the server's, the key's, the message's, this map's and the recipient domain's MTA-STS policy; each attempt's policy_source says which.",
  scope: "admin",
  tags: ["tls-policies"],
  responses: { 200: { description: "Every rule", schema: TlsPolicyListSchema } },
  errors: [401, 403, 429, 503],
  async handler(_req, deps) {
    return listTlsPolicies(deps.db.pool, deps.config.SMTP_TLS_POLICY_MAP);
  },
});
