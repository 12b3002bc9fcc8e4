// Headers for a JSON API that browsers should never render or cache: HSTS for two
// years, a CSP that allows nothing and no framing, no sniffing, no caching.
import type { FastifyInstance } from "fastify";
import helmet from "@fastify/helmet";

export async function registerSecurityHeaders(app: FastifyInstance): Promise<void> {
  await app.register(helmet, {
    global: true,
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    hsts: { maxAge: 63_072_000, includeSubDomains: true, preload: false },
    crossOriginResourcePolicy: { policy: "same-origin" },
    referrerPolicy: { policy: "no-referrer" },
    xFrameOptions: { action: "deny" },
  });
  app.addHook("onSend", async (_req, reply) => {
    reply.header("cache-control", "no-store");
  });
}
