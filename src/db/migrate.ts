// Applies prisma/migrations/<name>/migration.sql in name order and records each in
// _prisma_migrations exactly as `prisma migrate deploy` does, so a host that later
// gets the Prisma schema engine sees a history it recognises. Our own runner exists
// because the engine cannot be downloaded on air-gapped hosts.
//
// Differences from Prisma, both deliberate: each script runs inside a transaction,
// so a failing migration changes nothing; the failed row (logs set, finished_at and
// rolled_back_at NULL) stays and blocks later runs, as Prisma's P3009 does, until an
// operator marks it rolled back (`sealpost migrate resolve --rolled-back <name>`).
import { createHash, randomUUID } from "node:crypto";
import { readdirSync, readFileSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import pg from "pg";

/** Prisma's advisory lock key for migrations (schema-engine's sql_migration_connector). */
export const MIGRATION_LOCK_KEY = 72707369;

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

export const DEFAULT_MIGRATIONS_DIR = resolve(import.meta.dirname, "../../prisma/migrations");

export interface MigrationFile {
  name: string;
  sql: string;
  checksum: string;
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: string[];
  checksumMismatch: string[];
}

export class MigrationError extends Error {
  override name = "MigrationError";
}

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const silent: Logger = { info() {}, warn() {}, error() {} };

export function readMigrations(dir = DEFAULT_MIGRATIONS_DIR): MigrationFile[] {
  if (!existsSync(dir)) throw new MigrationError(`migrations folder not found: ${dir}`);
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(dir, d.name, "migration.sql")))
    .map((d) => d.name)
    .sort()
    .map((name) => {
      const sql = readFileSync(join(dir, name, "migration.sql"), "utf8");
      return { name, sql, checksum: createHash("sha256").update(sql, "utf8").digest("hex") };
    });
}

type Client = pg.Client | pg.PoolClient;

async function withLock<T>(client: Client, fn: () => Promise<T>): Promise<T> {
  await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
  try {
    return await fn();
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
  }
}

interface Row {
  id: string;
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
  logs: string | null;
}

/** Apply pending migrations over one connection string. Safe to run concurrently. */
export async function migrate(
  databaseUrl: string,
  opts: { dir?: string; log?: Logger } = {},
): Promise<MigrateResult> {
  const client = new pg.Client({ connectionString: databaseUrl });
  client.on("error", () => {}); // a dropped connection surfaces as a failed query below
  await client.connect();
  try {
    return await migrateWithClient(client, opts);
  } finally {
    await client.end().catch(() => {});
  }
}

async function migrateWithClient(
  client: Client,
  opts: { dir?: string; log?: Logger } = {},
): Promise<MigrateResult> {
  const log = opts.log ?? silent;
  const files = readMigrations(opts.dir);
  return withLock(client, async () => {
    await client.query(CREATE_TABLE);
    const { rows } = await client.query<Row>(
      `SELECT id, migration_name, checksum, finished_at, rolled_back_at, logs
         FROM "_prisma_migrations" ORDER BY started_at ASC`,
    );
    const failed = rows.filter((r) => r.finished_at === null && r.rolled_back_at === null);
    if (failed.length > 0) {
      const f = failed[0]!;
      throw new MigrationError(
        `migration ${f.migration_name} failed earlier and was not resolved; fix the database, then run ` +
          `"sealpost migrate resolve --rolled-back ${f.migration_name}" (logs: ${f.logs ?? "none"})`,
      );
    }
    const done = new Map(rows.filter((r) => r.finished_at !== null).map((r) => [r.migration_name, r]));
    const result: MigrateResult = { applied: [], alreadyApplied: [], checksumMismatch: [] };
    for (const file of files) {
      const prior = done.get(file.name);
      if (prior) {
        result.alreadyApplied.push(file.name);
        if (prior.checksum !== file.checksum) {
          result.checksumMismatch.push(file.name);
          log.warn({ migration: file.name }, "migration was modified after it was applied");
        }
        continue;
      }
      await applyOne(client, file, log);
      result.applied.push(file.name);
    }
    return result;
  });
}

async function applyOne(client: Client, file: MigrationFile, log: Logger): Promise<void> {
  const id = randomUUID();
  await client.query(
    `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count)
     VALUES ($1, $2, $3, now(), 0)`,
    [id, file.checksum, file.name],
  );
  try {
    await client.query("BEGIN");
    await client.query(file.sql);
    await client.query(
      `UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1`,
      [id],
    );
    await client.query("COMMIT");
    log.info({ migration: file.name }, "migration applied");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    const message = err instanceof Error ? err.message : String(err);
    const logs = `Migration ${file.name} failed and was rolled back.\n\nDatabase error:\n${message}\n`;
    await client.query(`UPDATE "_prisma_migrations" SET logs = $2 WHERE id = $1`, [id, logs]).catch(() => {});
    log.error({ migration: file.name, err: message }, "migration failed");
    throw new MigrationError(`migration ${file.name} failed: ${message}`);
  }
}

/** Mark a failed migration as rolled back so the next run can retry it (prisma migrate resolve --rolled-back). */
export async function resolveRolledBack(databaseUrl: string, name: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const r = await client.query(
      `UPDATE "_prisma_migrations" SET rolled_back_at = now()
        WHERE migration_name = $1 AND finished_at IS NULL AND rolled_back_at IS NULL`,
      [name],
    );
    return (r.rowCount ?? 0) > 0;
  } finally {
    await client.end();
  }
}
