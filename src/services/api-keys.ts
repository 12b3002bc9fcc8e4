// API keys: `sp_<id>_<secret>`. The id is public (it names the key in logs and the
// CLI); only a SHA-256 of the 256-bit secret is stored, and comparison is
// constant-time. A secret with 256 bits of entropy needs no slow hash: nobody can
// guess it, and SHA-256 keeps verification off the request's critical path.
import { base32 } from "../security/base32.ts";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Db } from "../db/client.ts";
import { countActiveApiKeys, findAllApiKeys, findApiKeyById, insertApiKey, markApiKeyRevoked, type ApiKeyRow } from "../db/api-keys.ts";
import { AppError } from "../domain/errors.ts";
import type { TlsPolicy } from "../domain/tls-policy.ts";

export const SCOPES = ["send", "read", "admin"] as const;
export type Scope = (typeof SCOPES)[number];
/**
 * What a key gets when no scopes are asked for. `admin` (sender domains: DNS records,
 * verification, DKIM keys) is only ever given on request.
 */
export const DEFAULT_SCOPES: readonly Scope[] = ["send", "read"];

const KEY_RE = /^sp_([0-9a-f]{16})_([a-z2-7]{52})$/;
const hashSecret = (secret: string): string => createHash("sha256").update(secret, "utf8").digest("hex");

export interface ApiKeyRecord {
  id: string;
  name: string;
  scopes: Scope[];
  allowedDomains: string[];
  tlsPolicy: TlsPolicy | null;
  rateLimitPerMinute: number | null;
  createdAt: Date;
  revokedAt: Date | null;
}

export interface NewKeyInput {
  name: string;
  scopes?: Scope[];
  domains?: string[];
  tlsPolicy?: TlsPolicy | null;
  rateLimitPerMinute?: number | null;
}

export async function createApiKey(db: Db, input: NewKeyInput): Promise<{ key: string; record: ApiKeyRecord }> {
  const id = randomBytes(8).toString("hex");
  const secret = base32(randomBytes(32)).slice(0, 52);
  const row = await insertApiKey(db, {
    id,
    name: input.name,
    secretHash: hashSecret(secret),
    scopes: input.scopes ?? [...DEFAULT_SCOPES],
    allowedDomains: (input.domains ?? ["*"]).map((d) => d.toLowerCase()),
    tlsPolicy: input.tlsPolicy ?? null,
    rateLimitPerMinute: input.rateLimitPerMinute ?? null,
  });
  return { key: `sp_${id}_${secret}`, record: toRecord(row) };
}

export async function listApiKeys(db: Db): Promise<ApiKeyRecord[]> {
  const rows = await findAllApiKeys(db);
  return rows.map(toRecord);
}

export async function revokeApiKey(db: Db, id: string): Promise<boolean> {
  return markApiKeyRevoked(db, id, new Date());
}

export async function countActiveKeys(db: Db): Promise<number> {
  return countActiveApiKeys(db);
}

function toRecord(row: ApiKeyRow): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    scopes: row.scopes.filter((s): s is Scope => (SCOPES as readonly string[]).includes(s)),
    allowedDomains: row.allowedDomains,
    tlsPolicy: row.tlsPolicy === "required" || row.tlsPolicy === "opportunistic" ? row.tlsPolicy : null,
    rateLimitPerMinute: row.rateLimitPerMinute,
    createdAt: row.createdAt,
    revokedAt: row.revokedAt,
  };
}

/**
 * Verifies presented keys. Records are cached for `ttlMs` so the send path does not
 * pay a database round trip per request; revocation therefore takes effect within
 * that TTL (5 s by default) in every API process. Ids that are no key are cached too.
 */
export class ApiKeyVerifier {
  /** Known keys, and ids found to be no key (record null), each until `expires`. */
  readonly #cache = new Map<string, { hash: Buffer; record: ApiKeyRecord | null; expires: number }>();
  readonly #db: Db;
  readonly #ttlMs: number;
  readonly #now: () => number;

  constructor(db: Db, ttlMs: number, now: () => number = Date.now) {
    this.#db = db;
    this.#ttlMs = ttlMs;
    this.#now = now;
  }

  /** Returns the key's record, or throws AppError('unauthorized'). Database errors propagate. */
  async verify(presented: string): Promise<ApiKeyRecord> {
    const m = KEY_RE.exec(presented);
    if (!m) throw new AppError("unauthorized", "the API key is malformed");
    const [, id, secret] = m as unknown as [string, string, string];
    let entry = this.#cache.get(id);
    if (!entry || entry.expires <= this.#now()) {
      // An id that is no key is remembered as such for the same time, so repeating it
      // (a scan of made-up keys) costs no database lookup.
      const row = await findApiKeyById(this.#db, id);
      entry = row
        ? { hash: Buffer.from(row.secretHash, "hex"), record: toRecord(row), expires: this.#now() + this.#ttlMs }
        : { hash: Buffer.alloc(32), record: null, expires: this.#now() + this.#ttlMs };
      if (this.#ttlMs > 0) this.#cache.set(id, entry);
      if (this.#cache.size > 10_000) this.#cache.delete(this.#cache.keys().next().value!);
    }
    if (entry.record === null) throw new AppError("unauthorized", "the API key is not valid");
    if (!timingSafeEqual(Buffer.from(hashSecret(secret), "hex"), entry.hash)) throw new AppError("unauthorized", "the API key is not valid");
    if (entry.record.revokedAt) throw new AppError("unauthorized", "the API key has been revoked");
    return entry.record;
  }
}
