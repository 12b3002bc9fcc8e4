// A local webhook receiver for trying webhooks (README, "Try it"): listens on
// http://localhost:4000/hooks (plain HTTP is allowed to localhost outside production),
// checks every request's signature with the `standardwebhooks` package and the secret in
// SEALPOST_WEBHOOK_SECRET, and prints what arrived. Answers 204 when the signature holds,
// 400 when it does not.
import http from "node:http";
import { Webhook } from "standardwebhooks";

const secret = process.env.SEALPOST_WEBHOOK_SECRET;
if (!secret?.startsWith("whsec_")) {
  process.stderr.write("webhook-receiver: set SEALPOST_WEBHOOK_SECRET to the whsec_... secret POST /webhooks answered\n");
  process.exit(2);
}
const port = Number(process.env.PORT ?? 4000);
const wh = new Webhook(secret);

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const headers = Object.fromEntries(["webhook-id", "webhook-timestamp", "webhook-signature"].map((h) => [h, String(req.headers[h] ?? "")]));
    try {
      const e = wh.verify(body, headers) as { type: string; data: Record<string, any> };
      const d = e.data;
      const about = d.recipient
        ? `${d.recipient.address} (message ${d.message_id})${d.attempt ? `: ${d.attempt.mx_host} ${d.attempt.tls.used ? `${d.attempt.tls.version}, certificate ${d.attempt.tls.verified ? "verified" : "NOT verified"}` : "no TLS"}, SMTP ${d.smtp?.code}` : ""}`
        : JSON.stringify(d);
      process.stdout.write(`verified ${headers["webhook-id"]} ${e.type} ${about}\n`);
      res.writeHead(204).end();
    } catch (err) {
      process.stdout.write(`REJECTED ${headers["webhook-id"] || "(no webhook-id)"}: ${(err as Error).message}\n`);
      res.writeHead(400).end();
    }
  });
});
server.on("error", (err: NodeJS.ErrnoException) => {
  process.stderr.write(err.code === "EADDRINUSE" ? `webhook-receiver: port ${port} is in use: set PORT\n` : `webhook-receiver: ${err.message}\n`);
  process.exit(1);
});
server.listen(port, "localhost", () => process.stdout.write(`webhook receiver on http://localhost:${port}/hooks\n`));
process.on("SIGINT", () => server.close(() => process.exit(0)));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
