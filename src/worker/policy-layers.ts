// The layers of a delivery's TLS policy beyond the message's own (ARCHITECTURE.md,
// "Strictest-of TLS policy"): the operator's per-domain map and the recipient domain's
// MTA-STS policy, each only ever making delivery stricter. For each MX host this decides
// whether it may be tried at all, the policy the attempt runs under, what verifies the
// certificate, and the evidence of why (PolicyDetail).
import { X509Certificate } from "node:crypto";
import type { PolicyDetail, TlsEvidence } from "../domain/evidence.ts";
import { strictestLayer, type AcceptSource, type PolicySource, type TlsPolicy } from "../domain/tls-policy.ts";
import { ruleFor, type TlsMapRule } from "../domain/tls-policy-map.ts";
import type { PeerCheck } from "./smtp-attempt.ts";
import { mxMatches, type StsLookup } from "./mta-sts.ts";
import { describeTlsa, matchTlsa, usable, type TlsaLookup } from "./dane.ts";

/** What the delivery's recipient domain is under, before any MX host is looked at. */
export interface DomainPolicy {
  domain: string;
  /** The policy fixed at acceptance (and the server's), and the layer it came from. */
  accepted: { policy: TlsPolicy; source: AcceptSource | "server" };
  map: TlsMapRule | null;
  sts: StsLookup | { state: "off" | "relay" | "relaxed"; reason: string };
  /** `TLS-Required: No` (RFC 8689): MTA-STS (and DANE) are not applied; the operator's, key's and message's policies are. */
  relaxed: boolean;
  /** Why DANE is not looked up for this delivery; null: it is, through `dane`. */
  daneOff: { state: "off" | "relay" | "relaxed"; reason: string } | null;
  dane?: { tlsa(host: string): Promise<TlsaLookup> };
}

/** How one MX host is to be tried, or why it is not. */
export type HostPlan =
  | { tried: true; policy: TlsPolicy; source: PolicySource; peerCheck?: PeerCheck; detail: PolicyDetail }
  /** `by`: the layer that kept the host from being tried (under `dane` only for now: its TLSA lookup failed). */
  | { tried: false; why: string; by: Extract<PolicySource, "map" | "mta-sts" | "dane"> };

export interface PolicyLayersSource {
  /** The operator's map (SMTP_TLS_POLICY_MAP and /tls-policies). */
  rules(): Promise<readonly TlsMapRule[]>;
  /** The recipient domain's MTA-STS policy; absent: MTA_STS=off. */
  mtaSts?: { policyFor(domain: string): Promise<StsLookup> };
  /** TLSA records through the validating resolver (dane.ts); absent: DANE_RESOLVER unset. */
  dane?: { tlsa(host: string): Promise<TlsaLookup> };
}

/** The layers for a delivery to `domain`; `viaRelay`: the recipient's own policies cannot be applied past the relay. */
export async function domainPolicy(
  layers: PolicyLayersSource, domain: string, accepted: DomainPolicy["accepted"], o: { viaRelay: boolean; relaxed: boolean },
): Promise<DomainPolicy> {
  const map = ruleFor(await layers.rules(), domain);
  let sts: DomainPolicy["sts"];
  if (o.viaRelay) sts = { state: "relay", reason: "delivered through SMTP_RELAY_URL: the relay applies the recipient's policy" };
  else if (!layers.mtaSts) sts = { state: "off", reason: "MTA_STS=off" };
  else if (o.relaxed) sts = { state: "relaxed", reason: "the message says TLS-Required: No" };
  else sts = await layers.mtaSts.policyFor(domain);
  const daneOff = o.viaRelay
    ? { state: "relay" as const, reason: "delivered through SMTP_RELAY_URL" }
    : !layers.dane
      ? DANE_OFF
      : o.relaxed
        ? { state: "relaxed" as const, reason: "the message says TLS-Required: No" }
        : null;
  return { domain, accepted, map, sts, relaxed: o.relaxed, daneOff, ...(layers.dane ? { dane: layers.dane } : {}) };
}

/** The MX hosts a domain's layers let delivery try, in order, or why none may be. */
export async function planHosts(dp: DomainPolicy, hosts: string[]): Promise<Map<string, HostPlan>> {
  return new Map(await Promise.all([...new Set(hosts)].map(async (host) => [host, await planHost(dp, host)] as const)));
}

/** The evidence of a delivery whose every MX host the layers ruled out: what each layer said, no host matching. */
export function ruledOutDetail(dp: DomainPolicy, ruledOut: Array<Extract<HostPlan, { tried: false }>>): PolicyDetail {
  const sts = dp.sts;
  const daneFailed = ruledOut.filter((p) => p.by === "dane");
  return detailOf(dp, {
    mta_sts: sts.state === "policy" ? stsDetail(sts, false) : { state: sts.state, reason: sts.reason },
    dane: dp.daneOff ?? (daneFailed.length > 0 ? { state: "lookup_failed", reason: daneFailed.map((p) => p.why).join("; ") } : { state: "none", reason: "no MX host was tried" }),
  });
}

/** What every layer said, before the session: the parts the attempt fills in (finishDetail) left empty. */
function detailOf(dp: DomainPolicy, o: Pick<PolicyDetail, "mta_sts" | "dane">): PolicyDetail {
  const map = dp.map;
  return {
    accepted: dp.accepted.source,
    map: map ? { pattern: map.pattern, origin: map.origin, mx: map.mx, fingerprints: map.fingerprints } : null,
    ...o,
    mx_name_check: null,
    verified_by: null,
    matched: null,
    tls_required_no: dp.relaxed,
    requiretls: false,
  };
}

function stsDetail(sts: Extract<StsLookup, { state: "policy" }>, mxMatch: boolean): Extract<PolicyDetail["mta_sts"], { state: "policy" }> {
  return {
    state: "policy", mode: sts.mode, id: sts.id, mx: sts.mx, expires_at: sts.expiresAt.toISOString(), mx_match: mxMatch,
    ...(sts.staleError ? { stale_error: sts.staleError } : {}),
  };
}

const DANE_OFF = { state: "off" as const, reason: "no DNSSEC-validating resolver is configured (DANE_RESOLVER)" };

async function planHost(dp: DomainPolicy, host: string): Promise<HostPlan> {
  const map = dp.map;
  if (map && map.mx.length > 0 && !(await mxMatches(host, map.mx))) {
    return { tried: false, by: "map", why: `${host} is not among the MX hosts the TLS policy map allows for ${dp.domain} (${map.mx.join(", ")}, rule ${map.pattern})` };
  }
  const sts = dp.sts;
  let stsSaid: PolicyDetail["mta_sts"];
  let stsEnforces = false;
  if (sts.state === "policy") {
    const mxMatch = sts.mode === "none" || (await mxMatches(host, sts.mx));
    stsSaid = {
      ...stsDetail(sts, mxMatch),
      ...(sts.mode === "testing" && !mxMatch ? { would_fail: `${host} does not match the policy's mx (${sts.mx.join(", ")})` } : {}),
    };
    if (sts.mode === "enforce") {
      if (!mxMatch) return { tried: false, by: "mta-sts", why: `${host} does not match the MTA-STS policy of ${dp.domain} (mode enforce, id ${sts.id}, mx ${sts.mx.join(", ")})` };
      stsEnforces = true;
    }
  } else stsSaid = { state: sts.state, reason: sts.reason };
  // DANE (RFC 7672) for this host: secure usable records verify the certificate instead of
  // a CA and the name; a failed lookup keeps the host from being tried now.
  let dane: PolicyDetail["dane"] = dp.daneOff ?? { state: "none", reason: "" };
  let daneRecords: TlsaLookup | null = null;
  if (!dp.daneOff && dp.dane) {
    daneRecords = await dp.dane.tlsa(host);
    if (daneRecords.kind === "defer") return { tried: false, by: "dane", why: `${host}: ${daneRecords.reason}` };
    dane = daneRecords.kind === "none" ? { state: "none", reason: daneRecords.reason }
      : daneRecords.records.some(usable) ? { state: "secure" }
      : { state: "unusable", reason: `${host} publishes only TLSA records unusable for SMTP (RFC 7672 section 3.1): TLS is required, the certificate is not checked` };
  }
  const daneSecure = dane.state === "secure" || dane.state === "unusable";
  const layer = strictestLayer<PolicySource>([
    { policy: dp.accepted.policy, source: dp.accepted.source },
    { policy: map ? "required" : null, source: "map" },
    { policy: stsEnforces ? "required" : null, source: "mta-sts" },
    { policy: daneSecure ? "required" : null, source: "dane" },
  ]);
  const detail = detailOf(dp, { mta_sts: stsSaid, dane });
  // The operator's pinned certificates come first; then DANE's records.
  const peerCheck = map && map.fingerprints.length > 0 ? fingerprintCheck(map.fingerprints)
    : daneRecords?.kind === "secure" ? daneCheck(daneRecords.records)
    : undefined;
  return { tried: true, policy: layer.policy, source: layer.source, ...(peerCheck ? { peerCheck } : {}), detail };
}

/** The policy map's pinned certificates: the leaf's SHA-256 fingerprint must be one of them (Postfix's `fingerprint` level). */
function fingerprintCheck(fingerprints: string[]): PeerCheck {
  return {
    key: `fingerprint:${fingerprints.join(",")}`,
    by: "fingerprint",
    check(chain) {
      const leaf = chain[0];
      if (!leaf) return { verified: false, error: "NO_PEER_CERTIFICATE", matched: null };
      const fp = new X509Certificate(leaf).fingerprint256;
      const ok = fingerprints.includes(fp);
      return { verified: ok, error: ok ? null : `FINGERPRINT_MISMATCH: ${fp} is not pinned by the TLS policy map`, matched: ok ? fp : null };
    },
  };
}

/**
 * DANE's check (dane.ts matchTlsa). With only unusable records the session must still be
 * TLS (the policy is required) but the certificate is not checked: RFC 7672 section 2.2.
 */
function daneCheck(records: Parameters<typeof matchTlsa>[0]): PeerCheck {
  const anyUsable = records.some(usable);
  return {
    key: `dane:${records.map(describeTlsa).join(",")}`,
    by: "dane",
    ...(anyUsable ? {} : { acceptUnverified: true }),
    check(chain, host) {
      if (!anyUsable) return { verified: false, error: "DANE_UNUSABLE_TLSA: only records unusable for SMTP, TLS without authentication", matched: null };
      const r = matchTlsa(records, chain, host);
      return "matched" in r ? { verified: true, error: null, matched: describeTlsa(r.matched) } : { verified: false, error: r.error, matched: null };
    },
  };
}

/** The attempt's detail completed from what the session showed: the name check, and what MTA-STS testing would have refused. */
export function finishDetail(detail: PolicyDetail, tls: TlsEvidence): PolicyDetail {
  const nameCheck = tls.hostNameMatch === undefined || tls.hostNameMatch === null ? null : tls.hostNameMatch ? "match" : "mismatch";
  const out: PolicyDetail = {
    ...detail, mx_name_check: nameCheck, verified_by: tls.tls ? (tls.verifiedBy ?? "pkix") : null, matched: tls.matched ?? null,
    ...(tls.sessionId ? { session: tls.sessionId } : {}),
  };
  if (tls.verifiedBy === "dane" && tls.matched) out.dane = { ...detail.dane, record: tls.matched };
  const sts = detail.mta_sts;
  if (sts.state === "policy" && sts.mode === "testing" && !sts.would_fail) {
    const why = !tls.tls ? `no TLS (${tls.verifyError ?? "not offered"})` : tls.verifiedBy === "pkix" && !tls.verified ? `the certificate did not verify (${tls.verifyError})` : null;
    if (why) out.mta_sts = { ...sts, would_fail: why };
  }
  return out;
}

/**
 * The map's rules: SMTP_TLS_POLICY_MAP's, then /tls-policies' read from the database at most
 * once per `ttlMs` (a worker applies a new rule within that time). A failed read keeps the
 * last rules read and is tried again on the next delivery; until one read has succeeded,
 * deliveries wait for it rather than go out without the operator's rules.
 */
export class TlsPolicyMap {
  readonly #config: readonly TlsMapRule[];
  readonly #load: () => Promise<TlsMapRule[]>;
  readonly #ttlMs: number;
  #last: { at: number; rules: Promise<readonly TlsMapRule[]> } | null = null;
  #good: readonly TlsMapRule[] | null = null;

  constructor(config: readonly TlsMapRule[], load: () => Promise<TlsMapRule[]>, ttlMs: number) {
    this.#config = config;
    this.#load = load;
    this.#ttlMs = ttlMs;
  }

  rules(): Promise<readonly TlsMapRule[]> {
    if (this.#last && Date.now() - this.#last.at < this.#ttlMs) return this.#last.rules;
    const rules = this.#load().then(
      (db) => (this.#good = [...this.#config, ...db]),
      (err: unknown) => {
        this.#last = null;
        if (this.#good) return this.#good;
        throw err;
      },
    );
    this.#last = { at: Date.now(), rules };
    return rules;
  }
}
