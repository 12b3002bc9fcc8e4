// The Ed25519 keys that sign delivery receipts (issue 15, item 7). A key's private half is
// stored encrypted under the data key (like DKIM keys), bound to its row; its public half
// is a JWK (RFC 8037: kty OKP, crv Ed25519) published at /.well-known/jwks.json.
import { createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import type { ContentCipher } from "./content-cipher.ts";
import { base32 } from "./base32.ts";

export const receiptKeyAad = (keyId: string) => `sealpost:receipt_keys:${keyId}:private_key`;

export interface ReceiptPublicJwk {
  kty: "OKP";
  crv: "Ed25519";
  x: string;
  kid: string;
  alg: "EdDSA";
  use: "sig";
}

/** A new key pair: the row to store (private key encrypted) and its public JWK. */
export function generateReceiptKey(cipher: ContentCipher, now: Date): { id: string; publicJwk: ReceiptPublicJwk; privateKey: Buffer; createdAt: Date } {
  const id = `rk_${base32(randomBytes(10))}`;
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const jwk = publicKey.export({ format: "jwk" }) as { kty: "OKP"; crv: "Ed25519"; x: string };
  const pem = privateKey.export({ format: "pem", type: "pkcs8" }) as string;
  return {
    id,
    publicJwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, kid: id, alg: "EdDSA", use: "sig" },
    privateKey: cipher.encrypt(pem, receiptKeyAad(id)),
    createdAt: now,
  };
}

/** The signing key of a stored row. */
export function openReceiptKey(cipher: ContentCipher, row: { id: string; privateKey: Uint8Array }): KeyObject {
  return createPrivateKey(cipher.decrypt(row.privateKey, receiptKeyAad(row.id)).toString("utf8"));
}
