// Two limits (README, "Configuration"): per client IP before authentication, so a flood of
// bad keys is throttled without touching the database, and per API key after it.
// Both answer 429 problem+json with Retry-After and the RateLimit-* headers of the
// IETF draft. The store is in memory per process.
//
// Both are app-level onRequest hooks built with createRateLimit, added in order:
// IP limit (here, before registerAuth), auth, key limit. The plugin's own route
// hooks are not used: route-level onRequest hooks run after every app-level one (so
// the IP limit would run after auth, never before it), and the plugin's hooks share
// one "already limited" flag per request, so a second limiter would be skipped.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import rateLimit from "@fastify/rate-limit";
import { AppError } from "../../domain/errors.ts";
import type { Config } from "../../config.ts";

type Limiter = ReturnType<FastifyInstance["createRateLimit"]>;

function limitHook(limiter: Limiter, after: string) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const r = await limiter(req);
    if (r.isAllowed) return;
    // When both limits apply, the headers describe the one closer to running out.
    const shown = reply.getHeader("ratelimit-remaining");
    if (shown === undefined || r.remaining <= Number(shown)) {
      reply.header("ratelimit-limit", r.max);
      reply.header("ratelimit-remaining", r.remaining);
      reply.header("ratelimit-reset", r.ttlInSeconds);
    }
    if (r.isExceeded)
      throw new AppError("rate_limited", `rate limit exceeded ${after}; retry in ${r.ttlInSeconds} s`, {
        headers: { "retry-after": String(r.ttlInSeconds), "ratelimit-remaining": "0" },
      });
  };
}

export async function registerIpRateLimit(app: FastifyInstance, config: Config): Promise<void> {
  await app.register(rateLimit, { global: false }); // only for createRateLimit and its in-memory store
  const limiter = app.createRateLimit({
    max: config.RATE_LIMIT_IP_MAX,
    timeWindow: config.RATE_LIMIT_IP_WINDOW_MS,
    keyGenerator: (req) => `ip:${req.ip}`,
    allowList: (req) => req.url === "/healthz" || req.url === "/readyz",
  });
  app.addHook("onRequest", limitHook(limiter, "for this client address"));
}

/** Must be added after the auth hook: it limits by the authenticated key. */
export function registerKeyRateLimit(app: FastifyInstance, config: Config): void {
  const limiter = app.createRateLimit({
    max: (req) => req.apiKey?.rateLimitPerMinute ?? config.RATE_LIMIT_KEY_MAX,
    timeWindow: config.RATE_LIMIT_KEY_WINDOW_MS,
    keyGenerator: (req) => `key:${req.apiKey?.id ?? "none"}`,
    allowList: (req) => req.apiKey === null,
  });
  app.addHook("onRequest", limitHook(limiter, "for this API key"));
}
