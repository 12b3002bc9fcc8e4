// The evidence of a delivery attempt and the verdict on each recipient, as the worker
// produces them and the database keeps them (ARCHITECTURE.md, "Evidence per attempt").
// Types only: the worker fills them in, src/db writes and reads them.
import type { RecipientStatus } from "./message.ts";
import type { TlsPolicy } from "./tls-policy.ts";

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
