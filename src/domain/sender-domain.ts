// Sender domains (issue 11): what a domain name must be, who may manage it, DKIM selector
// names and the DNS records an operator publishes. Pure: the key pairs are made in
// src/security/dkim-keys.ts and the checks against DNS in src/services/domain-checks.ts.
import { z } from "zod";
import { parseDomain } from "./address.ts";

/** RFC 6376 signing algorithms we use: RSA-2048 and Ed25519 (RFC 8463). */
export const DKIM_ALGORITHMS = ["rsa-sha256", "ed25519-sha256"] as const;
export type DkimAlgorithm = (typeof DKIM_ALGORITHMS)[number];

/** The `k=` tag of the DNS record for each algorithm. */
const DKIM_KEY_TYPE: Record<DkimAlgorithm, "rsa" | "ed25519"> = { "rsa-sha256": "rsa", "ed25519-sha256": "ed25519" };

/** A domain name as stored: lowercased, letters-digits-hyphens labels, no IP literal. */
function domainName(what: string) {
  return z.string().transform((input, ctx) => {
    const lower = input.trim().toLowerCase().replace(/\.$/, "");
    const r = parseDomain(lower);
    if (!r.ok) {
      ctx.addIssue({ code: "custom", message: `${what} must be a domain name such as mail.example.com: ${r.message}`, input });
      return z.NEVER;
    }
    return r.value;
  });
}

export const AddDomainRequestSchema = z
  .strictObject({
    name: domainName("name").meta({ description: "The domain in the From address of the mail to send, e.g. example.com" }),
    bounce_domain: domainName("bounce_domain")
      .optional()
      .meta({ description: "A subdomain of `name` for the envelope sender (Return-Path), e.g. bounces.example.com" }),
  })
  .superRefine((v, ctx) => {
    if (v.bounce_domain !== undefined && !isSubdomainOf(v.bounce_domain, v.name))
      ctx.addIssue({ code: "custom", path: ["bounce_domain"], message: `bounce_domain must be a subdomain of ${v.name}, e.g. bounces.${v.name}`, input: v.bounce_domain });
  })
  .meta({ id: "AddDomainRequest" });
export type AddDomainRequest = z.infer<typeof AddDomainRequestSchema>;

/** Strictly below `parent` (a.b.example.com under example.com), never the domain itself. */
function isSubdomainOf(child: string, parent: string): boolean {
  return child.endsWith(`.${parent}`);
}

/**
 * Whether an API key limited to `allowedDomains` (its --domains) may manage `name`: the
 * same rule as sending from it (send-message.ts checkSenderAllowed), so a key can never
 * sign for a domain it may not send from.
 */
/**
 * A key not limited to some sender domains ("*", what a key made without --domains holds):
 * the operator's. What applies to every tenant's mail (the TLS policy map, TLS reports) is
 * for such keys only.
 */
export function coversEveryDomain(allowedDomains: readonly string[]): boolean {
  return allowedDomains.includes("*");
}

export function keyCoversDomain(allowedDomains: readonly string[], name: string): boolean {
  return coversEveryDomain(allowedDomains) || allowedDomains.includes(name);
}

/**
 * A dated selector: `sp` + year and month of creation + `r` (RSA) or `e` (Ed25519), e.g.
 * sp202612r. Dated so a rotation gets a new name (RFC 6376 section 3.1: selectors exist
 * so a domain can have several keys at once) and an operator can tell the old from the new;
 * a second key of the same month gets a counter (sp202612r2), so none of `taken` is reused.
 */
export function dkimSelector(at: Date, algorithm: DkimAlgorithm, taken: ReadonlySet<string> = new Set()): string {
  const month = String(at.getUTCMonth() + 1).padStart(2, "0");
  const base = `sp${at.getUTCFullYear()}${month}${algorithm === "rsa-sha256" ? "r" : "e"}`;
  if (!taken.has(base)) return base;
  for (let n = 2; ; n++) if (!taken.has(`${base}${n}`)) return `${base}${n}`;
}

/**
 * Where a key is in its life (M3AAWG's rotation practice): `pending` until its DNS record
 * is seen; `active` while it is the newest seen key of its algorithm, the one that signs;
 * `retiring` once a newer one took over, still published so mail it signed still verifies,
 * until its retired_at; `retired` after, when its record may be deleted.
 */
export type DkimKeyState = "pending" | "active" | "retiring" | "retired";

export interface DkimKeyLife {
  selector: string;
  algorithm: DkimAlgorithm;
  createdAt: Date;
  verifiedAt: Date | null;
  retiredAt: Date | null;
}

const newestFirst = (a: DkimKeyLife, b: DkimKeyLife) => b.createdAt.getTime() - a.createdAt.getTime() || (a.selector < b.selector ? 1 : -1);

/** The state of each key at `now`, by selector. */
export function dkimKeyStates(keys: readonly DkimKeyLife[], now: Date): Map<string, DkimKeyState> {
  const states = new Map<string, DkimKeyState>();
  const signing = new Set(DKIM_ALGORITHMS.map((alg) => [...keys].sort(newestFirst).find((k) => k.algorithm === alg && k.verifiedAt && !isRetiredBy(k, now))?.selector));
  for (const k of keys) {
    states.set(k.selector, k.retiredAt && k.retiredAt <= now ? "retired" : signing.has(k.selector) ? "active" : k.verifiedAt ? "retiring" : "pending");
  }
  return states;
}

const isRetiredBy = (k: DkimKeyLife, now: Date) => k.retiredAt !== null && k.retiredAt <= now;

export interface DkimRotationStep {
  /** Keys whose record a verify saw for the first time: they become verified. */
  seenNow: string[];
  /** Selectors whose records decide whether the domain is verified: each signing key's, or where none of an algorithm was seen yet, each of its pending keys'. */
  deciding: Set<string>;
  /** Keys a newer seen key of their algorithm replaces: retired after `graceMs` if they were seen (mail they signed keeps verifying), at once if never. */
  retire: Array<{ id: string; at: Date }>;
}

/**
 * What a verify that found the records of `okSelectors` does to the (not retired) keys: the
 * states dkimKeyStates gives once the newly seen keys count as verified.
 */
export function dkimRotationStep<K extends DkimKeyLife & { id: string }>(live: readonly K[], okSelectors: ReadonlySet<string>, now: Date, graceMs: number): DkimRotationStep {
  const seenNow = live.filter((k) => k.verifiedAt === null && okSelectors.has(k.selector));
  const after = live.map((k) => (seenNow.includes(k) ? { ...k, verifiedAt: now } : k));
  const states = dkimKeyStates(after, now);
  const deciding = new Set<string>();
  const retire: DkimRotationStep["retire"] = [];
  for (const alg of DKIM_ALGORITHMS) {
    const ofAlg = after.filter((k) => k.algorithm === alg).sort(newestFirst);
    const signer = ofAlg.findIndex((k) => states.get(k.selector) === "active");
    if (signer < 0) {
      for (const k of ofAlg) deciding.add(k.selector);
      continue;
    }
    deciding.add(ofAlg[signer]!.selector);
    for (const k of ofAlg.slice(signer + 1)) if (k.retiredAt === null) retire.push({ id: k.id, at: k.verifiedAt ? new Date(now.getTime() + graceMs) : now });
  }
  return { seenNow: seenNow.map((k) => k.id), deciding, retire };
}

export interface DkimPublicKey {
  selector: string;
  algorithm: DkimAlgorithm;
  /** Base64 `p=` value: the SubjectPublicKeyInfo for RSA, the raw 32-byte key for Ed25519 (RFC 8463 section 4.2). */
  publicKey: string;
}

export interface DnsRecord {
  /** What the record is for; a verification reports the state of each by this name. */
  purpose: "dkim" | "spf" | "dmarc" | "bounce_mx";
  type: "TXT" | "MX";
  name: string;
  value: string;
  /** For DKIM: which key it publishes. */
  selector?: string;
}

/** The TXT value that publishes a DKIM public key (RFC 6376 section 3.6.1). */
function dkimRecordValue(key: Pick<DkimPublicKey, "algorithm" | "publicKey">): string {
  return `v=DKIM1; k=${DKIM_KEY_TYPE[key.algorithm]}; p=${key.publicKey}`;
}

/** The SPF record suggested for the envelope domain when none exists yet. */
const SUGGESTED_SPF = "v=spf1 a mx ~all";
/** The DMARC record suggested to start with: monitor only (RFC 7489 section 6.3, p=none). */
const SUGGESTED_DMARC = "v=DMARC1; p=none";

/** The preference suggested for the bounce domain's MX record. */
const BOUNCE_MX_PREFERENCE = 10;

/**
 * The records to publish for a domain: one TXT per DKIM key at <selector>._domainkey,
 * SPF at the envelope domain (the bounce domain when there is one, since SPF checks the
 * MAIL FROM domain, RFC 7208 section 2.4), DMARC at _dmarc.<domain> (RFC 7489 section 6.1)
 * and, with a bounce domain, its MX pointing at `bounceMxHost`, where bounces come back.
 */
export function dnsRecords(domain: { name: string; bounceDomain: string | null }, keys: readonly DkimPublicKey[], bounceMxHost: string): DnsRecord[] {
  return [
    ...keys.map((k) => ({ purpose: "dkim" as const, type: "TXT" as const, name: `${k.selector}._domainkey.${domain.name}`, value: dkimRecordValue(k), selector: k.selector })),
    { purpose: "spf", type: "TXT", name: domain.bounceDomain ?? domain.name, value: SUGGESTED_SPF },
    { purpose: "dmarc", type: "TXT", name: `_dmarc.${domain.name}`, value: SUGGESTED_DMARC },
    ...(domain.bounceDomain
      ? [{ purpose: "bounce_mx" as const, type: "MX" as const, name: domain.bounceDomain, value: `${BOUNCE_MX_PREFERENCE} ${bounceMxHost}` }]
      : []),
  ];
}

/**
 * A record as a zone-file line (RFC 1035 section 5.1), for `domains show --zone`: absolute
 * name, TTL, class, type; TXT data as quoted strings of at most 255 bytes each, the most one
 * character-string holds (RFC 1035 3.3.14; receivers join them, RFC 7208 3.3, RFC 6376
 * 3.6.2.2), with `"` and `\` escaped; an MX host made absolute. The values are ASCII.
 */
export function zoneFileLine(r: Pick<DnsRecord, "name" | "type" | "value">): string {
  const data = r.type === "TXT"
    ? (r.value.match(/.{1,255}/g) ?? [""]).map((c) => `"${c.replace(/[\\"]/g, "\\$&")}"`).join(" ")
    : r.value.replace(/(\S+)$/, (host) => (host.endsWith(".") ? host : `${host}.`));
  return `${r.name}. 3600 IN ${r.type} ${data}`;
}

/** What a DNS lookup answered, as the checks need it (see worker/mx.ts createTxtResolver). */
export type TxtLookupResult = { kind: "records"; records: string[] } | { kind: "none"; reason: string } | { kind: "pending"; reason: string };
/**
 * The DMARC policy that applies to the domain, as mailauth's policy discovery found it (RFC
 * 9989 4.10: the domain's own record, else its Organizational Domain's).
 */
export type DmarcLookupResult =
  | { kind: "record"; text: string; policy: string | undefined; adkim: string; aspf: string; foundAt: string; inherited: boolean }
  | { kind: "none" }
  | { kind: "pending"; reason: string };
/** What mailauth's SPF evaluation (RFC 7208) gave for MAIL FROM at the envelope domain from `ip`. */
export interface SpfEvaluation {
  ip: string;
  /** pass, fail, softfail, neutral, none, temperror or permerror. */
  result: string;
}
/** What an MX lookup answered: the exchange host names, lowercased, without the final dot. */
export type MxLookupResult = { kind: "records"; hosts: string[] } | { kind: "none"; reason: string } | { kind: "pending"; reason: string };

type RecordState = "ok" | "missing" | "mismatch" | "invalid" | "pending";

export interface RecordCheck {
  purpose: DnsRecord["purpose"];
  name: string;
  state: RecordState;
  expected: string;
  /** What DNS holds at the name for this purpose, or null. */
  found: string | null;
  detail: string;
  /** DMARC: the p= policy published. */
  policy?: string;
}

/** The tags of a DKIM or DMARC record (RFC 6376 section 3.2 tag=value list), names lowercased. */
function tags(record: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of record.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) out.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).replace(/\s+/g, ""));
  }
  return out;
}

function checkDkim(record: DnsRecord, expectedKey: string, answer: TxtLookupResult): RecordCheck {
  const base = { purpose: "dkim" as const, name: record.name, expected: record.value };
  if (answer.kind === "pending") return { ...base, state: "pending", found: null, detail: answer.reason };
  const candidates = answer.kind === "records" ? answer.records.filter((r) => tags(r).has("p")) : [];
  if (candidates.length === 0) return { ...base, state: "missing", found: null, detail: `no DKIM record at ${record.name}: publish it` };
  const match = candidates.find((r) => tags(r).get("p") === expectedKey);
  if (match) return { ...base, state: "ok", found: match, detail: "published as expected" };
  return { ...base, state: "mismatch", found: candidates[0]!, detail: `the record at ${record.name} holds another key: replace it with the expected value` };
}

/** `evaluations`: SPF evaluated for each of SMTP_SOURCE_IPS; empty when none is configured. */
function checkSpf(record: DnsRecord, answer: TxtLookupResult, evaluations: readonly SpfEvaluation[]): RecordCheck {
  const base = { purpose: "spf" as const, name: record.name, expected: record.value };
  if (answer.kind === "pending") return { ...base, state: "pending", found: null, detail: answer.reason };
  const spf = answer.kind === "records" ? answer.records.filter((r) => /^v=spf1(\s|$)/i.test(r)) : [];
  if (spf.length === 0) return { ...base, state: "missing", found: null, detail: `no SPF record at ${record.name}: receivers cannot tell which hosts may send for it` };
  // RFC 7208 section 4.5: more than one SPF record is a permanent error.
  if (spf.length > 1) return { ...base, state: "invalid", found: spf.join(" | "), detail: `${record.name} has ${spf.length} SPF records; RFC 7208 allows one: merge them` };
  if (evaluations.length === 0)
    return { ...base, state: "ok", found: spf[0]!, detail: "an SPF record is published; set SMTP_SOURCE_IPS to check that it permits the addresses the worker sends from" };
  if (evaluations.some((e) => e.result === "temperror"))
    return { ...base, state: "pending", found: spf[0]!, detail: `evaluating the SPF record of ${record.name} failed on a DNS error: try again` };
  const refused = evaluations.filter((e) => e.result !== "pass");
  if (refused.length > 0)
    return {
      ...base, state: "mismatch", found: spf[0]!,
      detail: `the SPF record of ${record.name} does not permit ${refused.map((e) => `${e.ip} (${e.result})`).join(", ")}: add ${refused.map((e) => `${e.ip.includes(":") ? "ip6" : "ip4"}:${e.ip}`).join(" ")} (or your relay's include:)`,
    };
  return { ...base, state: "ok", found: spf[0]!, detail: `the SPF record permits ${evaluations.map((e) => e.ip).join(", ")}` };
}

function checkBounceMx(record: DnsRecord, bounceMxHost: string, answer: MxLookupResult): RecordCheck {
  const base = { purpose: "bounce_mx" as const, name: record.name, expected: record.value };
  if (answer.kind === "pending") return { ...base, state: "pending", found: null, detail: answer.reason };
  const hosts = answer.kind === "records" ? answer.hosts : [];
  if (hosts.length === 0) return { ...base, state: "missing", found: null, detail: `no MX record at ${record.name}: bounces to it cannot reach sealpost` };
  if (hosts.includes(bounceMxHost)) return { ...base, state: "ok", found: hosts.join(", "), detail: "bounces come back to sealpost" };
  return { ...base, state: "mismatch", found: hosts.join(", "), detail: `the MX of ${record.name} names other hosts: point it at ${bounceMxHost}` };
}

/**
 * `answer`: the TXT records at _dmarc.<domain> (several DMARC records there are discarded
 * by receivers, which the operator must hear about); `policy`: what policy discovery found.
 */
function checkDmarc(record: DnsRecord, answer: TxtLookupResult, policy: DmarcLookupResult): RecordCheck {
  const base = { purpose: "dmarc" as const, name: record.name, expected: record.value };
  if (answer.kind === "pending") return { ...base, state: "pending", found: null, detail: answer.reason };
  const here = answer.kind === "records" ? answer.records.filter((r) => /^v=DMARC1\s*(;|$)/i.test(r)) : [];
  if (here.length > 1) return { ...base, state: "invalid", found: here.join(" | "), detail: `${record.name} has ${here.length} DMARC records; receivers discard them all (RFC 9989 4.10): keep one` };
  if (policy.kind === "pending") return { ...base, state: "pending", found: null, detail: policy.reason };
  if (policy.kind === "none") return { ...base, state: "missing", found: null, detail: `no DMARC record at ${record.name}: receivers apply their own policy (a warning; signing does not need it)` };
  const p = policy.policy?.toLowerCase();
  if (!p || !["none", "quarantine", "reject"].includes(p))
    return { ...base, state: "invalid", found: policy.text, detail: `the DMARC record at _dmarc.${policy.foundAt} has no valid p= tag (none, quarantine or reject)` };
  const alignment = `DKIM alignment ${policy.adkim === "s" ? "strict" : "relaxed"}, SPF alignment ${policy.aspf === "s" ? "strict" : "relaxed"}`;
  const from = policy.inherited ? `, inherited from _dmarc.${policy.foundAt}` : "";
  return { ...base, state: "ok", found: policy.text, detail: `DMARC policy ${p} (${alignment}${from})`, policy: p };
}

/**
 * The state of each record to publish, from what DNS answered for its name (the domain's
 * verdict is dkimVerdict's); SPF and DMARC are reported (a missing DMARC record is a
 * warning). The bounce domain is verified when its MX names `bounceMxHost` and it has an
 * SPF record. A lookup that got no answer is `pending`, never failed.
 */
export function checkRecords(
  records: readonly DnsRecord[], keys: readonly DkimPublicKey[],
  answers: {
    txt: ReadonlyMap<string, TxtLookupResult>; mx: ReadonlyMap<string, MxLookupResult>; dmarc: DmarcLookupResult; spf: readonly SpfEvaluation[];
    bounceMxHost: string;
  },
): { bounce: VerifyStatus | null; checks: RecordCheck[] } {
  const notLooked = (name: string) => ({ kind: "pending" as const, reason: `${name} was not looked up` });
  const checks = records.map((r) => {
    if (r.purpose === "bounce_mx") return checkBounceMx(r, answers.bounceMxHost, answers.mx.get(r.name) ?? notLooked(r.name));
    const answer = answers.txt.get(r.name) ?? notLooked(r.name);
    if (r.purpose === "dkim") return checkDkim(r, keys.find((k) => k.selector === r.selector)!.publicKey, answer);
    return r.purpose === "spf" ? checkSpf(r, answer, answers.spf) : checkDmarc(r, answer, answers.dmarc);
  });
  const bounceMx = checks.find((c) => c.purpose === "bounce_mx");
  // The bounce domain is the envelope sender once its MX and its SPF record are right.
  const bounce = bounceMx ? overall([bounceMx, checks.find((c) => c.purpose === "spf")!]) : null;
  return { bounce, checks };
}

/**
 * The domain's verdict from the checks of `records` (same order): verified when the DKIM
 * record of every key in `deciding` (the keys that sign after this check, or those still
 * waiting to be seen when none of their algorithm was) holds our key.
 */
export function dkimVerdict(records: readonly DnsRecord[], checks: readonly RecordCheck[], deciding: ReadonlySet<string>): VerifyStatus {
  return overall(checks.filter((_, i) => records[i]!.purpose === "dkim" && deciding.has(records[i]!.selector!)));
}

export type VerifyStatus = "verified" | "pending" | "failed";

/** Verified when every check is ok; pending while one got no answer; otherwise failed. */
function overall(checks: readonly RecordCheck[]): VerifyStatus {
  return checks.every((c) => c.state === "ok") ? "verified" : checks.some((c) => c.state === "pending") ? "pending" : "failed";
}
