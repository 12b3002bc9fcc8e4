// Which From domains POST /send accepts when SENDER_DOMAINS=verified (issue 11): only the
// verified sender domains, whose mail the worker DKIM-signs. The list is read once for
// every request of a TTL window, never per request.
import type { Db } from "../db/client.ts";
import { findSenderDomains } from "../db/sender-domains.ts";
import { domainOf } from "../domain/address.ts";
import { AppError } from "../domain/errors.ts";

interface KnownDomain {
  verified: boolean;
  /** The DKIM TXT records it needs, for the refusal to name. */
  records: string[];
}

export class SenderDomainGate {
  readonly #db: Db;
  readonly #ttlMs: number;
  #cache: { at: number; domains: Promise<Map<string, KnownDomain>> } | null = null;

  constructor(db: Db, ttlMs = 10_000) {
    this.#db = db;
    this.#ttlMs = ttlMs;
  }

  /** Throws the 403 a client should see when `fromAddress`'s domain is not a verified sender domain. */
  async check(fromAddress: string): Promise<void> {
    const domain = domainOf(fromAddress);
    const known = (await this.#domains()).get(domain);
    if (known?.verified) return;
    const detail = known
      ? `from: ${domain} is not verified yet: publish ${known.records.join(" and ")} (TXT, the values sealpost domains show ${domain} prints), then run sealpost domains verify ${domain} or POST /domains/{id}/verify`
      : `from: ${domain} is not a sender domain of this server: add it (sealpost domains add ${domain}, or POST /domains), publish its DKIM records and verify it`;
    throw new AppError("forbidden", detail, { errors: [{ path: "from", message: `${domain} must be a verified sender domain` }] });
  }

  #domains(): Promise<Map<string, KnownDomain>> {
    if (this.#cache && Date.now() - this.#cache.at < this.#ttlMs) return this.#cache.domains;
    const domains = findSenderDomains(this.#db, null).then(
      (rows) =>
        new Map(rows.map((d) => [d.name, {
          verified: d.verifiedAt !== null,
          records: d.dkimKeys.filter((k) => k.retiredAt === null).map((k) => `${k.selector}._domainkey.${d.name}`),
        }])),
    );
    domains.catch(() => (this.#cache = null)); // a failed read is not remembered
    this.#cache = { at: Date.now(), domains };
    return domains;
  }
}
