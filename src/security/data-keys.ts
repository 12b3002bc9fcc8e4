// Where the content encryption key comes from. SEALPOST_DATA_KEY holds one base64
// 32-byte key, or several as `id:base64,id:base64` (the first encrypts, all decrypt)
// so keys can be rotated. Outside production, with none set, a key file is created
// under DATA_DIR with mode 0600 and a warning; in production a missing key is fatal.
import { chmodSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { DataKey } from "./content-cipher.ts";
import { createOnce } from "../files.ts";

export class DataKeyError extends Error {
  override name = "DataKeyError";
}

export function parseDataKeys(value: string): DataKey[] {
  const parts = value.split(",").map((s) => s.trim()).filter(Boolean);
  const keys = parts.map((p, i) => {
    const m = /^(?:([A-Za-z0-9_-]{1,32}):)?([A-Za-z0-9+/=_-]+)$/.exec(p);
    if (!m) throw new DataKeyError("SEALPOST_DATA_KEY: each entry must be base64 or id:base64");
    const key = Buffer.from(m[2]!, "base64");
    if (key.length !== 32) throw new DataKeyError(`SEALPOST_DATA_KEY: key ${i + 1} is ${key.length} bytes; it must be 32 (base64 of 32 random bytes)`);
    return { id: m[1] ?? (parts.length === 1 ? "k1" : `k${i + 1}`), key };
  });
  if (new Set(keys.map((k) => k.id)).size !== keys.length) throw new DataKeyError("SEALPOST_DATA_KEY: key ids must be unique");
  return keys;
}

export function loadDataKeys(
  opts: { value?: string | undefined; production: boolean; dataDir: string },
  log: { warn(obj: object, msg: string): void },
): DataKey[] {
  if (opts.value) return parseDataKeys(opts.value);
  if (opts.production) throw new DataKeyError("SEALPOST_DATA_KEY is required when NODE_ENV=production");
  const file = join(opts.dataDir, "data-key");
  if (!existsSync(file) && createOnce(file, `k1:${randomBytes(32).toString("base64")}\n`)) {
    log.warn({ file }, "SEALPOST_DATA_KEY is not set: generated a development data key file; back it up, content is unreadable without it");
  }
  chmodSync(file, 0o600);
  return parseDataKeys(readFileSync(file, "utf8").trim());
}

