// A small per-key cache of lookups the worker makes for every message (DKIM keys, bounce
// domains, MX hosts, MTA-STS policies, TLSA records): each key is read once and its answer
// kept for `ttlMs`, so a burst to one domain shares one read in flight. A failed read is not
// remembered, nor an answer `forget` says is temporary (a DNS deferral): the next message
// asks again. At most `maxEntries` are kept, the oldest dropped first.
export class DomainCache<T> {
  readonly #ttlMs: number;
  readonly #load: (key: string) => Promise<T>;
  readonly #forget: (value: T) => boolean;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, { at: number; value: Promise<T> }>();

  constructor(ttlMs: number, load: (key: string) => Promise<T>, opts: { forget?: (value: T) => boolean; maxEntries?: number; now?: () => number } = {}) {
    this.#ttlMs = ttlMs;
    this.#load = load;
    this.#forget = opts.forget ?? (() => false);
    this.#maxEntries = opts.maxEntries ?? 10_000;
    this.#now = opts.now ?? Date.now;
  }

  /** The answer for `key` (lower-case a domain or host first). */
  of(key: string): Promise<T> {
    const hit = this.#entries.get(key);
    if (hit && this.#now() - hit.at < this.#ttlMs) return hit.value;
    const value = this.#load(key);
    const entry = { at: this.#now(), value };
    // Only this entry: a newer one for the same key must not be dropped by an older answer.
    const drop = () => this.#entries.get(key) === entry && this.#entries.delete(key);
    value.then((v) => this.#forget(v) && drop(), drop);
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
    return value;
  }
}
