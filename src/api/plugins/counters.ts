// Fixed-window counters for the rate limits (rate-limits.ts, auth-failures.ts), kept by
// @fastify/rate-limit's stores: in this process's memory, or with REDIS_URL in Redis, where
// every API process shares one count per key and per client (the store's Lua script makes
// each increment atomic). Redis is not allowed to become a single point of failure for
// sending: a command it does not answer within 250 ms falls back to this process's own
// count, the change is logged once each way, and /readyz says which counts are in use.
import LocalStore from "@fastify/rate-limit/store/LocalStore.js";
import RedisStore from "@fastify/rate-limit/store/RedisStore.js";
import type { Logger } from "pino";

interface WindowCount {
  current: number;
  ttlMs: number;
}

type CounterMode = "local" | "shared" | "local: Redis unavailable";

export interface Counters {
  incr(key: string, windowMs: number, max: number): Promise<WindowCount>;
  /** The count without adding to it. */
  read(key: string, windowMs: number, max: number): Promise<WindowCount>;
  mode(): CounterMode;
  close(): Promise<void>;
}

type Store = InstanceType<typeof LocalStore>;

const call = (store: Store, op: "incr" | "read", key: string, windowMs: number, max: number) =>
  new Promise<WindowCount>((resolve, reject) =>
    store[op](key, (err, res) => (err || !res ? reject(err ?? new Error("no answer")) : resolve({ current: res.current, ttlMs: res.ttl })), windowMs, max),
  );

export function localCounters(): Counters {
  const store = new LocalStore(false, false, 100_000);
  return {
    incr: (k, w, m) => call(store, "incr", k, w, m),
    read: (k, w, m) => call(store, "read", k, w, m),
    mode: () => "local",
    close: async () => {},
  };
}

export async function sharedCounters(url: string, prefix: string, logger: Logger): Promise<Counters> {
  const { Redis } = await import("ioredis");
  const redis = new Redis(url, {
    // Fail fast instead of queueing while Redis is away: the local count takes over.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 250,
    connectTimeout: 1000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    lazyConnect: false,
  });
  const log = logger.child({ component: "rate-limits" });
  const shared = new RedisStore(false, false, redis, prefix);
  const local = new LocalStore(false, false, 100_000);
  let mode: CounterMode = "local: Redis unavailable";
  let warned = false;
  const down = (why: string) => {
    if (mode === "shared" || !warned) log.warn({ why }, "Redis unavailable: rate limits are counted per process until it is back");
    warned = true;
    mode = "local: Redis unavailable";
  };
  redis.on("ready", () => {
    mode = "shared";
    warned = false;
    log.info({}, "rate limits are shared through Redis");
  });
  redis.on("error", (err: Error) => down(err.message));
  redis.on("end", () => down("connection ended"));
  const op = async (name: "incr" | "read", k: string, w: number, m: number) => {
    if (mode === "shared") {
      try {
        return await call(shared, name, k, w, m);
      } catch (err) {
        down((err as Error).message);
      }
    }
    return call(local, name, k, w, m);
  };
  return {
    incr: (k, w, m) => op("incr", k, w, m),
    read: (k, w, m) => op("read", k, w, m),
    mode: () => mode,
    close: async () => {
      redis.disconnect();
    },
  };
}
