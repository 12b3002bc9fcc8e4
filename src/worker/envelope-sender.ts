// The envelope sender (MAIL FROM, the Return-Path a receiver records) of each message. A
// From domain whose bounce domain is verified sends as bounce+<token>@<bounce domain>, one
// address per recipient (VERP, security/bounce-token.ts), so SPF is checked on a subdomain
// of the From domain (aligned for DMARC, RFC 7489 3.1.2) and a later bounce names its
// recipient; any other message keeps its From address. Bounce domains are read once per
// domain and kept for BOUNCE_DOMAIN_CACHE_MS, as DKIM keys are.
import type pg from "pg";
import { findBounceDomain } from "../db/sender-domains.ts";
import { domainOf } from "../domain/address.ts";
import { BounceTokens } from "../security/bounce-token.ts";
import type { ContentCipher } from "../security/content-cipher.ts";
import { DomainCache } from "./domain-cache.ts";

const BOUNCE_DOMAIN_CACHE_MS = 60_000;

export class EnvelopeSenders {
  readonly #tokens: BounceTokens;
  readonly #domains: DomainCache<string | null>;

  constructor(pool: pg.Pool, cipher: ContentCipher, ttlMs = BOUNCE_DOMAIN_CACHE_MS) {
    this.#tokens = new BounceTokens(cipher);
    this.#domains = new DomainCache(ttlMs, (domain) => findBounceDomain(pool, domain));
  }

  /** The verified bounce domain of the From address's domain, or null: then MAIL FROM is the From address. */
  bounceDomainOf(fromAddress: string): Promise<string | null> {
    return this.#domains.of(domainOf(fromAddress).toLowerCase());
  }

  /** MAIL FROM for one recipient of a message from a domain with `bounceDomain`. */
  address(recipientId: bigint, bounceDomain: string): string {
    return this.#tokens.address(recipientId, bounceDomain);
  }
}
