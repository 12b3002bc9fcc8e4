// What a connection's TLS actually was: protocol, cipher, whether the peer certificate
// chains to a trusted CA and names the host we meant to reach, and the certificate
// fields we keep as evidence. Also the trust store (system roots plus SMTP_CA_FILE).
import tls, { TLSSocket } from "node:tls";
import { isIP, type Socket } from "node:net";
import { X509Certificate } from "node:crypto";
import type { TlsEvidence } from "../domain/evidence.ts";

/** Why a session ended up (or would have ended up) without TLS. */
export const CLEARTEXT_REASON = {
  notOffered: "STARTTLS_NOT_OFFERED",
  refused: "STARTTLS_REFUSED",
  handshakeFailed: "TLS_HANDSHAKE_FAILED",
} as const;

/** Evidence of a session without TLS; `reason` says why (see CLEARTEXT_REASON). */
export function cleartextEvidence(reason: string | null): TlsEvidence {
  return {
    tls: false,
    tlsVersion: null,
    cipher: null,
    verified: null,
    verifyError: reason,
    certSubject: null,
    certIssuer: null,
    certNotAfter: null,
    certFingerprint: null,
  };
}

/** Host name as it appears on certificates and in SNI: no trailing root dot, lower case. */
function certificateName(host: string): string {
  return host.replace(/\.$/, "").toLowerCase();
}

/** SNI must be a DNS name (RFC 6066 section 3: "Literal IPv4 and IPv6 addresses are not permitted"). */
export function sniName(host: string): string | undefined {
  const name = certificateName(host);
  return isIP(name) ? undefined : name;
}

/**
 * Reads the evidence of an established TLS session and decides whether it is verified:
 * the chain must reach a trusted root (Node's `authorized`) and the certificate must match
 * `expectedHost`. The name is checked here again on purpose: Node only checks it against
 * the SNI name it was given, and with rejectUnauthorized false nothing else would notice
 * a missing or different name.
 */
function readTlsEvidence(socket: TLSSocket, expectedHost: string): TlsEvidence {
  const peer = peerCertificate(socket);
  const nameError = peer ? tls.checkServerIdentity(certificateName(expectedHost), peer) : undefined;
  let verifyError: string | null = null;
  if (!peer) verifyError = "NO_PEER_CERTIFICATE";
  else if (!socket.authorized) verifyError = errorCode(socket.authorizationError) ?? "UNABLE_TO_VERIFY";
  else if (nameError) verifyError = errorCode(nameError) ?? "ERR_TLS_CERT_ALTNAME_INVALID";
  return {
    tls: true,
    tlsVersion: socket.getProtocol() ?? null,
    cipher: socket.getCipher()?.name ?? null,
    verified: verifyError === null,
    verifyError,
    ...certificateFields(peer),
    hostNameMatch: peer ? !nameError : null,
    verifiedBy: "pkix",
    matched: null,
  };
}

/**
 * Evidence of whatever socket nodemailer holds: the TLS session when the handshake
 * completed (`established`; Node has no public flag for it, getProtocol() says "unknown"
 * half way), otherwise cleartext with `reason`, plus the certificate if a failed handshake
 * got that far.
 */
export function evidenceOf(socket: Socket | false | null, established: boolean, expectedHost: string, reason: string | null): TlsEvidence {
  if (!(socket instanceof TLSSocket)) return cleartextEvidence(reason);
  if (established) return readTlsEvidence(socket, expectedHost);
  return { ...cleartextEvidence(reason), ...certificateFields(peerCertificate(socket)) };
}

// Only the legacy getPeerCertificate() is used: on Node 20 (and possibly later) a client socket's
// getPeerX509Certificate() answers once, after which both it and getPeerCertificate()
// return nothing. The X509Certificate is rebuilt from the DER bytes instead.
function peerCertificate(socket: TLSSocket): tls.PeerCertificate | null {
  const peer = socket.getPeerCertificate();
  return peer && peer.raw ? peer : null;
}

function certificateFields(peer: tls.PeerCertificate | null): Pick<TlsEvidence, "certSubject" | "certIssuer" | "certNotAfter" | "certFingerprint"> {
  if (!peer) return { certSubject: null, certIssuer: null, certNotAfter: null, certFingerprint: null };
  const x509 = new X509Certificate(peer.raw);
  return {
    certSubject: oneLine(x509.subject),
    certIssuer: oneLine(x509.issuer),
    certNotAfter: new Date(x509.validTo),
    certFingerprint: x509.fingerprint256,
  };
}

/**
 * The certificates of the server's chain, leaf first, as DER: what a pinned fingerprint or a
 * TLSA record is matched against. getPeerCertificate(true) links the certificates the server
 * sent from leaf to issuer (dropping unrelated ones), and may end with an issuer from the local
 * trust store; the walk stops at a self-signed one or a repeat. DANE-TA still needs the chain
 * to verify up to the certificate its record names, so what is added cannot help a forgery.
 */
export function presentedChain(socket: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let c: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (c && c.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}

// Node types authorizationError as Error, but at runtime it is the OpenSSL code string.
function errorCode(e: unknown): string | null {
  if (typeof e === "string") return e;
  if (e && typeof e === "object" && "code" in e && typeof e.code === "string") return e.code;
  if (e instanceof Error) return e.message;
  return null;
}

// X509Certificate prints one RDN per line; evidence is stored and shown on one line.
function oneLine(dn: string): string {
  return dn.split("\n").filter(Boolean).join(", ");
}

const contexts = new Map<string, tls.SecureContext>();

/**
 * A TLS client context trusting the system roots plus `extraCa` (SMTP_CA_FILE), with the
 * minimum protocol the policy needs. Passing `ca` to Node replaces its roots instead of
 * adding to them, so the roots are listed explicitly; contexts are cached because parsing
 * some 150 root certificates for every connection would cost more than the handshake.
 */
export function trustContext(extraCa: readonly string[] | undefined, minVersion: tls.SecureVersion | undefined): tls.SecureContext {
  const key = `${minVersion ?? "default"}\0${(extraCa ?? []).join("\0")}`;
  let ctx = contexts.get(key);
  if (!ctx) {
    ctx = tls.createSecureContext({ ca: [...tls.rootCertificates, ...(extraCa ?? [])], ...(minVersion ? { minVersion } : {}) });
    contexts.set(key, ctx);
  }
  return ctx;
}
