// The migration runner against real Postgres: it must leave _prisma_migrations exactly
// as `prisma migrate deploy` would (so the Prisma CLI can take over a database later),
// apply each migration once, roll a failing one back and refuse to go on until an
// operator resolves it, and serialise concurrent runners with Prisma's advisory lock.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createEmptyDatabase } from "../helpers/db.ts";
import { waitFor } from "../helpers/wait.ts";
import { DEFAULT_MIGRATIONS_DIR, MIGRATION_LOCK_KEY, MigrationError, migrate, readMigrations, resolveRolledBack } from "../../src/db/migrate.ts";

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function emptyDb(): Promise<string> {
  const db = await createEmptyDatabase("sp_migrate");
  cleanups.push(() => db.drop());
  return db.url;
}

async function query<R extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<R[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<R>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

interface MigrationRow {
  id: string;
  checksum: string;
  finished_at: Date | null;
  migration_name: string;
  logs: string | null;
  rolled_back_at: Date | null;
  started_at: Date;
  applied_steps_count: number;
}
const rowsOf = (url: string) => query<MigrationRow>(url, `SELECT * FROM "_prisma_migrations" ORDER BY started_at, migration_name`);
const tableExists = async (url: string, name: string) =>
  (await query<{ t: string | null }>(url, "SELECT to_regclass($1)::text AS t", [`public.${name}`]))[0]!.t !== null;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const sha256File = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const MIGRATIONS = readMigrations().map((m) => m.name);

/** A copy of the real migrations folder that a test may add to. */
function migrationsCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), "sealpost-migrations-"));
  cpSync(DEFAULT_MIGRATIONS_DIR, dir, { recursive: true });
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("a fresh database gets every migration, recorded the way Prisma records it", async () => {
  assert.ok(MIGRATIONS.length >= 1);
  const url = await emptyDb();
  const r = await migrate(url);
  assert.deepEqual(r, { applied: MIGRATIONS, alreadyApplied: [], checksumMismatch: [] });

  // Column for column what prisma's schema engine creates (sql_migration_connector,
  // postgres flavour): a later `prisma migrate deploy` reads this table as its own.
  const cols = await query(
    url,
    `SELECT column_name, data_type, character_maximum_length AS len, is_nullable, column_default
       FROM information_schema.columns
      WHERE table_schema = 'public' AND table_name = '_prisma_migrations' ORDER BY ordinal_position`,
  );
  assert.deepEqual(cols, [
    { column_name: "id", data_type: "character varying", len: 36, is_nullable: "NO", column_default: null },
    { column_name: "checksum", data_type: "character varying", len: 64, is_nullable: "NO", column_default: null },
    { column_name: "finished_at", data_type: "timestamp with time zone", len: null, is_nullable: "YES", column_default: null },
    { column_name: "migration_name", data_type: "character varying", len: 255, is_nullable: "NO", column_default: null },
    { column_name: "logs", data_type: "text", len: null, is_nullable: "YES", column_default: null },
    { column_name: "rolled_back_at", data_type: "timestamp with time zone", len: null, is_nullable: "YES", column_default: null },
    { column_name: "started_at", data_type: "timestamp with time zone", len: null, is_nullable: "NO", column_default: "now()" },
    { column_name: "applied_steps_count", data_type: "integer", len: null, is_nullable: "NO", column_default: "0" },
  ]);
  const pk = await query<{ column_name: string }>(
    url,
    `SELECT kcu.column_name FROM information_schema.table_constraints tc
       JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
      WHERE tc.table_name = '_prisma_migrations' AND tc.constraint_type = 'PRIMARY KEY'`,
  );
  assert.deepEqual(pk.map((p) => p.column_name), ["id"]);

  const rows = await rowsOf(url);
  assert.deepEqual(rows.map((x) => x.migration_name), MIGRATIONS);
  for (const row of rows) {
    assert.match(row.id, UUID);
    // Prisma's checksum is the lowercase hex SHA-256 of the migration.sql bytes.
    assert.equal(row.checksum, sha256File(join(DEFAULT_MIGRATIONS_DIR, row.migration_name, "migration.sql")));
    assert.ok(row.finished_at instanceof Date, "finished_at is set");
    assert.ok(row.finished_at >= row.started_at);
    assert.equal(row.rolled_back_at, null);
    assert.equal(row.logs, null);
    assert.equal(row.applied_steps_count, 1);
  }
  for (const t of ["api_keys", "messages", "recipients", "deliveries", "idempotency_records"]) assert.ok(await tableExists(url, t), t);
});

test("running again applies nothing and adds no row", async () => {
  const url = await emptyDb();
  await migrate(url);
  const before = await rowsOf(url);
  const again = await migrate(url);
  assert.deepEqual(again, { applied: [], alreadyApplied: MIGRATIONS, checksumMismatch: [] });
  assert.deepEqual(await rowsOf(url), before);
});

test("a failing migration is rolled back, logged, blocks the next run until resolved, then applies", async () => {
  const url = await emptyDb();
  const dir = migrationsCopy();
  const name = "20991231000000_broken";
  const file = join(dir, name, "migration.sql");
  mkdirSync(join(dir, name));
  writeFileSync(file, `CREATE TABLE "broken_probe" ("id" INTEGER);\nSELECT 1 / 0;\n`);

  await assert.rejects(migrate(url, { dir }), (err: Error) => err instanceof MigrationError && err.message.includes(name));
  // The earlier migrations committed; the broken one left nothing behind.
  assert.ok(await tableExists(url, "messages"));
  assert.equal(await tableExists(url, "broken_probe"), false, "the failed script was rolled back");
  const failed = (await rowsOf(url)).filter((x) => x.migration_name === name);
  assert.equal(failed.length, 1);
  assert.match(failed[0]!.logs ?? "", /division by zero/);
  assert.equal(failed[0]!.finished_at, null);
  assert.equal(failed[0]!.rolled_back_at, null);
  assert.equal(failed[0]!.applied_steps_count, 0);
  assert.equal(failed[0]!.checksum, sha256File(file));

  // Like Prisma's P3009: nothing runs while a failed migration is unresolved, and the
  // error says which one and how to resolve it.
  const rowsBefore = await rowsOf(url);
  await assert.rejects(migrate(url, { dir }), (err: Error) => {
    assert.ok(err instanceof MigrationError);
    assert.match(err.message, new RegExp(`${name} failed earlier`));
    assert.match(err.message, new RegExp(`migrate resolve --rolled-back ${name}`));
    return true;
  });
  assert.deepEqual(await rowsOf(url), rowsBefore, "the refused run wrote nothing");

  assert.equal(await resolveRolledBack(url, name), true);
  assert.equal(await resolveRolledBack(url, name), false, "only an unresolved failure can be resolved");
  writeFileSync(file, `CREATE TABLE "broken_probe" ("id" INTEGER);\n`);
  const r = await migrate(url, { dir });
  assert.deepEqual(r.applied, [name]);
  assert.ok(await tableExists(url, "broken_probe"));

  // As with Prisma, the rolled-back attempt stays as history next to the successful one.
  const history = (await rowsOf(url)).filter((x) => x.migration_name === name);
  assert.equal(history.length, 2);
  assert.ok(history[0]!.rolled_back_at instanceof Date);
  assert.equal(history[0]!.finished_at, null);
  assert.ok(history[1]!.finished_at instanceof Date);
  assert.equal(history[1]!.rolled_back_at, null);
  assert.equal(history[1]!.checksum, sha256File(file));
  assert.deepEqual((await migrate(url, { dir })).applied, []);
});

test("concurrent runners on one empty database apply each migration exactly once", async () => {
  const url = await emptyDb();
  const results = await Promise.all([migrate(url), migrate(url), migrate(url)]);
  assert.deepEqual(results.flatMap((r) => r.applied).sort(), MIGRATIONS);
  const rows = await rowsOf(url);
  assert.deepEqual(rows.map((x) => x.migration_name), MIGRATIONS);
  assert.ok(rows.every((x) => x.finished_at !== null));
});

test("a runner waits on Prisma's advisory lock 72707369 before touching anything", async () => {
  assert.equal(MIGRATION_LOCK_KEY, 72707369);
  const url = await emptyDb();
  const holder = new pg.Client({ connectionString: url });
  await holder.connect();
  cleanups.push(() => holder.end());
  await holder.query("SELECT pg_advisory_lock($1)", [72707369]);

  const running = migrate(url);
  // A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
  await waitFor(
    async () =>
      (await query(
        url,
        `SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = $1 AND NOT granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        [72707369],
      )).length > 0,
    { timeoutMs: 5000, intervalMs: 20, what: "the runner to wait on the advisory lock" },
  );
  assert.equal(await tableExists(url, "_prisma_migrations"), false, "nothing is created before the lock is held");
  await holder.query("SELECT pg_advisory_unlock($1)", [72707369]);
  assert.deepEqual((await running).applied, MIGRATIONS);
});

// ---------------------------------------------------------------------------
// prisma/schema.prisma and the SQL migrations are written by hand side by side; the
// generated client trusts the schema, the database obeys the SQL. Compare the two.

interface PrismaColumn {
  table: string;
  column: string;
  udt: string; // information_schema.columns.udt_name expected for this field
  nullable: boolean;
}

const SCALAR_UDT: Record<string, string> = {
  String: "text", Int: "int4", BigInt: "int8", Boolean: "bool", DateTime: "timestamp", Json: "jsonb", Bytes: "bytea", Float: "float8", Decimal: "numeric",
};
const NATIVE_UDT: Record<string, string> = { Uuid: "uuid", Timestamptz: "timestamptz", Timestamp: "timestamp", Text: "text", Integer: "int4", JsonB: "jsonb" };

function parsePrismaSchema(text: string): { columns: PrismaColumn[]; primaryKeys: Map<string, string[]> } {
  const models = [...text.matchAll(/^model\s+(\w+)\s*\{([\s\S]*?)^\}/gm)].map((m) => ({ name: m[1]!, body: m[2]! }));
  const modelNames = new Set(models.map((m) => m.name));
  const columns: PrismaColumn[] = [];
  const primaryKeys = new Map<string, string[]>();
  for (const model of models) {
    const table = /@@map\("([^"]+)"\)/.exec(model.body)?.[1] ?? model.name;
    const fieldToColumn = new Map<string, string>();
    let pk: string[] = [];
    for (const raw of model.body.split("\n")) {
      const line = raw.trim();
      if (!line || line.startsWith("//") || line.startsWith("@@")) continue;
      const f = /^(\w+)\s+(\w+)(\[\])?(\?)?\s*(.*)$/.exec(line);
      assert.ok(f, `cannot parse schema.prisma line: ${line}`);
      const [, field, type, list, optional, attrs] = f;
      if (modelNames.has(type!)) continue; // relation field: no column of its own
      const column = /@map\("([^"]+)"\)/.exec(attrs!)?.[1] ?? field!;
      fieldToColumn.set(field!, column);
      if (/(^|\s)@id(\s|$)/.test(attrs!)) pk = [column];
      const native = /@db\.(\w+)/.exec(attrs!)?.[1];
      // Unsupported("xid8"): a column type the client does not map, named as SQL names it.
      const unsupported = type === "Unsupported" ? /^\("(\w+)"\)/.exec(attrs!)?.[1] : undefined;
      const base = unsupported ?? (native && NATIVE_UDT[native]) ?? SCALAR_UDT[type!];
      assert.ok(base, `no SQL type known for ${model.name}.${field} (${type})`);
      // Prisma's migrations leave list columns nullable (`TEXT[]`, no NOT NULL).
      columns.push({ table, column, udt: list ? `_${base}` : base, nullable: Boolean(optional || list) });
    }
    const compound = /@@id\(\[([^\]]+)\]\)/.exec(model.body);
    if (compound) pk = compound[1]!.split(",").map((s) => fieldToColumn.get(s.trim()) ?? s.trim());
    primaryKeys.set(table, pk);
  }
  return { columns, primaryKeys };
}

test("prisma/schema.prisma and the SQL migrations describe the same tables and columns", async () => {
  const url = await emptyDb();
  await migrate(url);
  const schema = parsePrismaSchema(readFileSync(join(DEFAULT_MIGRATIONS_DIR, "..", "schema.prisma"), "utf8"));

  const actual = await query<{ table_name: string; column_name: string; udt_name: string; is_nullable: string }>(
    url,
    `SELECT table_name, column_name, udt_name, is_nullable FROM information_schema.columns
      WHERE table_schema = 'public' AND table_name <> '_prisma_migrations' ORDER BY table_name, column_name`,
  );
  const fmt = (c: PrismaColumn) => `${c.table}.${c.column} ${c.udt}${c.nullable ? " NULL" : " NOT NULL"}`;
  const expected = schema.columns.map(fmt).sort();
  const got = actual.map((c) => fmt({ table: c.table_name, column: c.column_name, udt: c.udt_name, nullable: c.is_nullable === "YES" })).sort();
  assert.deepEqual(got, expected);

  const pks = await query<{ table_name: string; column_name: string }>(
    url,
    `SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc
       JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
      WHERE tc.table_schema = 'public' AND tc.constraint_type = 'PRIMARY KEY' AND tc.table_name <> '_prisma_migrations'
      ORDER BY tc.table_name, kcu.ordinal_position`,
  );
  const gotPk = new Map<string, string[]>();
  for (const p of pks) gotPk.set(p.table_name, [...(gotPk.get(p.table_name) ?? []), p.column_name]);
  assert.deepEqual(new Map([...gotPk].sort()), new Map([...schema.primaryKeys].sort()));
});
