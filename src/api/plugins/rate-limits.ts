// Two limits (README, "Configuration"): per client IP before authentication, and per API
// key after it. Both answer 429 problem+json with Retry-After and the RateLimit-* headers of
// the IETF draft. The counts are @fastify/rate-limit's stores (counters.ts): in memory per
// process, or shared by every API process through Redis with REDIS_URL.
//
// Both are app-level onRequest hooks, added in order: IP limit (here, before
// registerAuth), auth, key limit.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AppError } from "../../domain/errors.ts";
import type { Config } from "../../config.ts";
import type { Counters } from "./counters.ts";

interface Limit {
  key: (req: FastifyRequest) => string | null;
  max: (req: FastifyRequest) => number;
  windowMs: number;
  after: string;
}

function limitHook(counters: Counters, limit: Limit) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const key = limit.key(req);
    if (key === null) return;
    const max = limit.max(req);
    const { current, ttlMs } = await counters.incr(key, limit.windowMs, max);
    const remaining = Math.max(0, max - current);
    const resetSeconds = Math.max(1, Math.ceil(ttlMs / 1000));
    // When both limits apply, the headers describe the one closer to running out.
    const shown = reply.getHeader("ratelimit-remaining");
    if (shown === undefined || remaining <= Number(shown)) {
      reply.header("ratelimit-limit", max);
      reply.header("ratelimit-remaining", remaining);
      reply.header("ratelimit-reset", resetSeconds);
    }
    if (current > max)
      throw new AppError("rate_limited", `rate limit exceeded ${limit.after}; retry in ${resetSeconds} s`, {
        headers: { "retry-after": String(resetSeconds), "ratelimit-remaining": "0" },
      });
  };
}

export function registerIpRateLimit(app: FastifyInstance, config: Config, counters: Counters): void {
  app.addHook("onRequest", limitHook(counters, {
    key: (req) => (req.url === "/healthz" || req.url === "/readyz" ? null : `ip:${req.ip}`),
    max: () => config.RATE_LIMIT_IP_MAX,
    windowMs: config.RATE_LIMIT_IP_WINDOW_MS,
    after: "for this client address",
  }));
}

/** Must be added after the auth hook: it limits by the authenticated key. */
export function registerKeyRateLimit(app: FastifyInstance, config: Config, counters: Counters): void {
  app.addHook("onRequest", limitHook(counters, {
    key: (req) => (req.apiKey ? `key:${req.apiKey.id}` : null),
    max: (req) => req.apiKey?.rateLimitPerMinute ?? config.RATE_LIMIT_KEY_MAX,
    windowMs: config.RATE_LIMIT_KEY_WINDOW_MS,
    after: "for this API key",
  }));
}
