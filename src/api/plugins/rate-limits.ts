// Two limits (SPEC section 4): per client IP before authentication, so a flood of
// bad keys is throttled without touching the database, and per API key after it.
// Both answer 429 problem+json with Retry-After and the RateLimit-* headers of the
// IETF draft. The store is in memory per process.
import type { FastifyInstance } from "fastify";
import rateLimit from "@fastify/rate-limit";
import { AppError } from "../../domain/errors.ts";
import type { Config } from "../../config.ts";

function tooMany(after: string) {
  return (_req: unknown, ctx: { after: string; ttl: number }) =>
    new AppError("rate_limited", `rate limit exceeded ${after}; retry in ${Math.ceil(ctx.ttl / 1000)} s`);
}

export async function registerIpRateLimit(app: FastifyInstance, config: Config): Promise<void> {
  await app.register(rateLimit, {
    global: true,
    hook: "onRequest",
    max: config.RATE_LIMIT_IP_MAX,
    timeWindow: config.RATE_LIMIT_IP_WINDOW_MS,
    keyGenerator: (req) => `ip:${req.ip}`,
    enableDraftSpec: true,
    allowList: (req) => req.url === "/healthz" || req.url === "/readyz",
    errorResponseBuilder: tooMany("for this client address"),
  });
}

/** Must be added after the auth hook: it limits by the authenticated key. */
export function registerKeyRateLimit(app: FastifyInstance, config: Config): void {
  const hook = app.rateLimit({
    max: (req) => req.apiKey?.rateLimitPerMinute ?? config.RATE_LIMIT_KEY_MAX,
    timeWindow: config.RATE_LIMIT_KEY_WINDOW_MS,
    keyGenerator: (req) => `key:${req.apiKey?.id ?? "none"}`,
    allowList: (req) => req.apiKey === null,
    errorResponseBuilder: tooMany("for this API key"),
  });
  app.addHook("onRequest", hook);
}
