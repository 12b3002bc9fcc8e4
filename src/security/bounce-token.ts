// The envelope sender of a message from a sender domain with a verified bounce domain
// (issue 11): bounce+<token>@<bounce domain>, one per recipient (VERP), so that a delivery
// status notification that comes back later names the recipient it is about even when the
// receiving system rewrote or lost the original headers. The token is the recipient's id
// and an HMAC of it (RFC 2104, SHA-256, truncated to 80 bits) under a key derived from the
// data key: a forged bounce cannot name a recipient it did not get mail for.
//
// The token is lowercase base32 (base32.ts): a local part may come back with its case changed.
import { createHmac, timingSafeEqual } from "node:crypto";
import { base32, fromBase32 } from "./base32.ts";
import type { ContentCipher } from "./content-cipher.ts";

const PURPOSE = "sealpost bounce address v1";
const MAC_BYTES = 10;
const PREFIX = "bounce+";

export class BounceTokens {
  readonly #keys: Buffer[];

  constructor(cipher: ContentCipher) {
    this.#keys = cipher.derivedKeys(PURPOSE);
  }

  #mac(key: Buffer, id: Buffer): Buffer {
    return createHmac("sha256", key).update(id).digest().subarray(0, MAC_BYTES);
  }

  /** bounce+<token>@<bounceDomain> for the recipient with this id. */
  address(recipientId: bigint, bounceDomain: string): string {
    const id = Buffer.alloc(8);
    id.writeBigUInt64BE(recipientId);
    return `${PREFIX}${base32(Buffer.concat([id, this.#mac(this.#keys[0]!, id)]))}@${bounceDomain}`;
  }

  /**
   * The recipient id a bounce address's local part names, or null when it is not one of
   * ours or its token does not authenticate under any data key held.
   */
  recipientOf(localPart: string): bigint | null {
    const lower = localPart.toLowerCase();
    if (!lower.startsWith(PREFIX)) return null;
    const raw = fromBase32(lower.slice(PREFIX.length));
    if (!raw || raw.length !== 8 + MAC_BYTES || base32(raw) !== lower.slice(PREFIX.length)) return null;
    const id = raw.subarray(0, 8);
    const mac = raw.subarray(8);
    return this.#keys.some((k) => timingSafeEqual(this.#mac(k, id), mac)) ? id.readBigUInt64BE() : null;
  }
}
