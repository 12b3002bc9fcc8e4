// DKIM key pairs (issue 11). Each sender domain gets an RSA-2048 and an Ed25519 pair
// (RFC 8463). The private key is stored as PKCS#8 PEM, AES-256-GCM encrypted under the
// data key with its own row and column as associated data, the way message content is
// (content-cipher.ts, contentAad): a private key copied to another row does not decrypt.
import { generateKeyPair, randomUUID, type KeyObject } from "node:crypto";
import { promisify } from "node:util";
import { DKIM_ALGORITHMS, dkimSelector, type DkimAlgorithm } from "../domain/sender-domain.ts";
import type { ContentCipher } from "./content-cipher.ts";

/** Associated data binding an encrypted private key to its dkim_keys row. */
export const dkimKeyAad = (keyId: string) => `sealpost:dkim_keys:${keyId}:private_key`;

export interface NewDkimKey {
  id: string;
  algorithm: DkimAlgorithm;
  /** Base64 `p=` value of the DNS record. */
  publicKey: string;
  /** The encrypted PKCS#8 PEM. */
  privateKey: Buffer;
}

const generate = promisify(generateKeyPair) as (type: "rsa" | "ed25519", opts?: { modulusLength: number }) => Promise<{ publicKey: KeyObject; privateKey: KeyObject }>;

/**
 * A fresh key pair for `algorithm`, its private half already encrypted for storage. RSA
 * key generation takes a good part of a second: it runs on libuv's thread pool, not on
 * the event loop the API answers from.
 */
async function generateDkimKey(algorithm: DkimAlgorithm, cipher: ContentCipher): Promise<NewDkimKey> {
  const id = randomUUID();
  const { publicKey, privateKey } = algorithm === "rsa-sha256" ? await generate("rsa", { modulusLength: 2048 }) : await generate("ed25519");
  const spki = publicKey.export({ format: "der", type: "spki" });
  // RFC 8463 section 4.2: for ed25519 the p= value is the bare 32-byte public key, which
  // is the tail of its SubjectPublicKeyInfo; for RSA it is the SubjectPublicKeyInfo.
  const p = algorithm === "rsa-sha256" ? spki : spki.subarray(spki.length - 32);
  const pem = privateKey.export({ format: "pem", type: "pkcs8" });
  return { id, algorithm, publicKey: p.toString("base64"), privateKey: cipher.encrypt(pem, dkimKeyAad(id)) };
}

/** A fresh pair of each algorithm we sign with, under selectors for `at` not in `taken`. */
export function generateDkimKeySet(cipher: ContentCipher, at: Date, taken: ReadonlySet<string> = new Set()): Promise<Array<NewDkimKey & { selector: string }>> {
  return Promise.all(DKIM_ALGORITHMS.map(async (algorithm) => ({ ...(await generateDkimKey(algorithm, cipher)), selector: dkimSelector(at, algorithm, taken) })));
}
