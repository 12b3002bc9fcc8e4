// Sender domains (issue 11): what a domain name must be, who may manage it, DKIM selector
// names and the DNS records an operator publishes. Pure: the key pairs are made in
// src/security/dkim-keys.ts and the checks against DNS in src/services/domain-checks.ts.
import { z } from "zod";
import { parseDomain } from "./address.ts";

/** RFC 6376 signing algorithms we use: RSA-2048 and Ed25519 (RFC 8463). */
export const DKIM_ALGORITHMS = ["rsa-sha256", "ed25519-sha256"] as const;
export type DkimAlgorithm = (typeof DKIM_ALGORITHMS)[number];

/** The `k=` tag of the DNS record for each algorithm. */
const DKIM_KEY_TYPE: Record<DkimAlgorithm, "rsa" | "ed25519"> = { "rsa-sha256": "rsa", "ed25519-sha256": "ed25519" };

/** A domain name as stored: lowercased, letters-digits-hyphens labels, no IP literal. */
function domainName(what: string) {
  return z.string().transform((input, ctx) => {
    const lower = input.trim().toLowerCase().replace(/\.$/, "");
    const r = parseDomain(lower);
    if (!r.ok) {
      ctx.addIssue({ code: "custom", message: `${what} must be a domain name such as mail.example.com: ${r.message}`, input });
      return z.NEVER;
    }
    return r.value;
  });
}

export const AddDomainRequestSchema = z
  .strictObject({
    name: domainName("name").meta({ description: "The domain in the From address of the mail to send, e.g. example.com" }),
    bounce_domain: domainName("bounce_domain")
      .optional()
      .meta({ description: "A subdomain of `name` for the envelope sender (Return-Path), e.g. bounces.example.com" }),
  })
  .superRefine((v, ctx) => {
    if (v.bounce_domain !== undefined && !isSubdomainOf(v.bounce_domain, v.name))
      ctx.addIssue({ code: "custom", path: ["bounce_domain"], message: `bounce_domain must be a subdomain of ${v.name}, e.g. bounces.${v.name}`, input: v.bounce_domain });
  })
  .meta({ id: "AddDomainRequest" });
export type AddDomainRequest = z.infer<typeof AddDomainRequestSchema>;

/** Strictly below `parent` (a.b.example.com under example.com), never the domain itself. */
function isSubdomainOf(child: string, parent: string): boolean {
  return child.endsWith(`.${parent}`);
}

/**
 * Whether an API key limited to `allowedDomains` (its --domains) may manage `name`: the
 * same rule as sending from it (send-message.ts checkSenderAllowed), so a key can never
 * sign for a domain it may not send from.
 */
export function keyCoversDomain(allowedDomains: readonly string[], name: string): boolean {
  return allowedDomains.includes("*") || allowedDomains.includes(name);
}

/**
 * A dated selector: `sp` + year and month of creation + `r` (RSA) or `e` (Ed25519), e.g.
 * sp202612r. Dated so a rotation gets a new name (RFC 6376 section 3.1: selectors exist
 * so a domain can have several keys at once) and an operator can tell the old from the new.
 */
export function dkimSelector(at: Date, algorithm: DkimAlgorithm): string {
  const month = String(at.getUTCMonth() + 1).padStart(2, "0");
  return `sp${at.getUTCFullYear()}${month}${algorithm === "rsa-sha256" ? "r" : "e"}`;
}

export interface DkimPublicKey {
  selector: string;
  algorithm: DkimAlgorithm;
  /** Base64 `p=` value: the SubjectPublicKeyInfo for RSA, the raw 32-byte key for Ed25519 (RFC 8463 section 4.2). */
  publicKey: string;
}

export interface DnsRecord {
  /** What the record is for; a verification reports the state of each by this name. */
  purpose: "dkim" | "spf" | "dmarc";
  type: "TXT";
  name: string;
  value: string;
  /** For DKIM: which key it publishes. */
  selector?: string;
}

/** The TXT value that publishes a DKIM public key (RFC 6376 section 3.6.1). */
function dkimRecordValue(key: Pick<DkimPublicKey, "algorithm" | "publicKey">): string {
  return `v=DKIM1; k=${DKIM_KEY_TYPE[key.algorithm]}; p=${key.publicKey}`;
}

/** The SPF record suggested for the envelope domain when none exists yet. */
const SUGGESTED_SPF = "v=spf1 a mx ~all";
/** The DMARC record suggested to start with: monitor only (RFC 7489 section 6.3, p=none). */
const SUGGESTED_DMARC = "v=DMARC1; p=none";

/**
 * The records to publish for a domain: one TXT per DKIM key at <selector>._domainkey,
 * SPF at the envelope domain (the bounce domain when there is one, since SPF checks the
 * MAIL FROM domain, RFC 7208 section 2.4) and DMARC at _dmarc.<domain> (RFC 7489 section 6.1).
 */
export function dnsRecords(domain: { name: string; bounceDomain: string | null }, keys: readonly DkimPublicKey[]): DnsRecord[] {
  return [
    ...keys.map((k) => ({ purpose: "dkim" as const, type: "TXT" as const, name: `${k.selector}._domainkey.${domain.name}`, value: dkimRecordValue(k), selector: k.selector })),
    { purpose: "spf", type: "TXT", name: domain.bounceDomain ?? domain.name, value: SUGGESTED_SPF },
    { purpose: "dmarc", type: "TXT", name: `_dmarc.${domain.name}`, value: SUGGESTED_DMARC },
  ];
}
