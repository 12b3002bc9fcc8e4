// Statements on sender_domains and dkim_keys (issue 11). A domain and its key pairs are
// written in one statement (a nested create), so no domain exists without keys.
import type pg from "pg";
import type { Db, Tx } from "./client.ts";
import { underDataKeySql } from "./content.ts";

interface DkimKeyRow {
  id: string;
  selector: string;
  algorithm: string;
  publicKey: string;
  createdAt: Date;
  verifiedAt: Date | null;
  retiredAt: Date | null;
}

export interface SenderDomainRow {
  id: string;
  name: string;
  bounceDomain: string | null;
  createdAt: Date;
  verifiedAt: Date | null;
  checkedAt: Date | null;
  checkResult: unknown;
  bounceVerifiedAt: Date | null;
  dkimKeys: DkimKeyRow[];
}

type NewDkimKeyRow = { id: string; selector: string; algorithm: string; publicKey: string; privateKey: Buffer };

export interface NewSenderDomainRow {
  id: string;
  name: string;
  bounceDomain: string | null;
  createdByKeyId: string | null;
  keys: NewDkimKeyRow[];
}

const dkimKeyData = (k: NewDkimKeyRow) => ({ id: k.id, selector: k.selector, algorithm: k.algorithm, publicKey: k.publicKey, privateKey: new Uint8Array(k.privateKey) });

// Private keys are never selected here: what the API shows is built from these columns only.
const DOMAIN_SELECT = {
  id: true, name: true, bounceDomain: true, createdAt: true, verifiedAt: true, checkedAt: true, checkResult: true, bounceVerifiedAt: true,
  dkimKeys: { select: { id: true, selector: true, algorithm: true, publicKey: true, createdAt: true, verifiedAt: true, retiredAt: true }, orderBy: { selector: "asc" as const } },
};

/** The domain and its keys in one INSERT; a duplicate name fails with Prisma's P2002. */
export function insertSenderDomain(db: Db | Tx, row: NewSenderDomainRow): Promise<SenderDomainRow> {
  return db.senderDomain.create({
    data: {
      id: row.id, name: row.name, bounceDomain: row.bounceDomain, createdByKeyId: row.createdByKeyId,
      dkimKeys: { create: row.keys.map(dkimKeyData) },
    },
    select: DOMAIN_SELECT,
  });
}

/** A rotation's new key pairs for a domain; a selector taken meanwhile fails with P2002. */
export async function insertDkimKeys(db: Db | Tx, domainId: string, keys: NewDkimKeyRow[]): Promise<void> {
  await db.dkimKey.createMany({ data: keys.map((k) => ({ ...dkimKeyData(k), domainId })) });
}

/** Every domain, or those named in `names` (a key limited by --domains), by name. */
export function findSenderDomains(db: Db | Tx, names: string[] | null): Promise<SenderDomainRow[]> {
  return db.senderDomain.findMany({ where: names ? { name: { in: names } } : {}, orderBy: { name: "asc" }, select: DOMAIN_SELECT });
}

export function findSenderDomainById(db: Db | Tx, id: string): Promise<SenderDomainRow | null> {
  return db.senderDomain.findUnique({ where: { id }, select: DOMAIN_SELECT });
}

export function findSenderDomainByName(db: Db | Tx, name: string): Promise<SenderDomainRow | null> {
  return db.senderDomain.findUnique({ where: { name }, select: DOMAIN_SELECT });
}

/** Deletes a domain (its keys go with it, ON DELETE CASCADE); false when there was none. */
export async function deleteSenderDomain(db: Db | Tx, id: string): Promise<boolean> {
  const r = await db.senderDomain.deleteMany({ where: { id } });
  return r.count > 0;
}

/**
 * Records a DNS check in one transaction: when, what it found, whether the domain and its
 * bounce domain are verified now (`undefined`: as they were, a check that got no answer),
 * which keys' records were seen for the first time, and which keys retire when.
 */
export async function recordDomainCheck(
  db: Db, id: string,
  check: {
    at: Date; result: object; verifiedAt: Date | null | undefined; bounceVerifiedAt: Date | null | undefined;
    keysSeen: string[]; retire: Array<{ id: string; at: Date }>;
  },
): Promise<SenderDomainRow | null> {
  return db.$transaction(async (tx) => {
    if (check.keysSeen.length > 0)
      await tx.dkimKey.updateMany({ where: { domainId: id, id: { in: check.keysSeen }, verifiedAt: null }, data: { verifiedAt: check.at } });
    for (const r of check.retire) await tx.dkimKey.updateMany({ where: { domainId: id, id: r.id, retiredAt: null }, data: { retiredAt: r.at } });
    return updateDomainCheck(tx, id, check);
  });
}

async function updateDomainCheck(
  db: Tx, id: string, check: { at: Date; result: object; verifiedAt: Date | null | undefined; bounceVerifiedAt: Date | null | undefined },
): Promise<SenderDomainRow | null> {
  const r = await db.senderDomain.updateManyAndReturn({
    where: { id },
    data: {
      checkedAt: check.at, checkResult: check.result,
      ...(check.verifiedAt !== undefined ? { verifiedAt: check.verifiedAt } : {}),
      ...(check.bounceVerifiedAt !== undefined ? { bounceVerifiedAt: check.bounceVerifiedAt } : {}),
    },
    select: { id: true },
  });
  return r.length > 0 ? findSenderDomainById(db, id) : null;
}

/** A key the worker signs with: the private key still encrypted (dkimKeyAad binds it to its row). */
export interface SigningKeyRow {
  id: string;
  selector: string;
  algorithm: string;
  privateKey: Buffer;
}

/**
 * The worker's: the key of each algorithm that signs for `domain` when it is verified, RSA
 * first: the newest whose record was seen and that is not retired (domain/sender-domain.ts
 * dkimKeyStates, "active"). None when the domain is unknown or not verified (nothing is signed).
 */
export async function findSigningKeys(pool: pg.Pool, domain: string): Promise<SigningKeyRow[]> {
  const { rows } = await pool.query<SigningKeyRow>(
    `SELECT DISTINCT ON (k.algorithm) k.id::text AS id, k.selector, k.algorithm, k.private_key AS "privateKey"
       FROM sender_domains d JOIN dkim_keys k ON k.domain_id = d.id
      WHERE d.name = $1 AND d.verified_at IS NOT NULL AND k.verified_at IS NOT NULL
        AND (k.retired_at IS NULL OR k.retired_at > now())
      ORDER BY k.algorithm DESC, k.created_at DESC, k.selector DESC`,
    [domain],
  );
  return rows;
}

/**
 * The worker's: the bounce domain of the sender domain `domain` when DNS showed it right
 * (bounce_verified_at), to be the envelope sender; null otherwise.
 */
export async function findBounceDomain(pool: pg.Pool, domain: string): Promise<string | null> {
  const { rows } = await pool.query<{ bounce_domain: string }>(
    `SELECT bounce_domain FROM sender_domains WHERE name = $1 AND bounce_domain IS NOT NULL AND bounce_verified_at IS NOT NULL`, [domain]);
  return rows[0]?.bounce_domain ?? null;
}

// Owner only (`keys rotate-data`, services/rotate-data-key.ts): DKIM private keys are
// re-encrypted under the newest data key like message content, each rewritten only if it
// still holds the ciphertext that was read.

/** The DKIM keys whose private key is not encrypted under the data key `keyId`. */
export function findDkimKeysNotUnderKey(db: Db | Tx, keyId: string): Promise<Array<{ id: string; privateKey: Uint8Array }>> {
  return db.$queryRawUnsafe<Array<{ id: string; privateKey: Uint8Array }>>(
    `SELECT id::text AS id, private_key AS "privateKey" FROM dkim_keys WHERE NOT ${underDataKeySql("private_key")} ORDER BY id`,
    keyId,
  );
}

/** Replaces a DKIM private key's ciphertext `from` with `to`; 0 when it changed meanwhile (or the key is gone). */
export function rewriteDkimPrivateKey(db: Db | Tx, id: string, from: Uint8Array, to: Uint8Array): Promise<number> {
  return db.$executeRawUnsafe(`UPDATE dkim_keys SET private_key = $3 WHERE id = $1::uuid AND private_key = $2`, id, from, to);
}

/** Whether `bounceDomain` is the verified bounce domain of a sender domain: where the bounce receiver accepts reports. */
export async function isVerifiedBounceDomain(pool: pg.Pool, bounceDomain: string): Promise<boolean> {
  const { rowCount } = await pool.query(`SELECT 1 FROM sender_domains WHERE bounce_domain = $1 AND bounce_verified_at IS NOT NULL LIMIT 1`, [bounceDomain]);
  return (rowCount ?? 0) > 0;
}
