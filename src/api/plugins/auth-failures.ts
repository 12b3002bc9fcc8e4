// Failed authentications per client address (issue 14): after RATE_LIMIT_AUTH_FAIL_MAX
// failures within RATE_LIMIT_AUTH_FAIL_WINDOW_MS, the client's requests to routes that need
// a key are answered 429 before the key is looked at, until the window ends. So a flood of
// made-up keys costs neither a database lookup nor a hash, while the general per-client
// limit can stay high enough never to cap one backend below its key's own limit. Counted
// like the rate limits (counters.ts): per process, or shared through Redis.
import type { Counters } from "./counters.ts";

export class AuthFailures {
  readonly #counters: Counters;
  readonly #max: number;
  readonly #windowMs: number;

  constructor(counters: Counters, max: number, windowMs: number) {
    this.#counters = counters;
    this.#max = max;
    this.#windowMs = windowMs;
  }

  /** Seconds until `client` may try again; 0 when it may now. */
  async blockedFor(client: string): Promise<number> {
    const { current, ttlMs } = await this.#counters.read(`authfail:${client}`, this.#windowMs, this.#max);
    return current >= this.#max && ttlMs > 0 ? Math.max(1, Math.ceil(ttlMs / 1000)) : 0;
  }

  async failed(client: string): Promise<void> {
    await this.#counters.incr(`authfail:${client}`, this.#windowMs, this.#max);
  }
}
