// GET /metrics on the HTTPS port, only when METRICS_TOKEN is set, and only with
// `Authorization: Bearer <METRICS_TOKEN>` (compared in constant time). Not an API key: a
// Prometheus server gets read access to figures, not to messages.
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { AppError } from "../domain/errors.ts";
import { registry } from "../metrics.ts";

const digest = (s: string) => createHash("sha256").update(s).digest();

export function registerMetricsRoute(app: FastifyInstance, token: string): void {
  const expected = digest(`Bearer ${token}`);
  app.get("/metrics", { config: { scope: null } }, async (req, reply) => {
    const given = req.headers.authorization;
    // (The 401 carries WWW-Authenticate: Bearer, as every 401 of the API does.)
    if (typeof given !== "string" || !timingSafeEqual(digest(given), expected))
      throw new AppError("unauthorized", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>");
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
