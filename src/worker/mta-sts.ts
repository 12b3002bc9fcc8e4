// MTA-STS (RFC 8461) for direct delivery: which MX hosts of a recipient domain are valid and
// whether TLS is mandatory there. Discovery and fetching are mailauth's (strict mode: the
// RFC's TXT and policy syntax, HTTP 200 only, no redirects, text/plain, 64 KiB, a policy
// host certificate matched by DNS-ID with single-label wildcards); this file keeps the
// policies in Postgres so that every worker shares them (db/mta-sts.ts):
//   - a cached policy is used until it expires (fetch time + max_age), whatever DNS or
//     HTTPS say meanwhile: a failed refresh never downgrades to "no policy" (section 5.1);
//   - the _mta-sts TXT record is checked at most once per DNS_CACHE_TTL per domain and
//     worker; a new id fetches the policy again (section 3.3);
//   - a policy is fetched again ahead of its expiry, in its last tenth (at most a day), so
//     that a domain that keeps its policy never falls back to none between two fetches;
//   - max_age outside [1 hour, 1 year) counts as one day (Stalwart's rule), so a
//     typo cannot pin a policy for years or make every delivery fetch it.
import type pg from "pg";
import type { Logger } from "pino";
import { findMtaStsPolicy, noteMtaStsError, saveMtaStsPolicy, type MtaStsPolicyRow } from "../db/mta-sts.ts";
import { errorFields } from "../logger.ts";
import { DomainCache } from "./domain-cache.ts";
import { refusedAddress, type TargetPolicy } from "../security/webhook-targets.ts";

/** What a delivery to the domain must respect. */
export type StsLookup =
  | { state: "policy"; mode: "enforce" | "testing" | "none"; id: string; mx: string[]; expiresAt: Date; staleError: string | null }
  | { state: "none" | "unavailable"; reason: string };

type DnsResolve = (name: string, type: string) => Promise<unknown>;

export interface MtaStsOptions {
  pool: pg.Pool;
  /** Answers as node:dns's resolve(name, type) does, through DNS_SERVERS. */
  resolve: DnsResolve;
  /** How long a worker reuses its answer for a domain before asking DNS again (DNS_CACHE_TTL). */
  ttlMs: number;
  /** Overall limit of one policy fetch (MTA_STS_TIMEOUT). */
  fetchTimeoutMs: number;
  logger: Logger;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const MAX_AGE_MIN_S = 3600;
const MAX_AGE_LIMIT_S = 31_557_600;

/** Seconds a fetched policy is used for: max_age within [1 hour, 1 year), else one day. */
export function effectiveMaxAge(maxAge: number): number {
  return maxAge >= MAX_AGE_MIN_S && maxAge < MAX_AGE_LIMIT_S ? maxAge : 86_400;
}

const loadMtaSts = () => import("mailauth/lib/mta-sts.js");

/**
 * The resolver mailauth fetches policies through, with the webhooks' outbound rule applied to
 * the policy host's addresses (security/webhook-targets.ts): in production a recipient domain
 * cannot point mta-sts.<domain> at a loopback, private or link-local address and have the
 * worker connect there; such an address is left out, as if the host had none.
 */
export function policyHostGuard(resolve: DnsResolve, policy: TargetPolicy): DnsResolve {
  return async (name, type) => {
    const answer = await resolve(name, type);
    if ((type !== "A" && type !== "AAAA") || !Array.isArray(answer)) return answer;
    return answer.filter((ip) => typeof ip === "string" && refusedAddress(ip, policy) === null);
  };
}

/** Whether `host` is one of the policy's mx patterns (mailauth's validateMx: "*." covers exactly one label). */
export async function mxMatches(host: string, mx: string[]): Promise<boolean> {
  const { validateMx } = await loadMtaSts();
  return validateMx(host, { mode: "enforce", mx, maxAge: 0, id: "" } as never).valid;
}

export class MtaStsPolicies {
  readonly #o: MtaStsOptions;
  readonly #cache: DomainCache<StsLookup>;

  constructor(o: MtaStsOptions) {
    this.#o = o;
    // A lookup that failed here (the database, mailauth) is not the domain's answer: not kept.
    this.#cache = new DomainCache(o.ttlMs, (domain) => this.#lookup(domain).catch((err: unknown): StsLookup => {
      this.#o.logger.warn({ component: "mta-sts", domain, err: errorFields(err) }, "MTA-STS lookup failed");
      return { state: "unavailable", reason: `MTA-STS lookup failed: ${err instanceof Error ? err.message : String(err)}` };
    }), { forget: (v) => v.state === "unavailable" });
  }

  /** The policy for a recipient domain (lower-case A-label), shared by concurrent deliveries. */
  policyFor(domain: string): Promise<StsLookup> {
    return this.#cache.of(domain);
  }

  async #lookup(domain: string): Promise<StsLookup> {
    const { getPolicy } = await loadMtaSts();
    const now = Date.now();
    const cached = await findMtaStsPolicy(this.#o.pool, domain);
    const valid = cached && cached.expires_at.getTime() > now ? cached : null;
    const known = valid ? { id: valid.policy_id, mode: valid.mode, mx: valid.mx, maxAge: valid.max_age, expires: valid.expires_at.toISOString() } : null;
    // In its last tenth (at most a day), the policy is fetched again even under the same id.
    const refreshAhead = valid !== null && valid.expires_at.getTime() - now < Math.min(DAY, (effectiveMaxAge(valid.max_age) * 1000) / 10);
    const opts = { resolver: this.#o.resolve as never, strict: true, timeout: this.#o.fetchTimeoutMs };
    const r = await getPolicy(domain, (refreshAhead ? null : known) as never, opts);
    const p = r.policy as { id: string | false; mode: "enforce" | "testing" | "none"; mx?: string[]; maxAge?: number; error?: Error };
    if (r.status === "found" && p.id) {
      const maxAge = p.maxAge ?? 0;
      const row = { domain, policy_id: p.id, mode: p.mode, mx: p.mx ?? [], max_age: maxAge, fetched_at: new Date(now), expires_at: new Date(now + effectiveMaxAge(maxAge) * 1000) };
      await saveMtaStsPolicy(this.#o.pool, row);
      if (!valid || valid.policy_id !== row.policy_id) this.#o.logger.info({ component: "mta-sts", domain, id: row.policy_id, mode: row.mode }, "MTA-STS policy fetched");
      return this.#view({ ...row, last_error: null });
    }
    if (valid) {
      // Renewed (same id), or the refresh failed: the cached policy stays in force until it expires.
      const error = r.status === "renewed" ? null : describe(p.error, r.status);
      if (error && error !== valid.last_error) {
        await noteMtaStsError(this.#o.pool, domain, error);
        this.#o.logger.warn({ component: "mta-sts", domain, id: valid.policy_id, error }, "MTA-STS refresh failed; the cached policy stays in force until it expires");
      }
      return this.#view({ ...valid, last_error: error });
    }
    if (r.status === "not_found") return { state: "none", reason: `${domain} publishes no MTA-STS policy` };
    // No policy cached and none could be had: delivered as if the domain had none (RFC 8461 5.1), and tried again next time.
    return { state: "none", reason: `no MTA-STS policy could be fetched for ${domain}: ${describe(p.error, r.status)}` };
  }

  #view(row: MtaStsPolicyRow): StsLookup {
    return { state: "policy", mode: row.mode, id: row.policy_id, mx: row.mx, expiresAt: row.expires_at, staleError: row.last_error };
  }
}

function describe(err: Error | undefined, status: string): string {
  if (!err) return status === "not_found" ? "the _mta-sts TXT record or the policy host is gone" : status;
  const code = (err as { code?: string }).code;
  return code && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}
