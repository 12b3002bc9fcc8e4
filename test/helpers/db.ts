// Each test file gets its own Postgres database, cloned from a migrated template so
// files can run in parallel and start fast. Dropped when the file ends.
import { createHash, randomBytes } from "node:crypto";
import pg from "pg";
import { migrate } from "../../src/db/migrate.ts";
import { openDatabase, type DatabaseHandle } from "../../src/db/client.ts";
import { trackOpen } from "./leak-guard.ts";

export const ADMIN_URL = process.env.TEST_DATABASE_ADMIN_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";

function urlFor(dbName: string): string {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${dbName}`;
  return u.toString();
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** A fresh, empty database (no migrations). */
export async function createEmptyDatabase(prefix = "sp_test"): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `${prefix}_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE "${name}"`));
  const dropped = trackOpen(`database ${name}`, "createEmptyDatabase", "drop()");
  return {
    name,
    url: urlFor(name),
    async drop() {
      await dropDatabase(name);
      dropped();
    },
  };
}

export async function dropDatabase(name: string): Promise<void> {
  await admin((c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}

/** Drops a role a test made: roles belong to the server, so they outlive the test's database. */
export async function dropRole(name: string): Promise<void> {
  await admin((c) => c.query(`DROP ROLE IF EXISTS "${name}"`));
}

export interface RaiseTrigger {
  /** Runs `fn` while every insert into the table raises SQLSTATE `code`. */
  raising<T>(code: string, fn: () => Promise<T>): Promise<T>;
}

/**
 * Makes inserts into `table` raise a chosen SQLSTATE from inside the statement: the
 * server's own error, taking the driver's and Prisma's real path, for conditions that
 * cannot be caused on the shared server (a full disk, a shutdown, an I/O error).
 * `c` is a session of the test's own (the trigger reads the code from table sp_raise).
 */
export async function installRaiseTrigger(c: pg.Client, table: string): Promise<RaiseTrigger> {
  await c.query(`
    CREATE TABLE sp_raise (code text);
    CREATE FUNCTION sp_raise() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE c text := (SELECT code FROM sp_raise LIMIT 1);
    BEGIN
      IF c IS NOT NULL THEN RAISE EXCEPTION 'raised for the test' USING ERRCODE = c; END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER sp_raise BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION sp_raise();`);
  return {
    async raising(code, fn) {
      await c.query("INSERT INTO sp_raise VALUES ($1)", [code]);
      try {
        return await fn();
      } finally {
        await c.query("DELETE FROM sp_raise");
      }
    },
  };
}

let templateReady: Promise<string> | null = null;

// One template per set of migrations, named after their checksums, so checkouts with
// different migrations (branches tested side by side) never drop each other's. A lock
// serialises parallel test files, and a comment records the set it was built from.
async function ensureTemplate(): Promise<string> {
  const { readMigrations } = await import("../../src/db/migrate.ts");
  const signature = readMigrations().map((m) => `${m.name}:${m.checksum}`).join(",");
  const TEMPLATE = `sealpost_test_template_${createHash("sha256").update(signature).digest("hex").slice(0, 12)}`;
  return admin(async (c) => {
    await c.query("SELECT pg_advisory_lock(7270736901)");
    try {
      const r = await c.query<{ comment: string | null }>(
        `SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`, [TEMPLATE]);
      if (r.rows[0]?.comment === signature) return TEMPLATE;
      await c.query(`DROP DATABASE IF EXISTS "${TEMPLATE}" WITH (FORCE)`);
      await c.query(`CREATE DATABASE "${TEMPLATE}"`);
      await migrate(urlFor(TEMPLATE));
      await c.query(`COMMENT ON DATABASE "${TEMPLATE}" IS '${signature.replace(/'/g, "''")}'`);
      return TEMPLATE;
    } finally {
      await c.query("SELECT pg_advisory_unlock(7270736901)");
    }
  });
}

export interface TestDatabase {
  name: string;
  url: string;
  db: DatabaseHandle;
  drop(): Promise<void>;
}

/** A migrated database of its own for one test file. Call `drop()` in `after`. */
export async function createTestDatabase(opts: { poolMax?: number; statementTimeoutMs?: number } = {}): Promise<TestDatabase> {
  templateReady ??= ensureTemplate();
  const TEMPLATE = await templateReady;
  const name = `sp_test_${randomBytes(6).toString("hex")}`;
  // CREATE DATABASE ... TEMPLATE fails while another session is connected to the template.
  for (let i = 0; ; i++) {
    try {
      await admin((c) => c.query(`CREATE DATABASE "${name}" TEMPLATE "${TEMPLATE}"`));
      break;
    } catch (err) {
      if (i >= 50 || (err as { code?: string }).code !== "55006") throw err;
      await new Promise((r) => setTimeout(r, 50 + i * 10)); // retry backoff on a busy template, not a wait for work
    }
  }
  const url = urlFor(name);
  const db = openDatabase({ url, poolMax: opts.poolMax ?? 5, statementTimeoutMs: opts.statementTimeoutMs ?? 5000, connectTimeoutMs: 2000 });
  const dropped = trackOpen(`database ${name} and its pool`, "createTestDatabase", "drop()");
  return {
    name,
    url,
    db,
    async drop() {
      await db.close();
      await dropDatabase(name);
      dropped();
    },
  };
}
