// Signed delivery receipts (issue 15, item 7): what happened to each recipient of a
// message (addresses, Message-ID, the SHA-256 of the bytes sent, MX, IP, TLS version,
// cipher, certificate fingerprint, policy, the SMTP reply, times) as a JWT (a compact JWS,
// RFC 7515/7519) signed with the installation's Ed25519 key, verifiable offline with any
// JOSE library against the keys at /.well-known/jwks.json. A merchant keeps it as proof:
// "this password reset left over verified TLS to this MX at this time".
import { randomUUID, type KeyObject } from "node:crypto";
import type { Db } from "../db/client.ts";
import { findStoredMessage } from "../db/messages.ts";
import { attemptView } from "./messages.ts";
import { findReceiptKeys, insertReceiptKey, retireReceiptKey } from "../db/receipt-keys.ts";
import { AppError } from "../domain/errors.ts";
import type { ContentCipher } from "../security/content-cipher.ts";
import { generateReceiptKey, openReceiptKey, type ReceiptPublicJwk } from "../security/receipt-keys.ts";

/** How long a process keeps using the signing key it read: a rotation by another process reaches it within this. */
const KEY_CACHE_MS = 60_000;

export class ReceiptSigner {
  readonly #db: Db;
  readonly #cipher: ContentCipher;
  readonly #issuer: string;
  #key: { kid: string; key: KeyObject; readAt: number } | null = null;

  constructor(db: Db, cipher: ContentCipher, issuer: string) {
    this.#db = db;
    this.#cipher = cipher;
    this.#issuer = issuer;
  }

  /** The signing key; the first receipt of an installation makes one. */
  async #signingKey(): Promise<{ kid: string; key: KeyObject }> {
    if (this.#key && Date.now() - this.#key.readAt < KEY_CACHE_MS) return this.#key;
    let active = (await findReceiptKeys(this.#db)).find((k) => k.retiredAt === null);
    if (!active) {
      const made = generateReceiptKey(this.#cipher, new Date());
      await insertReceiptKey(this.#db, made); // another process may have made one first: then that one signs
      active = (await findReceiptKeys(this.#db)).find((k) => k.retiredAt === null)!;
    }
    this.#key = { kid: active.id, key: openReceiptKey(this.#cipher, active), readAt: Date.now() };
    return this.#key;
  }

  /** Every key that signed or signs receipts, the signing one first. */
  async jwks(): Promise<{ keys: ReceiptPublicJwk[] }> {
    await this.#signingKey();
    return { keys: (await findReceiptKeys(this.#db)).map((k) => k.publicJwk as ReceiptPublicJwk) };
  }

  async sign(subject: string, claims: Record<string, unknown>): Promise<{ token: string; kid: string }> {
    const { kid, key } = await this.#signingKey();
    // jose is loaded with the first receipt, not at start: most processes never sign one.
    const { SignJWT } = await import("jose");
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: "EdDSA", kid, typ: "JWT" })
      .setIssuer(this.#issuer)
      .setSubject(subject)
      .setIssuedAt()
      .setJti(randomUUID())
      .sign(key);
    return { token, kid };
  }
}

/** A new signing key; the one it replaces signs no more and stays published. Returns both ids. */
export async function rotateReceiptKey(db: Db, cipher: ContentCipher): Promise<{ kid: string; retired: string | null }> {
  const made = generateReceiptKey(cipher, new Date());
  return db.$transaction(async (tx) => {
    const retired = (await findReceiptKeys(tx)).find((k) => k.retiredAt === null)?.id ?? null;
    await retireReceiptKey(tx, made.createdAt);
    await insertReceiptKey(tx, made);
    return { kid: made.id, retired };
  });
}

/** The receipt of a message of `apiKeyId`: each recipient with the evidence of its last attempt (its delivered one, once delivered). */
export async function messageReceipt(db: Db, signer: ReceiptSigner, apiKeyId: string, id: string) {
  const m = await db.$transaction((tx) => findStoredMessage(tx, apiKeyId, id, new Date()), { isolationLevel: "RepeatableRead" });
  if (!m) throw new AppError("not_found", "no message with this id");
  const receipt = {
    version: 1,
    message: { id: m.id, message_id: m.messageIdHeader, from: m.fromAddress, created_at: m.createdAt.toISOString(), status: m.status, tls_policy: m.tlsPolicy },
    recipients: m.recipients.map((r) => {
      const a = [...r.attemptLog].reverse().find((x) => x.outcome === "delivered") ?? r.attemptLog.at(-1) ?? null;
      return {
        address: r.address,
        kind: r.kind,
        status: r.status,
        // The same evidence GET /messages/{id} shows, with the hash of the bytes sent.
        attempt: a && { ...attemptView(a), message_sha256: a.messageSha256 },
      };
    }),
  };
  const { token, kid } = await signer.sign(m.id, { receipt });
  return { receipt: token, key_id: kid, keys_url: "/.well-known/jwks.json" as const };
}
