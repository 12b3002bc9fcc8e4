// A real delivery worker on a test database, configured like production through the
// environment schema (DNS_SERVERS, SMTP_MX_PORT, SMTP_CA_FILE ...).
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { loadConfig, type Config } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { ContentCipher } from "../../src/security/content-cipher.ts";
import { cachingResolver, createMxResolver } from "../../src/worker/mx.ts";
import { SmtpSessionPool } from "../../src/worker/smtp-pool.ts";
import { createWorker, deliverySettings, withPool, type WorkerHandle } from "../../src/worker/worker.ts";
import type { TestDatabase } from "./db.ts";
import { TEST_DATA_KEY } from "./app.ts";
import { testCa } from "./smtp-peers.ts";

export function testCaFile(): string {
  const dir = mkdtempSync(join(tmpdir(), "sp-ca-"));
  const file = join(dir, "ca.crt");
  writeFileSync(file, testCa().cert);
  return file;
}

export function workerConfig(tdb: TestDatabase, env: Record<string, string>): Config {
  return loadConfig({
    NODE_ENV: "test",
    DATABASE_URL: tdb.url,
    SEALPOST_DATA_KEY: TEST_DATA_KEY,
    SMTP_CA_FILE: testCaFile(),
    SMTP_HELO_NAME: "sealpost.test",
    SMTP_CONNECT_TIMEOUT_MS: "2000",
    WORKER_POLL_MS: "25",
    WORKER_CONCURRENCY: "4",
    SMTP_RETRY_MIN: "50ms",
    SMTP_RETRY_MAX: "200ms",
    ...env,
  });
}

export function startTestWorker(tdb: TestDatabase, env: Record<string, string>, logs: string[] = []): WorkerHandle & { config: Config } {
  const config = workerConfig(tdb, env);
  const sink = new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } });
  const logger = createLogger("info", sink);
  const cipher = new ContentCipher([{ id: "k1", key: Buffer.from(TEST_DATA_KEY, "base64") }]);
  const resolver = createMxResolver({ ...(config.DNS_SERVERS ? { servers: config.DNS_SERVERS } : {}), timeoutMs: 500, tries: 1 });
  const pool = new SmtpSessionPool({ maxIdlePerDestination: config.WORKER_CONCURRENCY });
  const w = createWorker(
    { pool: tdb.db.pool, cipher, settings: deliverySettings(config), resolveMx: cachingResolver((d) => resolver.resolve(d), config.DNS_CACHE_TTL), attempt: (o) => pool.attempt(o) },
    { concurrency: config.WORKER_CONCURRENCY, batchSize: config.WORKER_BATCH_SIZE, leaseMs: config.WORKER_LEASE_MS, pollMs: config.WORKER_POLL_MS },
    logger,
  );
  return Object.assign(withPool(w, pool), { config });
}
