// The evidence of a delivery attempt and the verdict on each recipient, as the worker
// produces them and the database keeps them (ARCHITECTURE.md, "Evidence per attempt").
// Types only: the worker fills them in, src/db writes and reads them.
import type { RecipientStatus } from "./message.ts";
import type { PolicySource, TlsPolicy } from "./tls-policy.ts";

export interface TlsEvidence {
  tls: boolean;
  tlsVersion: string | null;
  cipher: string | null;
  /** null when no TLS session was established (nothing to verify). */
  verified: boolean | null;
  /**
   * Why the certificate did not verify (Node's code, e.g. DEPTH_ZERO_SELF_SIGNED_CERT,
   * ERR_TLS_CERT_ALTNAME_INVALID), or, without TLS, why there is none: one of the
   * CLEARTEXT_REASON codes, optionally followed by ": " and the detail.
   */
  verifyError: string | null;
  certSubject: string | null;
  certIssuer: string | null;
  certNotAfter: Date | null;
  /** SHA-256 fingerprint, colon-separated hex as Node prints it. */
  certFingerprint: string | null;
  /** Whether the certificate names the host connected to (MX or relay), chain trusted or not; null without one. */
  hostNameMatch?: boolean | null;
  /**
   * What `verified` was decided by: `pkix` (a trusted CA and the host's name), `fingerprint`
   * (a pinned certificate of the policy map) or `dane` (a TLSA record). Null without TLS.
   */
  verifiedBy?: "pkix" | "fingerprint" | "dane" | null;
  /** The pinned fingerprint or TLSA record ("3 1 1 <hex>") the certificate matched. */
  matched?: string | null;
  /** An id of the SMTP connection (one TLS session): the attempts of the messages it carried share it. */
  sessionId?: string;
}

/**
 * What each layer of the TLS policy said for one attempt (delivery_attempts.policy_detail),
 * stored and shown as is: the evidence of why the policy was what it was.
 */
export interface PolicyDetail {
  /** The layer that fixed the policy at acceptance (server, key, message) or default. */
  accepted: PolicySource;
  /** The operator's map rule for the recipient domain, if one matched. */
  map: { pattern: string; origin: "config" | "api"; mx: string[]; fingerprints: string[] } | null;
  /** The recipient domain's MTA-STS policy as applied, or why none was. */
  mta_sts:
    | { state: "policy"; mode: "enforce" | "testing" | "none"; id: string; mx: string[]; expires_at: string; mx_match: boolean; stale_error?: string; would_fail?: string }
    | { state: "none" | "off" | "relay" | "relaxed" | "unavailable"; reason: string };
  /** DANE for the MX host (RFC 7672), or why it did not apply. */
  dane: { state: "off" | "relay" | "none" | "relaxed" | "secure" | "unusable" | "lookup_failed"; record?: string; reason?: string };
  /** Whether the certificate named the host (null: no certificate), whatever decided `verified`. */
  mx_name_check: "match" | "mismatch" | null;
  /** What decided `verified` (null without TLS), and the pinned fingerprint or TLSA record matched. */
  verified_by: "pkix" | "fingerprint" | "dane" | null;
  matched: string | null;
  /** The message carried `TLS-Required: No` (RFC 8689): the recipient's published policies were not applied. */
  tls_required_no: boolean;
  /** MAIL FROM carried REQUIRETLS (RFC 8689): the server advertised it and the message's policy is `required`. */
  requiretls: boolean;
  /** The SMTP connection the attempt went over (absent when none was made): TLS reports count sessions by it. */
  session?: string;
}

/**
 * The evidence of one attempt, from the attempt to its delivery_attempts row (ARCHITECTURE.md,
 * "Evidence per attempt"): the session's TLS, where it went, under which policy, and when.
 * Host, IP and port are null when no host was tried (no MX, content unreadable ...).
 */
export interface AttemptEvidence extends TlsEvidence {
  mxHost: string | null;
  ip: string | null;
  port: number | null;
  policy: TlsPolicy;
  startedAt: Date;
  durationMs: number;
  /** Selectors of the DKIM signatures on the bytes sent (none: unsigned, or nothing sent). */
  dkimSelectors?: string[];
  /** SHA-256 (hex) of the message this attempt offered, the bytes sent after DATA when it got that far. */
  messageSha256?: string;
  /** The layer the policy came from, and what every layer said. */
  policySource?: PolicySource;
  policyDetail?: PolicyDetail;
}

/** What one attempt decides for a recipient: the recipient statuses an SMTP reply (or its absence) can lead to. */
export type DeliveryOutcome = Extract<RecipientStatus, "delivered" | "deferred" | "bounced">;

/** The verdict on one recipient in one attempt, and the reply (or local reason) behind it. */
export interface ReplyVerdict {
  outcome: DeliveryOutcome;
  /** Code of the server reply behind the outcome; null when decided here (TLS policy, lost connection). */
  replyCode: number | null;
  /** RFC 3463 code: the server's, the reply class's "X.0.0", or one of LOCAL_STATUS. */
  enhancedCode: string | null;
  replyText: string | null;
}
