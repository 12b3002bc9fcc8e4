// SMTP TLS reports (RFC 8460): what direct delivery to each recipient domain met over one
// UTC day, in the RFC's aggregate JSON. Built from the delivery evidence (one row per
// recipient and attempt, grouped by what it says), so a report is what the attempts
// recorded; a connection that carried several messages counts once (by its session id).

/** One group of attempts with the same outcome, as the database sums them (db/tls-reports.ts). */
export interface AttemptGroup {
  domain: string;
  /** policy_detail.mta_sts as recorded. */
  sts: { state: string; mode?: string; id?: string; mx?: string[]; mx_match?: boolean } | null;
  /** policy_detail.dane as recorded: its state and the TLSA record matched. */
  dane?: { state: string | null; record: string | null } | null;
  mxHost: string | null;
  ip: string | null;
  tls: boolean;
  verified: boolean | null;
  verifyError: string | null;
  mxNameCheck: string | null;
  /** The reply text of an attempt decided without a connection (a host ruled out by the policy). */
  replyText: string | null;
  count: number;
}

type ResultType =
  | "starttls-not-supported" | "certificate-host-mismatch" | "certificate-expired" | "certificate-not-trusted"
  | "validation-failure" | "sts-policy-invalid" | "sts-webpki-invalid" | "dnssec-invalid";

interface FailureDetail {
  "result-type": ResultType;
  "sending-mta-ip"?: string;
  "receiving-mx-hostname"?: string;
  "receiving-ip"?: string;
  "failed-session-count": number;
  "additional-information"?: string;
  "failure-reason-code"?: string;
}

interface PolicyReport {
  policy: { "policy-type": "sts" | "tlsa" | "no-policy-found"; "policy-string"?: string[]; "policy-domain": string; "mx-host"?: string[] };
  summary: { "total-successful-session-count": number; "total-failure-session-count": number };
  "failure-details": FailureDetail[];
}

export interface TlsReport {
  "organization-name": string;
  "date-range": { "start-datetime": string; "end-datetime": string };
  "contact-info": string;
  "report-id": string;
  policies: PolicyReport[];
}

const NOT_TRUSTED = new Set(["DEPTH_ZERO_SELF_SIGNED_CERT", "SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "UNABLE_TO_GET_ISSUER_CERT", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "CERT_UNTRUSTED", "NO_PEER_CERTIFICATE"]);

/** RFC 8460 section 4.3: the result type of a failed session, from its evidence; null when it succeeded. */
export function resultType(g: AttemptGroup): { type: ResultType; info?: string; code?: string } | null {
  if (g.mxHost === null) {
    // Ruled out by the policy before any connection: the MX name is not one the policy allows.
    return { type: "validation-failure", info: g.replyText ?? "no MX host matches the policy", code: "mx-not-in-policy" };
  }
  if (!g.tls) return { type: "starttls-not-supported", ...(g.verifyError ? { code: g.verifyError.split(":")[0]! } : {}) };
  if (g.verified) return null;
  const code = (g.verifyError ?? "").split(":")[0]!;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID" || g.mxNameCheck === "mismatch") return { type: "certificate-host-mismatch", code: code || "name-mismatch" };
  if (code === "CERT_HAS_EXPIRED") return { type: "certificate-expired", code };
  if (NOT_TRUSTED.has(code)) return { type: "certificate-not-trusted", code };
  return { type: "validation-failure", ...(code ? { code } : {}) };
}

/**
 * The report for one recipient domain and day. A session counts as successful when TLS was
 * negotiated and, where a policy applied (MTA-STS enforce or testing), verified (RFC 8460
 * section 4.3); without a policy, negotiating TLS is success.
 */
export function buildReport(o: {
  domain: string; day: string; groups: AttemptGroup[]; organization: string; contact: string; reporter: string; sendingIp?: string | undefined;
  maxAgeOf?: (id: string) => number | undefined;
}): TlsReport {
  const byPolicy = new Map<string, { report: PolicyReport; failures: Map<string, FailureDetail> }>();
  for (const g of o.groups) {
    // DANE, where it applied to the host, is the policy the session was held to (RFC 8461 section 2).
    const dane = g.dane?.state === "secure" || g.dane?.state === "unusable" || g.dane?.state === "lookup_failed" ? g.dane : null;
    const sts = !dane && g.sts?.state === "policy" && g.sts.mode !== "none" ? g.sts : null;
    const key = dane ? `tlsa:${g.mxHost ?? ""}` : sts ? `sts:${sts.id}` : "none";
    let entry = byPolicy.get(key);
    if (!entry) {
      const maxAge = sts ? o.maxAgeOf?.(sts.id!) : undefined;
      const policy: PolicyReport["policy"] = dane
        ? { "policy-type": "tlsa", "policy-string": [], "policy-domain": o.domain, ...(g.mxHost ? { "mx-host": [g.mxHost] } : {}) }
        : sts
        ? {
            "policy-type": "sts",
            "policy-string": ["version: STSv1", `mode: ${sts.mode}`, ...(sts.mx ?? []).map((m) => `mx: ${m}`), ...(maxAge !== undefined ? [`max_age: ${maxAge}`] : [])],
            "policy-domain": o.domain,
            "mx-host": sts.mx ?? [],
          }
        : { "policy-type": "no-policy-found", "policy-domain": o.domain };
      entry = { report: { policy, summary: { "total-successful-session-count": 0, "total-failure-session-count": 0 }, "failure-details": [] }, failures: new Map() };
      byPolicy.set(key, entry);
    }
    // Without a policy only the lack of TLS is a failure: an unverified certificate is what opportunistic TLS accepts.
    // An MX host outside the policy is a failure of it even when TLS verified (testing mode delivers there).
    if (dane?.record && !entry.report.policy["policy-string"]!.includes(dane.record)) entry.report.policy["policy-string"]!.push(dane.record);
    const failure = dane?.state === "lookup_failed"
      ? { type: "dnssec-invalid" as const, info: g.replyText ?? "the TLSA lookup failed", code: "tlsa-lookup-failed" }
      : sts && sts.mx_match === false && g.mxHost !== null
      ? { type: "validation-failure" as const, info: `${g.mxHost} does not match the policy's mx`, code: "mx-not-in-policy" }
      : dane?.state === "unusable" && g.tls ? null
      : resultType(g);
    const counted = failure && (sts || dane || failure.type === "starttls-not-supported") ? failure : null;
    if (!counted) {
      entry.report.summary["total-successful-session-count"] += g.count;
      continue;
    }
    entry.report.summary["total-failure-session-count"] += g.count;
    const fkey = [counted.type, g.mxHost, g.ip, counted.code].join("\0");
    const f = entry.failures.get(fkey);
    if (f) f["failed-session-count"] += g.count;
    else {
      const detail: FailureDetail = {
        "result-type": counted.type,
        ...(o.sendingIp ? { "sending-mta-ip": o.sendingIp } : {}),
        ...(g.mxHost ? { "receiving-mx-hostname": g.mxHost } : {}),
        ...(g.ip ? { "receiving-ip": g.ip } : {}),
        "failed-session-count": g.count,
        ...(counted.info ? { "additional-information": counted.info } : {}),
        ...(counted.code ? { "failure-reason-code": counted.code } : {}),
      };
      entry.failures.set(fkey, detail);
      entry.report["failure-details"].push(detail);
    }
  }
  return {
    "organization-name": o.organization,
    "date-range": { "start-datetime": `${o.day}T00:00:00Z`, "end-datetime": `${o.day}T23:59:59Z` },
    "contact-info": o.contact,
    "report-id": `${o.day}.${o.domain}@${o.reporter}`,
    policies: [...byPolicy.values()].map((e) => e.report),
  };
}
