// DKIM signing (RFC 6376, Ed25519 per RFC 8463) of outgoing messages with mailauth's
// signer. A message whose From domain is a verified sender domain gets one signature per
// active key of it (RSA-2048 and Ed25519: the newest of each whose record was seen, so a
// rotation's new keys sign only once they verify), relaxed/relaxed, over the exact bytes
// sent. Keys are read and decrypted once per domain and kept for DKIM_KEY_CACHE_MS; a
// domain without verified keys is remembered as such for as long.
import type pg from "pg";
import { findSigningKeys } from "../db/sender-domains.ts";
import { domainOf } from "../domain/address.ts";
import type { ContentCipher } from "../security/content-cipher.ts";
import { dkimKeyAad } from "../security/dkim-keys.ts";
import { DomainCache } from "./domain-cache.ts";

/**
 * The header fields a receiver checks (issue 11): From, To, Cc, Subject, Date,
 * Message-ID, Reply-To and the MIME headers. mailauth's signer lists each field as often
 * as the message has it, so From is not oversigned (listed once more than present);
 * a From added in transit is still caught by DMARC's single-From rule (RFC 7489 6.6.1).
 */
const SIGNED_HEADERS = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"];

interface SigningKey {
  selector: string;
  algorithm: string;
  privateKey: string;
}

export interface Signed {
  message: Buffer;
  /** Selectors of the signatures added, e.g. ["sp202612r", "sp202612e"]; empty when none. */
  selectors: string[];
}

export class DkimSigner {
  readonly #keys: DomainCache<SigningKey[]>;

  constructor(pool: pg.Pool, cipher: ContentCipher, ttlMs = 60_000) {
    this.#keys = new DomainCache(ttlMs, async (domain) =>
      (await findSigningKeys(pool, domain)).map((r) => ({ selector: r.selector, algorithm: r.algorithm, privateKey: cipher.decrypt(r.privateKey, dkimKeyAad(r.id)).toString("utf8") })),
    );
  }

  /** Signs `raw` for the domain of `fromAddress`; unchanged when that domain has no verified keys. */
  async sign(raw: Buffer, fromAddress: string): Promise<Signed> {
    const domain = domainOf(fromAddress).toLowerCase();
    const keys = await this.#keys.of(domain);
    if (keys.length === 0) return { message: raw, selectors: [] };
    // mailauth's signer is loaded with the first message to sign (about 30 MB of code and
    // tables a worker that signs nothing does without).
    const { dkimSign } = await import("mailauth/lib/dkim/sign.js");
    const result = await dkimSign(raw, {
      signingDomain: domain,
      selector: keys[0]!.selector,
      privateKey: keys[0]!.privateKey,
      canonicalization: "relaxed/relaxed",
      headerList: SIGNED_HEADERS,
      signatureData: keys.map((k) => ({ signingDomain: domain, selector: k.selector, privateKey: k.privateKey, algorithm: k.algorithm, canonicalization: "relaxed/relaxed" })),
    });
    if (result.errors?.length) throw new Error(`DKIM signing for ${domain} failed: ${result.errors.map((e) => e.err?.message ?? String(e)).join("; ")}`);
    return { message: Buffer.concat([Buffer.from(result.signatures), raw]), selectors: keys.map((k) => k.selector) };
  }
}
