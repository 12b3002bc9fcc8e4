// Re-encrypts stored content, DKIM and receipt-signing private keys and webhook secrets
// under the newest data key (the first of SEALPOST_DATA_KEY), a batch of messages at a time, so an old key can then be removed. Each row
// is rewritten only if it still holds the ciphertext that was read (a concurrent purge
// wins). It runs only once the serving processes encrypt with that key themselves
// (assertRotationAllowed), so they can read every row it rewrites; afterwards the keys
// no stored value uses any more are marked retired and are no longer required at start.
import type { Db } from "../db/client.ts";
import { CONTENT_COLUMNS, findContentNotUnderKey, rewriteContent, type ContentColumn } from "../db/content.ts";
import { findDkimKeysNotUnderKey, rewriteDkimPrivateKey } from "../db/sender-domains.ts";
import { contentAad, ContentDecryptError, type ContentCipher } from "../security/content-cipher.ts";
import { dkimKeyAad } from "../security/dkim-keys.ts";
import { webhookSecretAad, type SecretColumn } from "../security/webhook-secrets.ts";
import { findWebhookSecretsNotUnderKey, rewriteWebhookSecrets } from "../db/webhooks.ts";
import { assertRotationAllowed, retireUnusedKeys } from "../security/data-key-check.ts";
import { findReceiptKeysNotUnderKey, rewriteReceiptPrivateKey } from "../db/receipt-keys.ts";
import { receiptKeyAad } from "../security/receipt-keys.ts";

export interface RotationResult {
  rewritten: number;
  /** DKIM private keys re-encrypted. */
  dkimKeysRewritten: number;
  /** Webhook endpoints whose secrets were re-encrypted. */
  webhookSecretsRewritten: number;
  /** Receipt signing keys re-encrypted. */
  receiptKeysRewritten: number;
  /** Messages (and DKIM keys, as `dkim_keys:<id>`, and webhook secrets, as `webhook_endpoints:<id>`) that did not authenticate (tampered, or under a key no longer configured): left as they are. */
  unreadable: string[];
  /** Key ids that no stored value uses any more: they may be removed from SEALPOST_DATA_KEY once no process encrypts with them. */
  retired: string[];
}

export async function rotateDataKey(db: Db, cipher: ContentCipher, opts: { batchSize?: number; onBatch?: (done: number) => void } = {}): Promise<RotationResult> {
  await assertRotationAllowed(db, cipher);
  const current = cipher.currentKeyId;
  const batch = opts.batchSize ?? 200;
  let rewritten = 0;
  const unreadable: string[] = [];
  let lastId = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const rows = await findContentNotUnderKey(db, current, lastId, batch);
    if (rows.length === 0) break;
    for (const row of rows) {
      const changes: Array<{ column: ContentColumn; from: Uint8Array; to: Uint8Array }> = [];
      try {
        for (const col of CONTENT_COLUMNS) {
          const v = row[col];
          if (v === null || cipher.keyIdOf(v) === current) continue;
          const plain = cipher.decrypt(v, contentAad(row.id, col));
          changes.push({ column: col, from: v, to: cipher.encrypt(plain, contentAad(row.id, col)) });
        }
      } catch (err) {
        if (!(err instanceof ContentDecryptError)) throw err;
        unreadable.push(row.id);
        continue;
      }
      if (changes.length === 0) continue;
      rewritten += await rewriteContent(db, row.id, changes);
    }
    lastId = rows[rows.length - 1]!.id;
    opts.onBatch?.(rewritten);
  }
  const dkimKeysRewritten = await reencryptPrivateKeys(cipher, unreadable, "dkim_keys", await findDkimKeysNotUnderKey(db, current), dkimKeyAad,
    (id, from, to) => rewriteDkimPrivateKey(db, id, from, to));
  let webhookSecretsRewritten = 0;
  for (const w of await findWebhookSecretsNotUnderKey(db, current)) {
    let to: { secret: Uint8Array; previousSecret: Uint8Array | null };
    try {
      const again = (v: Uint8Array, col: SecretColumn) => new Uint8Array(cipher.encrypt(cipher.decrypt(v, webhookSecretAad(w.id, col)), webhookSecretAad(w.id, col)));
      to = { secret: again(w.secret, "secret"), previousSecret: w.previousSecret && again(w.previousSecret, "previous_secret") };
    } catch (err) {
      if (!(err instanceof ContentDecryptError)) throw err;
      unreadable.push(`webhook_endpoints:${w.id}`);
      continue;
    }
    webhookSecretsRewritten += await rewriteWebhookSecrets(db, w.id, w, to);
  }
  const receiptKeysRewritten = await reencryptPrivateKeys(cipher, unreadable, "receipt_keys", await findReceiptKeysNotUnderKey(db, current), receiptKeyAad,
    (id, from, to) => rewriteReceiptPrivateKey(db, id, from, to));
  return { rewritten, dkimKeysRewritten, webhookSecretsRewritten, receiptKeysRewritten, unreadable, retired: await retireUnusedKeys(db, current) };
}

/**
 * Re-encrypts private keys (DKIM, receipt signing) under the current data key, each bound
 * to its row by `aad`; one that does not authenticate is named in `unreadable` as
 * `<table>:<id>` and left as it is. Returns how many were rewritten.
 */
async function reencryptPrivateKeys(
  cipher: ContentCipher, unreadable: string[], table: string, rows: Array<{ id: string; privateKey: Uint8Array }>,
  aad: (id: string) => string, rewrite: (id: string, from: Uint8Array, to: Uint8Array) => Promise<number>,
): Promise<number> {
  let n = 0;
  for (const k of rows) {
    let to: Buffer;
    try {
      to = cipher.encrypt(cipher.decrypt(k.privateKey, aad(k.id)), aad(k.id));
    } catch (err) {
      if (!(err instanceof ContentDecryptError)) throw err;
      unreadable.push(`${table}:${k.id}`);
      continue;
    }
    n += await rewrite(k.id, k.privateKey, new Uint8Array(to));
  }
  return n;
}
