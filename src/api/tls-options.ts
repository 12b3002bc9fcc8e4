// TLS settings of the HTTPS API. The same object is used to create the server and on
// every certificate reload: tls.Server#setSecureContext replaces ciphers, versions
// and curves along with the certificate, so a reload that passed only {cert, key}
// would silently fall back to Node's defaults (which include CBC suites).
//
// Policy (Mozilla "intermediate" minus DHE, RFC 9325 recommendations):
// - TLS 1.2 minimum: TLS 1.0/1.1 are deprecated by RFC 8996.
// - TLS 1.2 suites: ECDHE key exchange only (forward secrecy; no static RSA, no
//   finite-field DHE, which needs large custom groups to be safe, RFC 7919) with an
//   AEAD cipher (AES-GCM, RFC 5288; ChaCha20-Poly1305, RFC 7905). That excludes every
//   CBC suite (Lucky13, padding oracles) and every SHA-1 MAC.
// - TLS 1.3 (RFC 8446): its three standard AEAD suites, all forward secret by design.
import { constants } from "node:crypto";
import type { SecureContextOptions } from "node:tls";

const TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

const TLS12_SUITES = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
];

/**
 * OpenSSL cipher string for both versions. Node sends the names starting with
 * `TLS_` to SSL_CTX_set_ciphersuites (TLS 1.3) and the rest to
 * SSL_CTX_set_cipher_list (TLS 1.2), so one string describes everything offered.
 */
const TLS_CIPHERS: string = [...TLS13_SUITES, ...TLS12_SUITES].join(":");

// Signature algorithms for the handshake signature: no SHA-1 (RFC 9155) and no MD5.
// PSS first (RFC 8446 4.2.3), PKCS#1 v1.5 with SHA-2 kept for TLS 1.2 clients.
const SIGALGS = [
  "ecdsa_secp256r1_sha256",
  "ecdsa_secp384r1_sha384",
  "ecdsa_secp521r1_sha512",
  "ed25519",
  "rsa_pss_rsae_sha256",
  "rsa_pss_rsae_sha384",
  "rsa_pss_rsae_sha512",
  "rsa_pss_pss_sha256",
  "rsa_pss_pss_sha384",
  "rsa_pss_pss_sha512",
  "rsa_pkcs1_sha256",
  "rsa_pkcs1_sha384",
  "rsa_pkcs1_sha512",
].join(":");

export type ServerTlsOptions = SecureContextOptions & {
  cert: string | Buffer;
  key: string | Buffer;
  minVersion: "TLSv1.2";
  honorCipherOrder: true;
  ciphers: string;
  ecdhCurve: string;
  sigalgs: string;
  secureOptions: number;
};

/** Options for https.createServer / Fastify `https:` / server.setSecureContext. */
export function serverTlsOptions(pem: { cert: string | Buffer; key: string | Buffer }): ServerTlsOptions {
  return {
    cert: pem.cert,
    key: pem.key,
    minVersion: "TLSv1.2",
    ciphers: TLS_CIPHERS,
    // Our order, not the client's: a client offering a weak-but-allowed suite first
    // still gets the strongest one we share.
    honorCipherOrder: true,
    // X25519 (RFC 7748) first, then the NIST curves every TLS stack has.
    ecdhCurve: "X25519:P-256:P-384",
    sigalgs: SIGALGS,
    // Refuse TLS 1.2 renegotiation outright: an API has no use for it and
    // client-initiated renegotiation is a CPU DoS vector. (Compression, the CRIME
    // vector, is already off by default in OpenSSL 1.1+ and Node.)
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
  };
}
