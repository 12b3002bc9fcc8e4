// Certificate authority and leaf certificates in pure JavaScript (node-forge), so a
// fresh checkout can serve HTTPS without openssl and tests can build a private CA
// for their SMTP and HTTPS peers. RSA 2048 keeps compatibility with every client;
// key exchange is still ECDHE, so forward secrecy does not depend on the key type.
import { createRequire } from "node:module";
import type forge from "node-forge";
import { isIP } from "node:net";
import { generateKeyPairSync } from "node:crypto";

export interface Pem {
  cert: string;
  key: string;
}

export interface IssueOptions {
  /** DNS names and IP addresses for subjectAltName; the first is also the CN. */
  names: string[];
  notBefore?: Date;
  notAfter?: Date;
  /** Sign with this CA; omit for a self-signed leaf. */
  ca?: Pem;
  keyBits?: number;
}

// node-forge is loaded the first time a certificate is made (development CA, test peers):
// a process given its certificate files (production) never needs its 10 MB.
let loaded: typeof forge | undefined;
const lib = (): typeof forge => (loaded ??= createRequire(import.meta.url)("node-forge") as typeof forge);

function serial(): string {
  // Positive 128-bit serial (RFC 5280 4.1.2.2: at most 20 octets, positive).
  return "01" + lib().util.bytesToHex(lib().random.getBytesSync(15));
}

function generateKeyPair(bits: number): forge.pki.rsa.KeyPair {
  // Node's native generator is ~20x faster than forge's pure-JS one.
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: bits, publicExponent: 0x10001 });
  const priv = lib().pki.privateKeyFromPem(privateKey.export({ type: "pkcs1", format: "pem" }).toString()) as forge.pki.rsa.PrivateKey;
  return { privateKey: priv, publicKey: lib().pki.setRsaPublicKey(priv.n, priv.e) };
}

/** A self-signed CA certificate valid for `days` days. */
export function createCa(commonName: string, days = 3650): Pem {
  const keys = generateKeyPair(2048);
  const cert = lib().pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + days * 86_400_000);
  const attrs = [{ name: "commonName", value: commonName }, { name: "organizationName", value: "sealpost" }];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(keys.privateKey, lib().md.sha256.create());
  return { cert: lib().pki.certificateToPem(cert), key: lib().pki.privateKeyToPem(keys.privateKey) };
}

/** A server certificate for the given names, signed by `ca` or self-signed. */
export function issueCertificate(opts: IssueOptions): Pem {
  if (opts.names.length === 0) throw new Error("issueCertificate needs at least one name");
  const keys = generateKeyPair(opts.keyBits ?? 2048);
  const cert = lib().pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
  cert.validity.notAfter = opts.notAfter ?? new Date(Date.now() + 825 * 86_400_000);
  cert.setSubject([{ name: "commonName", value: opts.names[0]! }]);
  let signingKey: forge.pki.PrivateKey = keys.privateKey;
  if (opts.ca) {
    const caCert = lib().pki.certificateFromPem(opts.ca.cert);
    cert.setIssuer(caCert.subject.attributes);
    signingKey = lib().pki.privateKeyFromPem(opts.ca.key);
  } else {
    cert.setIssuer(cert.subject.attributes);
  }
  cert.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: opts.names.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })),
    },
  ]);
  cert.sign(signingKey as forge.pki.rsa.PrivateKey, lib().md.sha256.create());
  return { cert: lib().pki.certificateToPem(cert), key: lib().pki.privateKeyToPem(keys.privateKey) };
}
