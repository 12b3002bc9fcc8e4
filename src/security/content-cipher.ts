// AES-256-GCM for message content at rest (ARCHITECTURE.md, "Content at rest"). Each value gets a fresh
// 96-bit nonce and is bound to its row and column through the associated data, so a
// ciphertext copied into another row or column fails authentication instead of
// decrypting to someone else's content.
//
// Stored layout (bytea): version(1)=1 | keyIdLength(1) | keyId | nonce(12) | tag(16) | ciphertext
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

export interface DataKey {
  id: string;
  key: Buffer; // 32 bytes
}

const VERSION = 1;

/**
 * Stored content that cannot be decrypted. `reason` says whether it can get better:
 * `unknown_key` is content under a key id this process was not given (deploying the
 * key fixes it); `authentication_failed` and `unknown_format` are bytes that will never
 * decrypt under the keys held (tampered, moved to another row, or damaged).
 */
export class ContentDecryptError extends Error {
  override name = "ContentDecryptError";
  readonly reason: "unknown_key" | "authentication_failed" | "unknown_format";
  /** The key id written in the stored value, or null when the value is not in our format. */
  readonly keyId: string | null;

  constructor(reason: ContentDecryptError["reason"], keyId: string | null, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts);
    this.reason = reason;
    this.keyId = keyId;
  }
}

// The check value of a data key (stored in data_keys, see data-key-check.ts): this
// constant encrypted under the key, bound to its id. It decrypts only under the same key.
const CHECK_PLAINTEXT = "sealpost data key check";
const checkAad = (keyId: string) => `sealpost:data_keys:${keyId}`;

// Nonces are drawn from the CSPRNG 4 KiB at a time and handed out 12 bytes each: still
// uniformly random 96-bit nonces (NIST SP 800-38D 8.2.2), one system call per 341
// values instead of one per value on the send path.
const NONCE_POOL_BYTES = 12 * 341;

export class ContentCipher {
  readonly #keys = new Map<string, Buffer>();
  readonly #current: DataKey;
  #nonces = Buffer.alloc(0);
  #nonceOffset = 0;

  /** `keys[0]` encrypts new values; every key can decrypt. */
  constructor(keys: DataKey[]) {
    if (keys.length === 0) throw new Error("ContentCipher needs at least one key");
    for (const k of keys) {
      if (k.key.length !== 32) throw new Error(`data key ${k.id} must be 32 bytes`);
      if (!/^[A-Za-z0-9_-]{1,32}$/.test(k.id)) throw new Error("data key id must be 1-32 of [A-Za-z0-9_-]");
      this.#keys.set(k.id, k.key);
    }
    this.#current = keys[0]!;
  }

  get currentKeyId(): string {
    return this.#current.id;
  }

  /** Every key id held, the encrypting one first. */
  get keyIds(): string[] {
    return [...this.#keys.keys()];
  }

  /**
   * A key for another purpose derived from each data key held (HKDF-SHA256, RFC 5869, with
   * the purpose as its info), the encrypting key's first: what one data key protects stays
   * apart from what another derived key does, and retiring a data key retires its derivations.
   */
  derivedKeys(purpose: string): Buffer[] {
    return [...this.#keys.values()].map((key) => Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), purpose, 32)));
  }

  /** A fresh check value for the held key `keyId`. */
  checkValue(keyId: string): Buffer {
    const key = this.#keys.get(keyId);
    if (!key) throw new Error(`no data key ${keyId}`);
    return this.#encryptWith({ id: keyId, key }, CHECK_PLAINTEXT, checkAad(keyId));
  }

  /** Whether `stored` is the check value of the key this process holds under `keyId`. */
  matchesCheckValue(keyId: string, stored: Buffer | Uint8Array): boolean {
    try {
      return this.decrypt(stored, checkAad(keyId)).toString("utf8") === CHECK_PLAINTEXT && this.keyIdOf(stored) === keyId;
    } catch (err) {
      if (err instanceof ContentDecryptError) return false;
      throw err;
    }
  }

  #nextNonce(): Buffer {
    if (this.#nonceOffset + 12 > this.#nonces.length) {
      this.#nonces = randomBytes(NONCE_POOL_BYTES);
      this.#nonceOffset = 0;
    }
    // A copy, so no two values ever share the pool's memory.
    const nonce = Buffer.from(this.#nonces.subarray(this.#nonceOffset, this.#nonceOffset + 12));
    this.#nonces.fill(0, this.#nonceOffset, this.#nonceOffset + 12); // a used nonce does not linger
    this.#nonceOffset += 12;
    return nonce;
  }

  encrypt(plain: Buffer | string, aad: string): Buffer {
    return this.#encryptWith(this.#current, plain, aad);
  }

  #encryptWith(k: DataKey, plain: Buffer | string, aad: string): Buffer {
    const nonce = this.#nextNonce();
    const cipher = createCipheriv("aes-256-gcm", k.key, nonce);
    cipher.setAAD(Buffer.from(aad, "utf8"));
    const ct = Buffer.concat([cipher.update(typeof plain === "string" ? Buffer.from(plain, "utf8") : plain), cipher.final()]);
    const id = Buffer.from(k.id, "ascii");
    return Buffer.concat([Buffer.from([VERSION, id.length]), id, nonce, cipher.getAuthTag(), ct]);
  }

  /** Throws ContentDecryptError on any tampering or unknown key: never returns garbage. */
  decrypt(stored: Buffer | Uint8Array, aad: string): Buffer {
    const buf = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
    if (buf.length < 2 + 12 + 16 || buf[0] !== VERSION || buf.length < 2 + buf[1]! + 28)
      throw new ContentDecryptError("unknown_format", null, "stored content has an unknown format");
    const idLen = buf[1]!;
    const keyId = buf.subarray(2, 2 + idLen).toString("ascii");
    const key = this.#keys.get(keyId);
    if (!key) throw new ContentDecryptError("unknown_key", keyId, `stored content is encrypted under unknown data key "${keyId}"`);
    const off = 2 + idLen;
    const nonce = buf.subarray(off, off + 12);
    const tag = buf.subarray(off + 12, off + 28);
    const decipher = createDecipheriv("aes-256-gcm", key, nonce);
    decipher.setAAD(Buffer.from(aad, "utf8"));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(buf.subarray(off + 28)), decipher.final()]);
    } catch (cause) {
      throw new ContentDecryptError("authentication_failed", keyId, `stored content failed authentication under data key "${keyId}" (tampered or wrong key)`, { cause });
    }
  }

  keyIdOf(stored: Buffer | Uint8Array): string {
    const buf = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
    return buf.subarray(2, 2 + buf[1]!).toString("ascii");
  }
}

/** Associated data for one content column of one message row. */
export function contentAad(messageId: string, column: string): string {
  return `sealpost:messages:${messageId}:${column}`;
}
