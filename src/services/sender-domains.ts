// Sender domains (issue 11): adding one (with its DKIM key pairs), listing, showing,
// verifying, rotating its keys and removing. Called by the /domains routes with the caller's API key, and by the CLI
// (`sealpost domains`, run as the owner) with none. A key limited by --domains sees and
// manages only the domains it may send from; another domain is "not found" to it, as
// another key's message is.
import { randomUUID } from "node:crypto";
import type { Db } from "../db/client.ts";
import { isUniqueViolation } from "../db/errors.ts";
import {
  deleteSenderDomain, findSenderDomainById, recordDomainCheck, findSenderDomainByName, findSenderDomains, insertDkimKeys, insertSenderDomain,
  type SenderDomainRow,
} from "../db/sender-domains.ts";
import { AppError } from "../domain/errors.ts";
import { isUuid } from "../domain/uuid.ts";
import {
  checkRecords, dkimKeyStates, dkimRotationStep, dkimVerdict, dnsRecords, keyCoversDomain, type AddDomainRequest,
  type DkimAlgorithm, type DkimKeyState, type DmarcLookupResult, type DnsRecord, type MxLookupResult, type SpfEvaluation, type RecordCheck, type TxtLookupResult, type VerifyStatus,
} from "../domain/sender-domain.ts";
import type { ContentCipher } from "../security/content-cipher.ts";
import { generateDkimKeySet } from "../security/dkim-keys.ts";

// mailauth is loaded when a domain is first verified, not when the API starts: its DMARC
// and SPF modules (with the public suffix list) take about 30 MB a serving process would
// otherwise carry for a call it rarely makes.
const loadDmarc = () => import("mailauth/lib/dmarc/get-dmarc-record.js").then((m) => m.default);
const loadSpf = () => import("mailauth/lib/spf/index.js").then((m) => m.spf);

/** Who asks: an API key's sender domains, or null for the owner (CLI). */
export type DomainActor = { allowedDomains: readonly string[]; keyId: string } | null;

export interface SenderDomainView {
  id: string;
  name: string;
  bounce_domain: string | null;
  status: "pending" | "verified";
  /** Whether the bounce domain is the envelope sender: null without one. */
  bounce_status: "pending" | "verified" | null;
  created_at: string;
  verified_at: string | null;
  checked_at: string | null;
  dkim: Array<{ selector: string; algorithm: DkimAlgorithm; state: DkimKeyState; created_at: string; verified_at: string | null; retired_at: string | null }>;
  records: Array<{
    purpose: DnsRecord["purpose"]; type: DnsRecord["type"]; name: string; value: string;
    /** What the last verify found for this record; `unchecked` before one, or since the record changed. */
    state: RecordCheck["state"] | "unchecked";
    found: string | null;
    detail: string | null;
  }>;
}

/** The last verify's check of each record, by purpose, name and expected value. */
function lastChecks(checkResult: unknown): Map<string, RecordCheck> {
  const checks = (checkResult as { checks?: RecordCheck[] } | null)?.checks ?? [];
  return new Map(checks.map((c) => [`${c.purpose} ${c.name} ${c.expected}`, c]));
}

/**
 * `bounceMxHost`: where bounces reach sealpost, the host the bounce domain's MX must name
 * (config.ts bounceMxHost).
 */
function domainView(row: SenderDomainRow, bounceMxHost: string, now = new Date()): SenderDomainView {
  const keys = keysOf(row);
  const states = dkimKeyStates(keys, now);
  const checked = lastChecks(row.checkResult);
  return {
    id: row.id,
    name: row.name,
    bounce_domain: row.bounceDomain,
    status: row.verifiedAt ? "verified" : "pending",
    bounce_status: row.bounceDomain === null ? null : row.bounceVerifiedAt ? "verified" : "pending",
    created_at: row.createdAt.toISOString(),
    verified_at: row.verifiedAt?.toISOString() ?? null,
    checked_at: row.checkedAt?.toISOString() ?? null,
    dkim: keys.map((k) => ({
      selector: k.selector, algorithm: k.algorithm, state: states.get(k.selector)!, created_at: k.createdAt.toISOString(),
      verified_at: k.verifiedAt?.toISOString() ?? null, retired_at: k.retiredAt?.toISOString() ?? null,
    })),
    // A retired key's record is no longer listed: it may be deleted.
    records: dnsRecords(row, keys.filter((k) => states.get(k.selector) !== "retired"), bounceMxHost).map((r) => {
      const c = checked.get(`${r.purpose} ${r.name} ${r.value}`);
      return { purpose: r.purpose, type: r.type, name: r.name, value: r.value, state: c?.state ?? "unchecked", found: c?.found ?? null, detail: c?.detail ?? null };
    }),
  };
}

const keysOf = (row: SenderDomainRow) => row.dkimKeys.map((k) => ({ ...k, algorithm: k.algorithm as DkimAlgorithm }));

const covers = (actor: DomainActor, name: string) => actor === null || keyCoversDomain(actor.allowedDomains, name);

/**
 * Adds a domain with a fresh RSA-2048 and Ed25519 key pair. Refused, with nothing written,
 * when the key may not send from the domain (403) or the domain exists already (409).
 */
export async function addDomain(db: Db, cipher: ContentCipher, actor: DomainActor, input: AddDomainRequest, bounceMxHost: string, now = new Date()): Promise<SenderDomainView> {
  if (!covers(actor, input.name))
    throw new AppError("forbidden", `this API key may not send from ${input.name}, so it may not add it (its sender domains are set with keys create --domains)`, {
      errors: [{ path: "name", message: "is not one of this API key's sender domains" }],
    });
  const exists = () => new AppError("conflict", `the domain ${input.name} exists already`, { errors: [{ path: "name", message: "names a domain that exists already" }] });
  if (await findSenderDomainByName(db, input.name)) throw exists();
  const keys = await generateDkimKeySet(cipher, now);
  try {
    const row = await insertSenderDomain(db, { id: randomUUID(), name: input.name, bounceDomain: input.bounce_domain ?? null, createdByKeyId: actor?.keyId ?? null, keys });
    return domainView(row, bounceMxHost);
  } catch (err) {
    if (isUniqueViolation(err)) throw exists(); // added meanwhile by another request
    throw err;
  }
}

export async function listDomains(db: Db, actor: DomainActor, bounceMxHost: string): Promise<SenderDomainView[]> {
  const names = actor === null || actor.allowedDomains.includes("*") ? null : [...actor.allowedDomains];
  return (await findSenderDomains(db, names)).map((row) => domainView(row, bounceMxHost));
}

/** The domain with this id, if the actor may see it; otherwise 404 (its existence is not revealed). */
async function visibleDomain(db: Db, actor: DomainActor, id: string): Promise<SenderDomainRow> {
  const row = await findSenderDomainById(db, id);
  if (!row || !covers(actor, row.name)) throw new AppError("not_found", "no such domain");
  return row;
}

export async function getDomain(db: Db, actor: DomainActor, id: string, bounceMxHost: string): Promise<SenderDomainView> {
  return domainView(await visibleDomain(db, actor, id), bounceMxHost);
}

/** Finds a domain by id or by name, for the CLI, where an operator types either. */
export async function findDomainForOwner(db: Db, idOrName: string, bounceMxHost: string): Promise<SenderDomainView | null> {
  const row = isUuid(idOrName) ? await findSenderDomainById(db, idOrName) : await findSenderDomainByName(db, idOrName.toLowerCase());
  return row ? domainView(row, bounceMxHost) : null;
}

/** Removes a domain and its key pairs: mail from it is no longer signed. */
export async function removeDomain(db: Db, actor: DomainActor, id: string): Promise<void> {
  await visibleDomain(db, actor, id);
  if (!(await deleteSenderDomain(db, id))) throw new AppError("not_found", "no such domain");
}

/** Looks up the TXT and MX records at a name (worker/mx.ts createTxtResolver in production). */
export interface TxtLookup {
  txt(name: string): Promise<TxtLookupResult>;
  mx(name: string): Promise<MxLookupResult>;
  /** Any record type, throwing with node:dns's codes: mailauth's SPF evaluation resolves through it. */
  resolve(name: string, type: string): Promise<unknown>;
}

/** What verify needs from the configuration (config.ts). */
export interface VerifySettings {
  /** Where bounces reach sealpost (bounceMxHost). */
  bounceMxHost: string;
  /** DKIM_ROTATION_GRACE. */
  rotationGraceMs: number;
  /** SMTP_SOURCE_IPS: the SPF record must permit each; none configured, its presence is checked. */
  sourceIps: readonly string[];
  heloName: string;
}

export interface VerifyResult {
  status: VerifyStatus;
  /** The bounce domain's: null without one. */
  bounce_status: VerifyStatus | null;
  checks: RecordCheck[];
  domain: SenderDomainView;
}

/**
 * Checks the domain's records in DNS and records the outcome. A key whose record holds its
 * public key is seen (verified_at) and may sign; the newest seen key of each algorithm signs,
 * and the older ones retire after `rotationGraceMs` (at once if never seen): still listed
 * until then, so mail they signed keeps verifying. The domain is verified when the record of
 * each signing key holds it (before any key was seen: each pending key's); a lookup without
 * an answer (timeout) is `pending` and changes nothing but the check's record.
 */
export async function verifyDomain(db: Db, dns: TxtLookup, actor: DomainActor, id: string, settings: VerifySettings, now = new Date()): Promise<VerifyResult> {
  const { bounceMxHost, rotationGraceMs } = settings;
  const row = await visibleDomain(db, actor, id);
  const states = dkimKeyStates(keysOf(row), now);
  const live = keysOf(row).filter((k) => states.get(k.selector) !== "retired");
  const records = dnsRecords(row, live, bounceMxHost);
  const lookups = (type: DnsRecord["type"]) => [...new Set(records.filter((r) => r.type === type).map((r) => r.name))];
  // Load mailauth before any query is sent: compiling it blocks the event loop for a
  // moment, which must not eat into the lookups' timeouts.
  await Promise.all([loadDmarc(), settings.sourceIps.length > 0 ? loadSpf() : null]);
  const [txt, mx, dmarc, spf] = await Promise.all([
    Promise.all(lookups("TXT").map(async (n) => [n, await dns.txt(n)] as const)),
    Promise.all(lookups("MX").map(async (n) => [n, await dns.mx(n)] as const)),
    dmarcPolicy(dns, row.name),
    spfFor(dns, row.bounceDomain ?? row.name, settings),
  ]);
  const { bounce, checks } = checkRecords(records, live, { txt: new Map(txt), mx: new Map(mx), dmarc, spf, bounceMxHost });
  const ok = new Set(records.flatMap((r, i) => (r.purpose === "dkim" && checks[i]!.state === "ok" ? [r.selector!] : [])));
  const { seenNow, deciding, retire } = dkimRotationStep(live, ok, now, rotationGraceMs);
  const status = dkimVerdict(records, checks, deciding);
  const since = (verdict: VerifyStatus | null, before: Date | null) => (verdict === "verified" ? (before ?? now) : verdict === "failed" ? null : undefined);
  const updated = await recordDomainCheck(db, id, {
    at: now, result: { status, bounce_status: bounce, checks }, verifiedAt: since(status, row.verifiedAt), bounceVerifiedAt: since(bounce, row.bounceVerifiedAt),
    // A rotation completes only on a verified domain: the new key takes over once it is seen.
    keysSeen: seenNow, retire: status === "verified" ? retire : [],
  });
  if (!updated) throw new AppError("not_found", "no such domain");
  return { status, bounce_status: bounce, checks, domain: domainView(updated, bounceMxHost, now) };
}

/**
 * The DMARC policy receivers apply to `domain`, found by mailauth's policy discovery (RFC
 * 9989 4.10: the domain's own record, else its Organizational Domain's) through `dns`.
 */
async function dmarcPolicy(dns: TxtLookup, domain: string): Promise<DmarcLookupResult> {
  const resolver = async (name: string) => {
    const r = await dns.txt(name);
    if (r.kind === "records") return r.records.map((text) => [text]);
    throw Object.assign(new Error(r.reason), { code: r.kind === "none" ? "ENOTFOUND" : "ETIMEOUT" });
  };
  try {
    const r = await (await loadDmarc())(domain, resolver);
    if (!r) return { kind: "none" };
    return { kind: "record", text: r.rr, policy: r.p, adkim: r.adkim ?? "r", aspf: r.aspf ?? "r", foundAt: r.recordDomain, inherited: r.isOrgRecord };
  } catch (err) {
    return { kind: "pending", reason: `DMARC policy lookup for ${domain} failed: ${(err as Error).message}` };
  }
}

/**
 * SPF evaluated by mailauth (RFC 7208, includes and all) for a MAIL FROM at `envelopeDomain`
 * from each configured source address, through `dns`.
 */
async function spfFor(dns: TxtLookup, envelopeDomain: string, settings: VerifySettings): Promise<SpfEvaluation[]> {
  const resolver = (name: string, type: string) => dns.resolve(name, type) as Promise<string[][]>;
  if (settings.sourceIps.length === 0) return [];
  const evaluateSpf = await loadSpf();
  return Promise.all(settings.sourceIps.map(async (ip) => {
    const r = await evaluateSpf({ sender: `postmaster@${envelopeDomain}`, ip, helo: settings.heloName, resolver, maxElapsedTime: 10_000 });
    return { ip, result: r.status.result };
  }));
}

/**
 * Starts a DKIM key rotation (M3AAWG: about twice a year): a new RSA-2048 and Ed25519 pair
 * under new selectors, to publish beside the current ones. Nothing changes for signing until
 * their records verify (verifyDomain); 409 while an earlier rotation still waits for that.
 */
export async function rotateDkim(db: Db, cipher: ContentCipher, actor: DomainActor, id: string, bounceMxHost: string, now = new Date()): Promise<SenderDomainView> {
  const row = await visibleDomain(db, actor, id);
  const states = dkimKeyStates(keysOf(row), now);
  const waiting = row.dkimKeys.filter((k) => states.get(k.selector) === "pending");
  if (waiting.length > 0 && row.dkimKeys.some((k) => states.get(k.selector) === "active"))
    throw new AppError("conflict", `a key rotation of ${row.name} is waiting for its DNS records (${waiting.map((k) => `${k.selector}._domainkey.${row.name}`).join(", ")}): publish them and verify first`);
  const keys = await generateDkimKeySet(cipher, now, new Set(row.dkimKeys.map((k) => k.selector)));
  try {
    await insertDkimKeys(db, row.id, keys);
  } catch (err) {
    if (isUniqueViolation(err)) throw new AppError("conflict", `${row.name} was rotated meanwhile by another request`);
    throw err;
  }
  const updated = await findSenderDomainById(db, row.id);
  if (!updated) throw new AppError("not_found", "no such domain"); // removed meanwhile
  return domainView(updated, bounceMxHost, now);
}
