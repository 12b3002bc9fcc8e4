import { defineRoute } from "../route.ts";
import { JwksSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "getReceiptKeys",
  method: "GET",
  url: "/.well-known/jwks.json",
  summary: "The public keys that sign delivery receipts (JWKS, RFC 7517)",
  description: "Every key that signed receipts, the current one first; a retired key stays here so the receipts it signed still verify.",
  scope: null,
  tags: ["operations"],
  responses: { 200: { description: "The key set", schema: JwksSchema } },
  errors: [503],
  async handler(_input, deps) {
    return deps.receipts.jwks();
  },
});
