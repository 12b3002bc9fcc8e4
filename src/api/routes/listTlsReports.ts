import { z } from "zod";
import { reportSettings, tlsReports } from "../../services/tls-reports.ts";
import { defineRoute } from "../route.ts";
import { TlsReportListSchema } from "../schemas.ts";

const Query = z.strictObject({
  date: z
    .string()
    .regex(/^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/, "must be a UTC day such as 2026-03-01")
    .optional()
    .meta({ description: "The UTC day, such as 2026-03-01; default: yesterday (the last whole day)" }),
  domain: z.string().max(253).optional().meta({ description: "Only this recipient domain" }),
});

export default defineRoute({
  operationId: "listTlsReports",
  method: "GET",
  url: "/tls-reports",
  summary: "SMTP TLS reports (RFC 8460) of one day: what direct delivery met at each recipient domain",
  description:
    "One aggregate report per recipient domain, in the RFC's JSON: per policy (the domain's MTA-STS policy, or no-policy-found), " +
    "the successful and failed sessions, and each kind of failure with the MX host and address (starttls-not-supported, certificate-host-mismatch, " +
    "certificate-expired, certificate-not-trusted, validation-failure). Built from the delivery evidence; a pooled connection that carried several messages counts as one session; " +
    "deliveries through SMTP_RELAY_URL are not in them. They cover every sender's mail, so only an admin key not limited to some sender domains may read them.",
  scope: "admin",
  tags: ["tls-policies"],
  query: Query,
  responses: { 200: { description: "The day's reports", schema: TlsReportListSchema } },
  errors: [401, 403, 422, 429, 503],
  async handler({ query, request }, deps) {
    return tlsReports(deps.db.pool, { allowedDomains: request.apiKey!.allowedDomains }, reportSettings(deps.config), query, (deps.now ?? (() => new Date()))());
  },
});
