// Failed authentications per client address (issue 14): after RATE_LIMIT_AUTH_FAIL_MAX
// failures within RATE_LIMIT_AUTH_FAIL_WINDOW_MS, the client's requests to routes that need
// a key are answered 429 before the key is looked at, until the window ends. So a flood of
// made-up keys costs neither a database lookup nor a hash, while the general per-client
// limit can stay high enough never to cap one backend below its key's own limit. The count
// is in memory per process.
export class AuthFailures {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #byClient = new Map<string, { failures: number; windowEnds: number }>();

  constructor(max: number, windowMs: number, now: () => number = Date.now) {
    this.#max = max;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /** Seconds until `client` may try again; 0 when it may now. */
  blockedFor(client: string): number {
    const e = this.#byClient.get(client);
    const now = this.#now();
    if (!e || e.windowEnds <= now) return 0;
    return e.failures >= this.#max ? Math.ceil((e.windowEnds - now) / 1000) : 0;
  }

  failed(client: string): void {
    const now = this.#now();
    const e = this.#byClient.get(client);
    if (!e || e.windowEnds <= now) {
      this.#byClient.set(client, { failures: 1, windowEnds: now + this.#windowMs });
      // Bounded: the oldest windows go first (a map keeps insertion order).
      if (this.#byClient.size > 100_000) this.#byClient.delete(this.#byClient.keys().next().value!);
    } else e.failures++;
  }
}
