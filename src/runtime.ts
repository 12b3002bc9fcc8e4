// Opens what every process needs: logger, database (embedded when DATABASE_URL is
// unset), migrations, content cipher, and for serving processes the check that the data
// keys can read what is stored. Closed in reverse order on shutdown.
import type { Logger } from "pino";
import type { Config } from "./config.ts";
import { openDatabase, type DatabaseHandle } from "./db/client.ts";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "./db/embedded.ts";
import { ping } from "./db/health.ts";
import { migrate } from "./db/migrate.ts";
import { ContentCipher } from "./security/content-cipher.ts";
import { join } from "node:path";
import { DataKeyError, loadDataKeys } from "./security/data-keys.ts";
import { checkDataKeys, type DataKeyRole } from "./security/data-key-check.ts";
import { errorFields } from "./logger.ts";

const EMBEDDED_MIN_TIMEOUT_MS = 60_000;

export interface Runtime {
  config: Config;
  logger: Logger;
  db: DatabaseHandle;
  cipher: ContentCipher;
  embedded: EmbeddedDatabase | null;
  close(): Promise<void>;
}

/** DATABASE_URL, or the embedded database under DATA_DIR (opened here, or joined if another sealpost process has it). */
export async function databaseFor(config: Config, logger: Logger): Promise<{ url: string; embedded: EmbeddedDatabase | null }> {
  if (config.DATABASE_URL) return { url: config.DATABASE_URL, embedded: null };
  const embedded = await startEmbeddedDatabase(config.DATA_DIR, {
    onError: (err) => logger.error({ err: errorFields(err) }, "embedded database session failed"),
  });
  logger.info({ dataDir: embedded.dataDir }, "DATABASE_URL is not set: using the embedded database");
  return { url: embedded.url, embedded };
}

export interface RuntimeOptions {
  /**
   * Check the data keys against the database before anything else runs
   * (security/data-key-check.ts): "encrypts" for a process that writes content (serve,
   * start), "decrypts" for one that only reads it (worker). "none" for commands that do
   * not touch content, or check on their own terms (keys rotate-data).
   */
  dataKeys?: DataKeyRole | "none";
}

export async function openRuntime(config: Config, logger: Logger, opts: RuntimeOptions = {}): Promise<Runtime> {
  const cipher = new ContentCipher(
    loadDataKeys({ value: config.SEALPOST_DATA_KEY, production: config.NODE_ENV === "production", dataDir: config.DATA_DIR }, logger),
  );
  const { url, embedded } = await databaseFor(config, logger);
  try {
    if (config.MIGRATE_ON_START) {
      const r = await migrate(url, { log: logger });
      if (r.applied.length > 0) logger.info({ applied: r.applied }, "database migrated");
    }
  } catch (err) {
    await embedded?.stop();
    throw err;
  }
  const db = openDatabase({
    url,
    poolMax: embedded ? Math.min(config.DATABASE_POOL_MAX, 8) : config.DATABASE_POOL_MAX,
    // The embedded database is one session: a query, and a new connection's startup,
    // wait their turn behind everything ahead of them (a batch of large messages takes
    // seconds on a busy laptop), and the client-side timeouts count that wait. There is
    // no network to fail, so timeouts that turn an outage into a fast 503 would only turn
    // a queue into 503s there.
    statementTimeoutMs: embedded ? Math.max(config.DATABASE_STATEMENT_TIMEOUT_MS, EMBEDDED_MIN_TIMEOUT_MS) : config.DATABASE_STATEMENT_TIMEOUT_MS,
    connectTimeoutMs: embedded ? Math.max(config.DATABASE_CONNECT_TIMEOUT_MS, EMBEDDED_MIN_TIMEOUT_MS) : config.DATABASE_CONNECT_TIMEOUT_MS,
    singleSession: embedded !== null,
    onPoolError: (err) => logger.warn({ err: errorFields(err) }, "database connection lost"),
  });
  const close = async () => {
    await db.close();
    await embedded?.stop();
  };
  try {
    // Straight through the pool first (ping): node-postgres names the failure
    // (ECONNREFUSED, 28P01, 3D000) where Prisma's wrapping keeps only "not reachable".
    await ping(db);
    if (opts.dataKeys && opts.dataKeys !== "none") await checkDataKeys(db.prisma, cipher, opts.dataKeys);
  } catch (err) {
    await close();
    // Outside production the key may come from a generated file: say so, it is what changed.
    if (err instanceof DataKeyError && !config.SEALPOST_DATA_KEY)
      throw new DataKeyError(`${err.message} (SEALPOST_DATA_KEY is not set: the key came from ${join(config.DATA_DIR, "data-key")})`);
    throw err;
  }
  return { config, logger, db, cipher, embedded, close };
}
