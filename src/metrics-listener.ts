// METRICS_LISTEN: /metrics over plain HTTP on a loopback address (config.ts refuses any
// other), for a Prometheus agent or sidecar on the same host. Any process kind may have
// one: serve, worker, or both in `start`.
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { ConfigError, type Config } from "./config.ts";
import { registry } from "./metrics.ts";

export async function startMetricsListener(config: Config, logger: Logger): Promise<{ url: string; close: () => Promise<void> } | null> {
  const listen = config.METRICS_LISTEN;
  if (!listen) return null;
  const at = listen.lastIndexOf(":");
  const host = listen.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(listen.slice(at + 1));
  const server = http.createServer((req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("only GET /metrics here\n");
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
      (err: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(err.code === "EADDRINUSE" ? new ConfigError(`METRICS_LISTEN: ${listen} is in use: choose another port (each process needs its own)`, { cause: err })
        : err.code === "EADDRNOTAVAIL" ? new ConfigError(`METRICS_LISTEN: ${host} is not an address of this machine`, { cause: err }) : err));
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${bound.port}/metrics`;
  logger.info({ component: "metrics", listen: url }, `metrics on ${url}`);
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
