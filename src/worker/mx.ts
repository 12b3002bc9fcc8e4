// MX resolution for direct delivery (RFC 5321 section 5.1, RFC 7505 null MX).
// Turns a recipient domain into the ordered list of hosts delivery must try, or a
// decision the worker can act on without reading text: bounce (permanent) or defer
// (temporary). The `reason` strings end up in delivery evidence, so each one names
// the domain, the record type asked and what the DNS answered.
import { Resolver } from "node:dns/promises";
import { isIP } from "node:net";
import { domainToASCII } from "node:url";
import { DomainCache } from "./domain-cache.ts";

interface MxHost {
  host: string;
  preference: number;
  /** IPv4 then IPv6 literals. */
  addresses: string[];
}

export type MxResolution =
  /** In the order delivery must try them. `implicit`: no MX record, the domain itself (RFC 5321 5.1). */
  | { kind: "hosts"; hosts: MxHost[]; implicit: boolean }
  | { kind: "bounce"; enhancedCode: string; reason: string }
  | { kind: "defer"; enhancedCode: string; reason: string };

export interface MxResolverOptions {
  /** Resolver addresses such as "127.0.0.1:5353" or "[::1]:53" (DNS_SERVERS); system resolvers when absent. */
  servers?: string[];
  /** Per-try timeout of one DNS query. */
  timeoutMs?: number;
  tries?: number;
  /** Source of randomness for ordering MX hosts of equal preference; injectable for tests. */
  random?: () => number;
}

// RFC 5321 5.1 lets a client cap the hosts it tries; Postfix's smtp_mx_address_limit is in the same spirit.
const MAX_MX_HOSTS = 10;

// RFC 3463 / RFC 7505 enhanced status codes.
const BAD_DESTINATION = "5.1.2"; // domain does not exist or cannot receive mail
const NULL_MX = "5.1.10"; // domain publishes a null MX (RFC 7505 section 4.2)
const DNS_FAILURE = "4.4.3"; // directory server failure: try again later
const NO_ROUTE = "4.4.4"; // unable to route: MX records lead to no usable address

type LookupResult<T> = { ok: true; value: T } | { ok: false; code: string };

async function lookup<T>(query: () => Promise<T>): Promise<LookupResult<T>> {
  try {
    return { ok: true, value: await query() };
  } catch (err) {
    return { ok: false, code: String((err as NodeJS.ErrnoException).code ?? "EUNKNOWN") };
  }
}

// ENODATA (the name exists, no record of that type) and ENOTFOUND (NXDOMAIN) are
// answers; EBADNAME is a name no DNS server can hold. Anything else means we did
// not get an answer and must try again later.
const isDefinite = (code: string) => code === "ENODATA" || code === "ENOTFOUND" || code === "EBADNAME";

function describe(code: string): string {
  switch (code) {
    case "ENODATA":
      return "no records (NODATA)";
    case "ENOTFOUND":
      return "domain does not exist (NXDOMAIN)";
    case "EBADNAME":
      return "invalid name";
    case "ESERVFAIL":
      return "DNS server failure (SERVFAIL)";
    case "EREFUSED":
      return "query refused by the DNS server (REFUSED)";
    case "ETIMEOUT":
      return "no answer from the DNS server (timed out)";
    case "ECONNREFUSED":
      return "could not reach the DNS server (connection refused)";
    default:
      return `DNS error ${code}`;
  }
}

/** Lowercase, without the trailing dot of an absolute name. */
function normalizeName(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, "");
}

// RFC 5321 5.1: an MX names a host; an address literal there is invalid (RFC 7505
// also warns against treating one as a fallback). Brackets cover "[192.0.2.1]".
function isIpLiteral(name: string): boolean {
  return isIP(name.replace(/^\[(.*)\]$/, "$1")) !== 0;
}

/** Fisher-Yates, then a stable sort: ascending preference, random among equals (RFC 5321 5.1). */
function orderByPreference<T extends { preference: number }>(items: T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out.sort((a, b) => a.preference - b.preference);
}

export function createMxResolver(opts: MxResolverOptions = {}): { resolve(domain: string): Promise<MxResolution> } {
  const resolver = new Resolver({ timeout: opts.timeoutMs ?? 5000, tries: opts.tries ?? 2 });
  if (opts.servers?.length) resolver.setServers(opts.servers);
  const random = opts.random ?? Math.random;
  return { resolve: (domain) => resolveDomain(resolver, random, domain) };
}

/** TXT records at a name, each one's strings joined (RFC 7208 section 3.3, RFC 6376 section 3.6.2.2). */
type TxtAnswer =
  | { kind: "records"; records: string[] }
  /** A definite answer: the name has no TXT records, or does not exist. */
  | { kind: "none"; reason: string }
  /** No answer (timeout, SERVFAIL): ask again later. */
  | { kind: "pending"; reason: string };

/** The exchanges of a name's MX records; `none` and `pending` as for TXT. */
type MxAnswer = { kind: "records"; hosts: string[] } | Exclude<TxtAnswer, { kind: "records" }>;

export interface TxtResolver {
  txt(name: string): Promise<TxtAnswer>;
  /** The exchanges a name's MX records name, as written (lowercased, no final dot). */
  mx(name: string): Promise<MxAnswer>;
  /** Any record type, as node:dns answers it (throws with its error code): what mailauth's SPF evaluation asks. */
  resolve(name: string, type: string): Promise<unknown>;
}

/**
 * TXT and MX lookups through the same resolver set-up as MX resolution (DNS_SERVERS,
 * timeouts), for checking the records of a sender domain: the answers the worker's DNS
 * gives are the ones that count.
 */
export function createTxtResolver(opts: Pick<MxResolverOptions, "servers" | "timeoutMs" | "tries"> = {}): TxtResolver {
  const resolver = new Resolver({ timeout: opts.timeoutMs ?? 5000, tries: opts.tries ?? 2 });
  if (opts.servers?.length) resolver.setServers(opts.servers);
  return {
    async txt(name) {
      const r = await lookup(() => resolver.resolveTxt(name));
      if (r.ok) return { kind: "records", records: r.value.map((chunks) => chunks.join("")) };
      return noRecords("TXT", name, r.code);
    },
    resolve: (name, type) => resolver.resolve(name, type),
    async mx(name) {
      const r = await lookup(() => resolver.resolveMx(name));
      if (r.ok) return { kind: "records", hosts: r.value.map((m) => normalizeName(m.exchange)) };
      return noRecords("MX", name, r.code);
    },
  };
}

/** A verify's lookup without records: `none` on a definite answer, `pending` when there was none. */
function noRecords(type: string, name: string, code: string): { kind: "none" | "pending"; reason: string } {
  return isDefinite(code) ? { kind: "none", reason: `${name}: ${describe(code)}` } : { kind: "pending", reason: `${type} lookup for ${name} failed: ${describe(code)}` };
}

async function resolveDomain(resolver: Resolver, random: () => number, input: string): Promise<MxResolution> {
  const domain = domainToASCII(normalizeName(input)); // IDN to A-labels; "" when invalid
  if (domain === "" || isIpLiteral(domain)) {
    return { kind: "bounce", enhancedCode: BAD_DESTINATION, reason: `"${input}" is not a valid domain name` };
  }
  const mx = await lookup(() => resolver.resolveMx(domain));
  if (!mx.ok) {
    if (mx.code === "ENODATA") return implicitMx(resolver, domain); // RFC 5321 5.1: the domain is its own MX
    return mxLookupFailed(domain, mx.code);
  }
  const records = mx.value.map((r) => ({ host: normalizeName(r.exchange), preference: r.priority }));
  if (isNullMx(records)) {
    return { kind: "bounce", enhancedCode: NULL_MX, reason: `${domain} publishes a null MX (RFC 7505): it does not accept email` };
  }
  const { candidates, skipped } = mxCandidates(records, random);
  const looked = await Promise.all(candidates.map(async (c) => ({ ...c, ...(await addressesOf(resolver, c.host)) })));
  const hosts = looked
    .filter((h) => h.addresses.length > 0)
    .map(({ host, preference, addresses }) => ({ host, preference, addresses }));
  if (hosts.length > 0) return { kind: "hosts", implicit: false, hosts };
  return noUsableHost(domain, looked, skipped);
}

/** The MX query got no records: bounce on a definite answer, defer when there was none. */
function mxLookupFailed(domain: string, code: string): MxResolution {
  if (isDefinite(code)) return { kind: "bounce", enhancedCode: BAD_DESTINATION, reason: `${domain}: ${describe(code)}` };
  return { kind: "defer", enhancedCode: DNS_FAILURE, reason: `MX lookup for ${domain} failed: ${describe(code)}` };
}

// RFC 7505 section 3: a single MX of preference 0 naming the root means "no mail".
// Mixed with other records it is a misconfiguration; the null one is ignored.
function isNullMx(records: Array<{ host: string; preference: number }>): boolean {
  return records.length === 1 && records[0]!.host === "" && records[0]!.preference === 0;
}

/**
 * The hosts to look up, in the order delivery must try them, at most MAX_MX_HOSTS: each
 * host once at its best preference, without the null MX and the IP literals (listed in
 * `skipped`, for the reason when no host is usable).
 */
function mxCandidates(records: Array<{ host: string; preference: number }>, random: () => number): { candidates: Array<{ host: string; preference: number }>; skipped: string[] } {
  const skipped: string[] = [];
  const best = new Map<string, number>(); // a host listed twice keeps its best preference
  for (const r of records) {
    if (r.host === "") continue;
    if (isIpLiteral(r.host)) {
      skipped.push(`${r.host} skipped: an MX must name a host, not an IP address (RFC 5321 section 5.1)`);
      continue;
    }
    best.set(r.host, Math.min(r.preference, best.get(r.host) ?? Infinity));
  }
  const candidates = orderByPreference([...best].map(([host, preference]) => ({ host, preference })), random).slice(0, MAX_MX_HOSTS);
  return { candidates, skipped };
}

/**
 * MX records exist but lead nowhere. Deferred rather than bounced: the records show the
 * domain means to receive mail, and its DNS may be fixed within the retry window.
 */
function noUsableHost(domain: string, looked: Array<{ host: string } & HostAddresses>, skipped: string[]): MxResolution {
  const reasons = [...skipped, ...looked.map((h) => `${h.host} has no address (${h.failures.join("; ")})`)];
  const temporary = looked.some((h) => h.temporary);
  return {
    kind: "defer",
    enhancedCode: temporary ? DNS_FAILURE : NO_ROUTE,
    reason: `no MX host of ${domain} has a usable address: ${reasons.join("; ") || "the MX records name no host"}`,
  };
}

/** No MX record (NODATA): the domain itself, by its A/AAAA addresses (RFC 5321 5.1). */
async function implicitMx(resolver: Resolver, domain: string): Promise<MxResolution> {
  const { addresses, failures, temporary } = await addressesOf(resolver, domain);
  if (addresses.length > 0) {
    return { kind: "hosts", implicit: true, hosts: [{ host: domain, preference: 0, addresses }] };
  }
  if (temporary) {
    return {
      kind: "defer",
      enhancedCode: DNS_FAILURE,
      reason: `${domain} has no MX record and its address lookup failed (${failures.join("; ")})`,
    };
  }
  return {
    kind: "bounce",
    enhancedCode: BAD_DESTINATION,
    reason: `${domain} has no MX record and no A/AAAA address, so it cannot receive mail`,
  };
}

interface HostAddresses {
  addresses: string[];
  /** What went wrong for each record type that came back empty. */
  failures: string[];
  /** Some lookup got no answer (rather than a definite "none"). */
  temporary: boolean;
}

/** A then AAAA of one name, with what went wrong for each when nothing came back. */
async function addressesOf(resolver: Resolver, name: string): Promise<HostAddresses> {
  const [a, aaaa] = await Promise.all([lookup(() => resolver.resolve4(name)), lookup(() => resolver.resolve6(name))]);
  const addresses = [...(a.ok ? a.value : []), ...(aaaa.ok ? aaaa.value : [])];
  const failures: string[] = [];
  let temporary = false;
  for (const [type, r] of [["A", a], ["AAAA", aaaa]] as const) {
    if (r.ok) continue;
    failures.push(`${type}: ${describe(r.code)}`);
    temporary ||= !isDefinite(r.code);
  }
  return { addresses, failures, temporary };
}

/**
 * Remembers answers for `ttlMs` per domain, and shares one lookup among concurrent
 * deliveries to the same domain: the role a local caching resolver plays for Postfix.
 * Temporary failures are not remembered, so a deferral retries DNS for real.
 */
export function cachingResolver(
  resolve: (domain: string) => Promise<MxResolution>, ttlMs: number, now: () => number = Date.now,
): (domain: string) => Promise<MxResolution> {
  const cache = new DomainCache(ttlMs, resolve, { forget: (r) => r.kind === "defer", now });
  return (domain) => cache.of(domain.toLowerCase());
}
