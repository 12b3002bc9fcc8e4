// Every SQL statement lives under src/db/ (ARCHITECTURE.md, "Code map"), so that
// prisma/roles.sql can be audited against one folder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";

const ROOT = join(import.meta.dirname, "..", "..");
const SRC = join(ROOT, "src");

const ALLOWED_DIRS = ["src/db/", "src/generated/"];

// Prisma's delegates are the models with a lower-case first letter (ApiKey -> apiKey),
// read from the schema so that a new model is covered too.
const models = [...readFileSync(join(ROOT, "prisma", "schema.prisma"), "utf8").matchAll(/^model (\w+)/gm)]
  .map((m) => m[1]!.charAt(0).toLowerCase() + m[1]!.slice(1));

const OPS = "findUnique|findUniqueOrThrow|findFirst|findFirstOrThrow|findMany|create|createMany|createManyAndReturn|update|updateMany|updateManyAndReturn|upsert|delete|deleteMany|count|aggregate|groupBy";

const PATTERNS: Array<[string, RegExp]> = [
  ["raw Prisma query", /\$(queryRaw|executeRaw)(Unsafe)?\b/],
  ["node-postgres query", /\.query\s*(<[^>]*>)?\s*\(/],
  ["Prisma model call", new RegExp(`\\.(${models.join("|")})\\s*\\.\\s*(${OPS})\\s*\\(`)],
];
// A string that opens with a statement, possibly after a line break (const SQL = `\nSELECT ...).
const SQL_TEXT = /["'`]\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|WITH\s+\w+\s+AS\s*\()/g;

/** The SQL-like places in one file's text, as "line: what: text". */
function findSql(text: string): string[] {
  const found: string[] = [];
  const lines = text.split("\n");
  const isComment = (line: string) => /^\s*(\/\/|\*|\/\*)/.test(line); // comments may name statements
  lines.forEach((line, i) => {
    if (isComment(line)) return;
    for (const [what, re] of PATTERNS) if (re.test(line)) found.push(`${i + 1}: ${what}: ${line.trim()}`);
  });
  for (const m of text.matchAll(SQL_TEXT)) {
    const i = text.slice(0, m.index).split("\n").length - 1;
    if (!isComment(lines[i]!)) found.push(`${i + 1}: SQL text: ${lines[i]!.trim()}`);
  }
  return found;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts"))
    .map((e) => join(e.parentPath, e.name));
}

test("the detector sees each way of querying that the code has used", () => {
  assert.ok(models.includes("apiKey") && models.includes("idempotencyRecord"), `models read from the schema: ${models.join(", ")}`);
  const samples = [
    `await deps.db.pool.query("SELECT 1");`,
    `const { rows } = await deps.pool.query<MessageRow>(LOAD_SQL, [messageId]);`,
    `const n = await db.$executeRawUnsafe(sql, cutoff);`,
    "await db.$executeRaw`UPDATE data_keys SET x = 1`;",
    `const rows = await tx.$queryRawUnsafe<Array<{ status: string }>>(q, id);`,
    `const prior = await ctx.db.idempotencyRecord.findUnique({ where });`,
    `await tx.recipient.updateMany({ where: { messageId: id } });`,
    `const row = await this.#db.apiKey.findUnique({ where: { id } });`,
    "const LOAD_SQL = `\nSELECT m.id FROM messages m`;",
  ];
  for (const s of samples) assert.notDeepEqual(findSql(s), [], s);
  const innocent = [
    `const query = parseInput(route.query, request.query, "query");`,
    `// UPDATE messages SET status: see db/messages.ts`,
    `await ping(deps.db);`,
    `const { subject } = readSubject(m, cipher);`,
  ];
  for (const s of innocent) assert.deepEqual(findSql(s), [], s);
});

test("no SQL outside src/db/", () => {
  const offenders: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const rel = relative(ROOT, file).split("\\").join("/");
    if (ALLOWED_DIRS.some((d) => rel.startsWith(d))) continue;
    for (const hit of findSql(readFileSync(file, "utf8"))) offenders.push(`${rel}:${hit}`);
  }
  assert.deepEqual(offenders, [], `statements belong in a repository under src/db/ taking \`db: Db | Tx\` (the worker's: its pg.Pool):\n${offenders.join("\n")}`);
});

// The worker's statements moved here from src/worker/: the detector must still see them
// where they are, written as they are (over the pg.Pool), or it could not see them anywhere.
// (The claim in db/deliveries.ts also loads the message, so db/messages.ts has none left.)
test("the detector sees the worker's statements in their repositories", () => {
  for (const rel of ["src/db/deliveries.ts"]) {
    const hits = findSql(readFileSync(join(ROOT, rel), "utf8"));
    assert.ok(hits.some((h) => h.includes("node-postgres query")), `${rel}: ${hits.join("\n")}`);
  }
});

// prisma/roles.sql names, beside each grant, the repository functions that need it (or
// lists a function as the owner's). A repository function it does not name has not
// been audited against the grants; a name it gives that no longer exists is stale.
test("prisma/roles.sql names every repository function, and only existing ones", () => {
  const roles = readFileSync(join(ROOT, "prisma", "roles.sql"), "utf8");
  const REPOSITORIES = ["api-keys", "messages", "deliveries", "idempotency", "content", "data-keys"];
  const exported = REPOSITORIES.flatMap((f) =>
    [...readFileSync(join(SRC, "db", `${f}.ts`), "utf8").matchAll(/^export (?:async )?function (\w+)/gm)].map((m) => m[1]!));
  assert.ok(exported.length > 10, `repository functions found: ${exported.join(", ")}`);
  const unnamed = exported.filter((name) => !new RegExp(`\\b${name}\\b`).test(roles));
  assert.deepEqual(unnamed, [], "repository functions that prisma/roles.sql does not account for");
  const everyExport = new Set(sourceFiles(SRC).flatMap((file) =>
    [...readFileSync(file, "utf8").matchAll(/^(?:export )?(?:async )?function (\w+)/gm)].map((m) => m[1]!)));
  const named = new Set([...roles.matchAll(/^--.*$/gm)].flatMap((m) => [...m[0].matchAll(/\b([a-z]+[A-Z]\w*)\b/g)].map((n) => n[1]!)));
  const stale = [...named].filter((n) => !everyExport.has(n));
  assert.deepEqual(stale, [], "names in prisma/roles.sql that are no function in src");
});

test("src/db imports nothing from the layers above it (api, services, worker)", () => {
  const dir = join(SRC, "db");
  const offenders: string[] = [];
  for (const name of readdirSync(dir).filter((f) => f.endsWith(".ts"))) {
    const text = readFileSync(join(dir, name), "utf8");
    for (const m of text.matchAll(/^import[^;]*?from\s+["'](\.\.\/(api|services|worker|cli)[^"']*)["']/gm)) offenders.push(`src/db/${name}: ${m[1]}`);
  }
  assert.deepEqual(offenders, []);
  // The pattern sees such an import when there is one.
  assert.match('import type { X } from "../worker/smtp-reply.ts";', /^import[^;]*?from\s+["'](\.\.\/(api|services|worker|cli)[^"']*)["']/m);
});
