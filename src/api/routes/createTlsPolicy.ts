import { z } from "zod";
import { addTlsPolicy } from "../../services/tls-policies.ts";
import { defineRoute } from "../route.ts";
import { TlsPolicyRuleSchema } from "../schemas.ts";

const Body = z
  .strictObject({
    pattern: z.string().max(253).meta({ description: 'A recipient domain ("bank.example") or a leading dot for the domains under it (".bank.example")' }),
    policy: z.literal("required").optional().meta({ description: 'Only "required": a rule can only make delivery stricter' }),
    mx: z.array(z.string().max(253)).max(20).optional().meta({ description: 'Try only these MX hosts, such as ["mx1.bank.example", "*.mail.bank.example"]' }),
    fingerprints: z.array(z.string().max(100)).max(20).optional().meta({
      description: "Accept only a certificate with one of these SHA-256 fingerprints (64 hex digits, colons optional), as a delivery's tls.certificate.fingerprint_sha256 shows it",
    }),
    description: z.string().max(500).optional(),
  })
  .meta({ id: "CreateTlsPolicyRequest" });

export default defineRoute({
  operationId: "createTlsPolicy",
  method: "POST",
  url: "/tls-policies",
  summary: "Require TLS for a recipient domain, optionally pinning its MX hosts or certificates",
  description:
    "Applies to every sender's mail to that domain, within a minute on every worker, so only an admin key not limited to some sender domains may add one (403 otherwise). " +
    "A rule for a pattern that has one already is 409: remove it first.",
  scope: "admin",
  tags: ["tls-policies"],
  body: Body,
  responses: { 201: { description: "Added", schema: TlsPolicyRuleSchema } },
  errors: [400, 401, 403, 409, 415, 422, 429, 503],
  async handler({ body, request, reply }, deps) {
    const key = request.apiKey!;
    const view = await addTlsPolicy(deps.db.pool, { keyId: key.id, allowedDomains: key.allowedDomains }, deps.config.SMTP_TLS_POLICY_MAP, body);
    reply.code(201);
    return view;
  },
});
