// Opens what every process needs: logger, database (embedded when DATABASE_URL is
// unset), migrations, content cipher. Closed in reverse order on shutdown.
import type { Logger } from "pino";
import type { Config } from "./config.ts";
import { openDatabase, type Database } from "./db/client.ts";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "./db/embedded.ts";
import { migrate } from "./db/migrate.ts";
import { ContentCipher } from "./security/content-cipher.ts";
import { loadDataKeys } from "./security/data-keys.ts";

export interface Runtime {
  config: Config;
  logger: Logger;
  db: Database;
  databaseUrl: string;
  cipher: ContentCipher;
  embedded: EmbeddedDatabase | null;
  close(): Promise<void>;
}

export async function openRuntime(config: Config, logger: Logger, opts: { migrate?: boolean } = {}): Promise<Runtime> {
  const cipher = new ContentCipher(
    loadDataKeys({ value: config.SEALPOST_DATA_KEY, production: config.NODE_ENV === "production", dataDir: config.DATA_DIR }, logger),
  );
  let embedded: EmbeddedDatabase | null = null;
  let url = config.DATABASE_URL;
  if (!url) {
    embedded = await startEmbeddedDatabase(config.DATA_DIR);
    url = embedded.url;
    logger.info({ dataDir: embedded.dataDir }, "DATABASE_URL is not set: using the embedded database");
  }
  try {
    if (opts.migrate !== false && config.MIGRATE_ON_START) {
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
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
    connectTimeoutMs: config.DATABASE_CONNECT_TIMEOUT_MS,
    onPoolError: (err) => logger.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, "database connection lost"),
  });
  return {
    config, logger, db, databaseUrl: url, cipher, embedded,
    async close() {
      await db.close();
      await embedded?.stop();
    },
  };
}
