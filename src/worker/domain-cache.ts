// A small per-domain cache of lookups the worker makes for every message (DKIM keys,
// bounce domains): each domain is read once and its answer kept for `ttlMs`, so a burst
// to one domain shares one read in flight. A failed read is not remembered: the next
// message asks again.
export class DomainCache<T> {
  readonly #ttlMs: number;
  readonly #load: (domain: string) => Promise<T>;
  readonly #entries = new Map<string, { at: number; value: Promise<T> }>();

  constructor(ttlMs: number, load: (domain: string) => Promise<T>) {
    this.#ttlMs = ttlMs;
    this.#load = load;
  }

  /** The answer for `domain` (lower-case it first). */
  of(domain: string): Promise<T> {
    const hit = this.#entries.get(domain);
    if (hit && Date.now() - hit.at < this.#ttlMs) return hit.value;
    const value = this.#load(domain);
    value.catch(() => this.#entries.delete(domain));
    this.#entries.set(domain, { at: Date.now(), value });
    return value;
  }
}
