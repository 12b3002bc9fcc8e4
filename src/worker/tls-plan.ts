// Every decision one SMTP attempt makes about TLS, taken from the message's policy and the
// route in one place (ARCHITECTURE.md, "Strictest-of TLS policy"). smtp-attempt.ts carries
// the plan out and never reads the policy itself.
//   opportunistic = Postfix `may`: TLS when it works, cleartext when it does not, an
//                   unverified certificate is used but recorded;
//   required      = Postfix `verify`: TLS 1.2+, a certificate chaining to a trusted CA and
//                   naming the host, or nothing at all leaves this machine.
// Relay AUTH needs the same guarantee as `required`: credentials only go to a verified peer.
import type { SecureVersion } from "node:tls";
import type { TlsPolicy } from "../domain/tls-policy.ts";

export interface TlsPlan {
  /**
   * Use the session only over TLS at `minVersion` or newer with a certificate that chains to
   * a trusted CA and names the host; otherwise defer before MAIL, RCPT or AUTH is sent.
   */
  readonly strict: boolean;
  /** Oldest protocol the handshake accepts; undefined leaves Node's default. */
  readonly minVersion: SecureVersion | undefined;
  /** After a failed STARTTLS handshake, deliver over a new connection without TLS. */
  readonly cleartextAfterFailedHandshake: boolean;
  /** When STARTTLS is not offered or is refused (454/5xx), go on in cleartext on the same connection. */
  readonly cleartextWithoutStarttls: boolean;
  /** Send AUTH (only ever on a strict plan, so only after verified TLS). */
  readonly authenticate: boolean;
  /** Why the plan is strict, to open a refusal's text; null when it is not. */
  readonly requirement: string | null;
}

export interface TlsRoute {
  /** Relay credentials are configured. */
  auth: boolean;
  /** smtps:// relay: TLS from the first byte, so there is no cleartext to fall back to. */
  implicitTls: boolean;
}

/** TLS versions the strict plan accepts, in the order Node names them. */
const STRICT_MIN_VERSION: SecureVersion = "TLSv1.2";
const VERSIONS: readonly string[] = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

export function tlsPlan(policy: TlsPolicy, route: TlsRoute): TlsPlan {
  const strict = policy === "required" || route.auth;
  return {
    strict,
    minVersion: strict ? STRICT_MIN_VERSION : undefined,
    // A failed handshake leaves the connection unusable, so Postfix `may` retries on a new
    // one; nodemailer never does this by itself. Implicit TLS has no cleartext to retry in.
    cleartextAfterFailedHandshake: !strict && !route.implicitTls,
    cleartextWithoutStarttls: !strict,
    authenticate: route.auth,
    requirement: policy === "required" ? "TLS is required" : route.auth ? "relay AUTH needs verified TLS" : null,
  };
}

/** Whether a negotiated protocol (Node's name, e.g. "TLSv1.3") is at least `min`; no minimum accepts any. */
export function meetsMinVersion(version: string | null, min: SecureVersion | undefined): boolean {
  if (min === undefined) return true;
  return version !== null && VERSIONS.indexOf(version) >= VERSIONS.indexOf(min);
}
