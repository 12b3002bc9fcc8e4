// The stores of @fastify/rate-limit, used directly (src/api/plugins/counters.ts): the
// package ships no types for them.
declare module "@fastify/rate-limit/store/*" {
  type Callback = (err: Error | null, res: { current: number; ttl: number } | null) => void;
  interface Store {
    incr(key: string, cb: Callback, timeWindow: number, max: number): void;
    read(key: string, cb: Callback, timeWindow: number, max: number): void;
  }
  const Store: {
    new (continueExceeding: boolean, exponentialBackoff: boolean, redisOrCacheSize?: unknown, prefix?: string): Store;
  };
  export default Store;
}
