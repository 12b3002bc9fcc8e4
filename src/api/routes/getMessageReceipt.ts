import { messageReceipt } from "../../services/receipts.ts";
import { defineRoute } from "../route.ts";
import { IdParams, ReceiptResponseSchema } from "../schemas.ts";

export default defineRoute({
  operationId: "getMessageReceipt",
  method: "GET",
  url: "/messages/:id/receipt",
  summary: "A signed delivery receipt: each recipient's delivery evidence as a JWT you can verify offline",
  description:
    "The evidence of each recipient's last attempt (its delivered one, once delivered): addresses, Message-ID, the SHA-256 of the exact bytes sent, " +
    "MX host, IP, TLS version and cipher, the certificate's fingerprint, the TLS policy, the SMTP reply and times, in the `receipt` claim of a JWT " +
    "(compact JWS, EdDSA with Ed25519) signed by this installation. Verify it with any JOSE library against `GET /.well-known/jwks.json`; keep it " +
    "as proof of how the message left. Ask again after a change: each receipt shows the state when it was made.",
  scope: "read",
  tags: ["messages"],
  params: IdParams,
  responses: { 200: { description: "The receipt", schema: ReceiptResponseSchema } },
  errors: [401, 403, 404, 422, 429, 503],
  async handler({ params, request }, deps) {
    return messageReceipt(deps.db.prisma, deps.receipts, request.apiKey!.id, params.id);
  },
});
