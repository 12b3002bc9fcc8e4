// A real HTTPS webhook receiver on loopback, with a certificate from the test CA (the one
// the test worker trusts through WEBHOOK_CA_FILE). It records every request as it came
// and answers from a script, so a test can make it fail, slow down, redirect or say Gone.
import { createServer, type Server } from "node:https";
import type { IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { testServerCertificates } from "./app.ts";
import { trackOpen } from "./leak-guard.ts";

interface ReceivedWebhook {
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

/** One scripted answer; after the script runs out, 200. */
interface ScriptedAnswer {
  status: number;
  headers?: Record<string, string>;
  /** Answer only after this many ms (a slow receiver). */
  delayMs?: number;
}

export interface WebhookReceiver {
  url: string;
  received: ReceivedWebhook[];
  /** Answers to give, in order, to the next requests. */
  script(...answers: ScriptedAnswer[]): void;
  close(): Promise<void>;
}

export async function startWebhookReceiver(path = "/hooks/sealpost", port = 0): Promise<WebhookReceiver> {
  const { leaf } = testServerCertificates();
  const received: ReceivedWebhook[] = [];
  const answers: ScriptedAnswer[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const server: Server = createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), at: Date.now() });
      const a = answers.shift() ?? { status: 200 };
      const answer = () => {
        res.writeHead(a.status, { "content-type": "text/plain", ...a.headers });
        res.end("ok");
      };
      if (a.delayMs) {
        const t = setTimeout(() => {
          timers.delete(t);
          answer();
        }, a.delayMs);
        timers.add(t);
      } else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const closed = trackOpen("webhook receiver", "startWebhookReceiver");
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}${path}`,
    received,
    script: (...a) => void answers.push(...a),
    async close() {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      closed();
    },
  };
}
