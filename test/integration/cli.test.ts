// The CLI as users run it: keys create/list/revoke/rotate-data and migrate, against a
// real database, in child processes.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createEmptyDatabase, createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { TEST_DATA_KEY, testServerCertificates } from "../helpers/app.ts";
import { exitWithin, freePort, spawnCli, stackFrames } from "../helpers/cli-process.ts";
import { startPrivatePostgres } from "../helpers/private-postgres.ts";
import { startFakeDns } from "../helpers/fake-dns.ts";
import { testCaFile } from "../helpers/worker.ts";
import { ApiKeyVerifier } from "../../src/services/api-keys.ts";

let tdb: TestDatabase;
before(async () => {
  tdb = await createTestDatabase();
});
after(() => tdb.drop());

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ["src/cli.ts", ...args], {
    env: { PATH: process.env.PATH ?? "", DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: TEST_DATA_KEY, LOG_LEVEL: "warn", ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("keys create prints the key once; list never shows a secret; revoke takes effect", async () => {
  const created = cli(["keys", "create", "--name", "shop", "--scopes", "send", "--domains", "shop.example,mail.shop.example", "--tls", "required"]);
  assert.equal(created.code, 0, created.stderr);
  const key = /^(sp_[0-9a-f]{16}_[a-z2-7]{52})$/m.exec(created.stdout)?.[1];
  assert.ok(key, created.stdout);
  const id = key.split("_")[1]!;
  const verifier = new ApiKeyVerifier(tdb.db.prisma, 0);
  const rec = await verifier.verify(key);
  assert.deepEqual(rec.scopes, ["send"]);
  assert.deepEqual(rec.allowedDomains, ["shop.example", "mail.shop.example"]);
  assert.equal(rec.tlsPolicy, "required");
  const row = await tdb.db.prisma.apiKey.findUniqueOrThrow({ where: { id } });
  assert.notEqual(row.secretHash, key.split("_")[2], "only a hash is stored");
  assert.match(row.secretHash, /^[0-9a-f]{64}$/);

  const list = cli(["keys", "list"]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, new RegExp(`^${id}\t"shop"\tsend\tshop.example,mail.shop.example\trequired\t.*\tactive$`, "m"));
  assert.ok(!list.stdout.includes(key.split("_")[2]!), "the secret is never listed");

  const revoked = cli(["keys", "revoke", id]);
  assert.equal(revoked.code, 0, revoked.stderr);
  await assert.rejects(verifier.verify(key), /revoked/);
  assert.equal(cli(["keys", "revoke", id]).code, 1, "revoking twice says there is no active key");
  assert.match(cli(["keys", "list"]).stdout, new RegExp(`^${id}\t.*\trevoked `, "m"));
});

test("domains add prints the records to publish; list, show, remove; mistakes are one line and write nothing", async () => {
  const count = async () => (await tdb.db.pool.query("SELECT count(*)::int AS n FROM sender_domains")).rows[0].n as number;
  const added = cli(["domains", "add", "cli.example", "--bounce-domain", "bounces.cli.example"]);
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stdout, /^cli\.example \(id [0-9a-f-]{36}\): pending; bounce domain bounces\.cli\.example pending; DKIM selectors sp\d{6}e, sp\d{6}r$/m);
  assert.match(added.stdout, /^unchecked\tsp\d{6}r\._domainkey\.cli\.example\tTXT\tv=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{300,}$/m);
  assert.match(added.stdout, /^unchecked\tsp\d{6}e\._domainkey\.cli\.example\tTXT\tv=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/m);
  assert.match(added.stdout, /^unchecked\t_dmarc\.cli\.example\tTXT\tv=DMARC1; p=none$/m);
  assert.doesNotMatch(added.stdout + added.stderr, /PRIVATE/);
  const id = /\(id ([0-9a-f-]{36})\)/.exec(added.stdout)![1]!;

  const before = await count();
  for (const [args, re] of [
    [["domains", "add", "cli.example"], /^sealpost: the domain cli\.example exists already$/],
    [["domains", "add", "[192.0.2.1]"], /^sealpost: domains add: name must be a domain name/],
    [["domains", "add", "x.example", "--bounce-domain", "b.other.example"], /^sealpost: domains add: bounce_domain must be a subdomain of x\.example/],
  ] as Array<[string[], RegExp]>) {
    const r = cli(args);
    assert.notEqual(r.code, 0, args.join(" "));
    assert.match(r.stderr.split("\n")[0]!, re, r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
  assert.equal(await count(), before, "the mistakes wrote nothing");

  const list = cli(["domains", "list"]);
  assert.match(list.stdout, new RegExp(`^${id}\tcli\\.example\tpending\tbounces\\.cli\\.example\tsp\\d{6}e,sp\\d{6}r$`, "m"));
  assert.equal(cli(["domains", "show", id]).stdout, cli(["domains", "show", "CLI.example"]).stdout, "by id or by name");
  assert.match(cli(["domains", "show", "cli.example"]).stdout, /_domainkey\.cli\.example\tTXT/);
  // verify asks the DNS servers of DNS_SERVERS: nothing published there yet.
  const dns = await startFakeDns({});
  // Run without blocking this process: the fake DNS answers from its event loop.
  const verify = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done) => {
    execFile(process.execPath, ["src/cli.ts", "domains", "verify", "cli.example"], {
      env: { PATH: process.env.PATH ?? "", DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: TEST_DATA_KEY, LOG_LEVEL: "warn", DNS_SERVERS: dns.address },
      encoding: "utf8", timeout: 60_000,
    }, (err, stdout, stderr) => done({ code: err ? (typeof err.code === "number" ? err.code : null) : 0, stdout, stderr }));
  });
  await dns.close();
  assert.equal(verify.code, 1, verify.stderr);
  assert.match(verify.stdout, /^cli\.example: failed; bounce domain bounces\.cli\.example: failed$/m);
  assert.match(verify.stdout, /^missing\tbounce_mx\tbounces\.cli\.example\tno MX record/m);
  assert.match(verify.stdout, /^missing\tdkim\tsp\d{6}r\._domainkey\.cli\.example\tno DKIM record/m);
  assert.match(verify.stdout, /^missing\tdmarc\t_dmarc\.cli\.example\t/m);
  // The four TXT records, and DMARC policy discovery walking up to the Organizational Domain.
  const txtNames = new Set(dns.queries.filter((q) => q.type === "TXT").map((q) => q.name));
  assert.equal(txtNames.size, 5, `asked the fake DNS, not the system's: ${[...txtNames].join(", ")}`);
  assert.ok(txtNames.has("_dmarc.example"), "the DMARC tree walk reached the Organizational Domain");
  assert.equal(dns.queries.filter((q) => q.type === "MX").length, 1);
  // show lists every record with the state the last verify found.
  const shown = cli(["domains", "show", "cli.example"]).stdout;
  assert.match(shown, /state at the last verify, \d{4}-\d\d-\d\dT/);
  for (const re of [/^missing\tsp\d{6}r\._domainkey\.cli\.example\tTXT\t/m, /^missing\tbounces\.cli\.example\tMX\t10 /m, /^missing\t_dmarc\.cli\.example\tTXT\t/m])
    assert.match(shown, re);
  assert.doesNotMatch(shown, /^unchecked/m);
  const removed = cli(["domains", "remove", "cli.example"]);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(await count(), before - 1);
  const again = cli(["domains", "show", "cli.example"]);
  assert.equal(again.code, 1);
  assert.match(again.stdout, /^no domain cli\.example/);
});

test("webhooks add prints the secret once; list, show, disable, enable, rotate-secret, test, deliveries, retry, remove", async () => {
  const created = cli(["keys", "create", "--name", "hooks", "--scopes", "send,read,admin"]);
  const keyId = /^created key ([0-9a-f]{16})/m.exec(created.stdout)![1]!;
  const count = async () => (await tdb.db.pool.query("SELECT count(*)::int AS n FROM webhook_endpoints")).rows[0].n as number;
  const before = await count();
  for (const [args, re] of [
    [["webhooks", "add", "https://hooks.cli.example/in"], /^sealpost: webhooks add: needs --key/],
    [["webhooks", "add", "ftp://hooks.cli.example/in", "--key", keyId], /^sealpost: webhooks add: url: must be an https:\/\/ URL/],
    [["webhooks", "add", "https://hooks.cli.example/in", "--key", keyId, "--events", "message.opened"], /^sealpost: webhooks add: --events: /],
  ] as Array<[string[], RegExp]>) {
    const r = cli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr.split("\n")[0]!, re, r.stderr);
  }
  const noKey = cli(["webhooks", "add", "https://hooks.cli.example/in", "--key", "0000000000000000"]);
  assert.equal(noKey.code, 1);
  assert.match(noKey.stdout, /^no active key 0000000000000000/);
  assert.equal(await count(), before, "the mistakes wrote nothing");

  const added = cli(["webhooks", "add", "https://hooks.cli.example/in", "--key", keyId, "--events", "message.delivered,message.bounced"]);
  assert.equal(added.code, 0, added.stderr);
  const id = new RegExp(`^([0-9a-f-]{36})\t${keyId}\tenabled\tmessage\.delivered,message\.bounced\thttps://hooks\.cli\.example/in$`, "m").exec(added.stdout)?.[1];
  assert.ok(id, added.stdout);
  const secret = /^(whsec_[A-Za-z0-9+/]{32})$/m.exec(added.stdout)?.[1];
  assert.ok(secret, "the secret is printed");
  for (const args of [["webhooks", "list"], ["webhooks", "list", "--key", keyId], ["webhooks", "show", id]]) {
    const r = cli(args);
    assert.match(r.stdout, new RegExp(`^${id}\t${keyId}\tenabled\t`, "m"), args.join(" "));
    assert.doesNotMatch(r.stdout, /whsec_/, "the secret is shown once only");
  }
  assert.match(cli(["webhooks", "disable", id]).stdout, new RegExp(`^${id}\t${keyId}\tdisabled \\(disabled through the API\\)`, "m"));
  assert.match(cli(["webhooks", "enable", id]).stdout, new RegExp(`^${id}\t${keyId}\tenabled`, "m"));
  const rotated = cli(["webhooks", "rotate-secret", id]);
  assert.match(rotated.stdout, /previous one also signs until \d{4}-/);
  assert.notEqual(/^(whsec_\S+)$/m.exec(rotated.stdout)?.[1], secret);
  assert.match(cli(["webhooks", "test", id]).stdout, /^queued test delivery (\d+)/m);
  assert.match(cli(["webhooks", "deliveries", id]).stdout, /^\d+\ttest\tpending\t0\t-$/m);
  assert.match(cli(["webhooks", "retry", id]).stdout, /^0 failed deliveries due again$/m);
  assert.equal(cli(["webhooks", "retry", id, "--since", "yesterday"]).code, 2);
  assert.match(cli(["webhooks", "remove", id]).stdout, /^removed webhook endpoint/m);
  const gone = cli(["webhooks", "show", id]);
  assert.equal(gone.code, 1);
  assert.match(gone.stdout, /^no webhook endpoint /);
});

test("suppressions add, list, remove: the owner's view of every sender domain's list", () => {
  const added = cli(["suppressions", "add", "Gone@Example.org", "--domain", "cli.example", "--description", "closed account"]);
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stdout, /^gone@example\.org\tcli\.example\tmanual\t\d{4}-\d\d-\d\dT[^\t]+\tclosed account$/m);
  assert.match(cli(["suppressions", "add", "gone@example.org", "--domain", "cli.example"]).stdout, /^already suppressed: gone@example\.org\t/m);
  assert.match(cli(["suppressions", "list", "--reason", "manual"]).stdout, /^gone@example\.org\tcli\.example\tmanual\t/m);
  assert.equal(cli(["suppressions", "list", "--domain", "other.example"]).stdout, "");
  assert.equal(cli(["suppressions", "list", "--reason", "bounced"]).code, 2);
  assert.equal(cli(["suppressions", "add", "gone@example.org"]).code, 2, "--domain is required");
  const bad = cli(["suppressions", "add", "not an address", "--domain", "cli.example"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^sealpost: address: /);
  assert.match(cli(["suppressions", "remove", "gone@example.org"]).stdout, /^gone@example\.org removed from the suppression list of cli\.example$/m);
  const again = cli(["suppressions", "remove", "gone@example.org"]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^sealpost: gone@example\.org is not on the suppression list of any domain/);
});

test("bad arguments are usage errors, not crashes", () => {
  for (const args of [["keys", "create"], ["keys", "create", "--name", "x", "--scopes", "root"], ["keys", "create", "--name", "x", "--domains", "not a domain"], ["keys", "frobnicate"], ["nope"]]) {
    const r = cli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /^sealpost: /);
  }
  const badEnv = cli(["keys", "list"], { PORT: "x" });
  assert.equal(badEnv.code, 1);
  assert.match(badEnv.stderr, /PORT: must be a whole number/);
});

test("migrate reports nothing to apply on a migrated database; rotate-data runs", () => {
  const m = cli(["migrate"]);
  assert.equal(m.code, 0, m.stderr);
  assert.match(m.stdout, /nothing to apply \(\d+ applied before\)/);
  const r = cli(["keys", "rotate-data"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /re-encrypted 0 messages, 0 DKIM private keys, 0 webhook endpoints' secrets and 0 receipt signing keys under data key k1/);
});

// ---------------------------------------------------------------------------------------
// --help, usage errors and operator errors (issue 7, finding 5): one line saying what to
// change, never a stack trace; --help changes nothing.

const tmp = mkdtempSync(join(tmpdir(), "sealpost-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Exactly one non-empty line on stderr, and no stack frame anywhere. */
function assertOneLine(r: { code: number | null; stdout: string; stderr: string }, re: RegExp, what: string) {
  assert.notEqual(r.code, 0, `${what}: non-zero exit`);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, re, what);
  assert.deepEqual(stackFrames(r.stdout + r.stderr), [], `${what}: no stack trace`);
}

const HELP_PATHS = [[], ["help"], ["start"], ["serve"], ["worker"], ["migrate"], ["migrate", "resolve"], ["keys"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["keys", "rotate-data"], ["domains"], ["domains", "add"], ["domains", "remove"]];

test("--help on every command and subcommand prints its usage, exit 0, and opens no database", async () => {
  // Nothing listens on this port: a command that touched the database would fail.
  const nowhere = `postgresql://postgres@127.0.0.1:${await freePort()}/none`;
  for (const path of HELP_PATHS) {
    for (const flag of path.length === 0 || path[1] === "create" ? ["--help", "-h"] : ["--help"]) {
      const r = cli([...path, flag], { DATABASE_URL: nowhere });
      assert.equal(r.code, 0, `${[...path, flag].join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr, "", [...path, flag].join(" "));
      const expected = path[0] === "help" || path.length === 0 ? "usage: sealpost <command>" : `usage: sealpost ${path.join(" ")}`;
      assert.ok(r.stdout.startsWith(expected), `${[...path, flag].join(" ")} prints its own usage:\n${r.stdout}`);
    }
  }
  // Help wins over a mistake on the same line; `help <command>` is the same page.
  assert.equal(cli(["keys", "create", "--nmae", "x", "--help"]).code, 0);
  assert.equal(cli(["help", "keys", "create"]).stdout, cli(["keys", "create", "--help"]).stdout);
});

test("migrate --help and keys create --help change nothing", async (t) => {
  const fresh = await createEmptyDatabase();
  t.after(() => fresh.drop());
  const m = cli(["migrate", "--help"], { DATABASE_URL: fresh.url });
  assert.equal(m.code, 0, m.stderr);
  const c = new pg.Client({ connectionString: fresh.url });
  await c.connect();
  try {
    const r = await c.query<{ t: string | null }>("SELECT to_regclass('public._prisma_migrations')::text AS t");
    assert.equal(r.rows[0]!.t, null, `no migration table was created; it printed:\n${m.stdout}`);
  } finally {
    await c.end();
  }
  assert.match(m.stdout, /^usage: sealpost migrate/);

  const before = await tdb.db.prisma.apiKey.count();
  const k = cli(["keys", "create", "--help"]);
  assert.equal(k.code, 0, k.stderr);
  assert.match(k.stdout, /^usage: sealpost keys create --name N/);
  assert.match(k.stdout, /--scopes/);
  assert.equal(await tdb.db.prisma.apiKey.count(), before, "no key was created");
});

test("a mistyped flag, a missing value, an unknown subcommand or argument: one line and the usage, exit 2", () => {
  const cases: Array<[string[], RegExp, RegExp]> = [
    [["keys", "create", "--nmae", "shop"], /^sealpost: keys create: unknown option --nmae \(did you mean --name\?\)$/, /usage: sealpost keys create/],
    [["keys", "create", "--name"], /^sealpost: keys create: --name needs a value$/, /usage: sealpost keys create/],
    [["keys", "crate", "--name", "x"], /^sealpost: keys: unknown command crate \(did you mean create\?\)$/, /usage: sealpost keys </],
    [["keys", "revoke"], /^sealpost: keys revoke: needs <id>$/, /usage: sealpost keys revoke <id>/],
    [["start", "--port", "9"], /^sealpost: start: unknown option --port$/, /usage: sealpost start/],
    [["migrate", "now"], /^sealpost: migrate: unknown command now$/, /usage: sealpost migrate/],
    [["serve", "extra"], /^sealpost: serve: unexpected argument extra$/, /usage: sealpost serve/],
  ];
  for (const [args, first, usage] of cases) {
    const r = cli(args);
    const what = args.join(" ");
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.match(r.stderr.split("\n")[0]!, first, what);
    assert.match(r.stderr, usage, `${what} shows that command's usage`);
    assert.deepEqual(stackFrames(r.stderr), [], `${what}: no stack trace`);
    assert.equal(r.stdout, "", what);
  }
});

test("database mistakes: missing database, refused connection, unknown role: one line naming DATABASE_URL", async () => {
  const refusedPort = await freePort();
  const missing = `sp_missing_${process.pid}`;
  const cases: Array<[string, string, RegExp]> = [
    [
      "missing database",
      `postgresql://postgres@127.0.0.1:5432/${missing}`,
      new RegExp(`^sealpost: the database "${missing}" does not exist on 127\\.0\\.0\\.1:5432: create it, or fix its name in DATABASE_URL$`),
    ],
    ["refused connection", `postgresql://postgres@127.0.0.1:${refusedPort}/x`, new RegExp(`^sealpost: cannot connect to the database at 127\\.0\\.0\\.1:${refusedPort} \\(connection refused\\): check DATABASE_URL$`)],
    ["unknown role", "postgresql://sp_no_such_role:pw@127.0.0.1:5432/postgres", /^sealpost: the database at 127\.0\.0\.1:5432 refused user "sp_no_such_role" \(role "sp_no_such_role" does not exist\): check the user and password in DATABASE_URL$/],
  ];
  for (const [what, url, re] of cases) {
    // Every way in: the migration runner, a one-off command, and a server that does not migrate.
    for (const [args, env] of [[["migrate"], {}], [["keys", "list"], {}], [["keys", "list"], { MIGRATE_ON_START: "false" }], [["worker"], { MIGRATE_ON_START: "false" }]] as const) {
      assertOneLine(cli([...args], { DATABASE_URL: url, ...env }), re, `${what}, ${args.join(" ")} ${JSON.stringify(env)}`);
    }
  }
});

test("a wrong database password: one line, the password never shown", async (t) => {
  const server = await startPrivatePostgres("the-right-password");
  t.after(() => server.stop());
  const r = cli(["keys", "list"], { DATABASE_URL: server.url("postgres", "a-wrong-password") });
  assertOneLine(r, new RegExp(`^sealpost: the database at 127\\.0\\.0\\.1:${server.port} refused user "postgres" \\(password authentication failed\\): check the user and password in DATABASE_URL$`), "wrong password");
  assert.ok(!r.stderr.includes("a-wrong-password"));
  // And the right one works, so the failure above was the password.
  const ok = cli(["migrate"], { DATABASE_URL: server.url("postgres", "the-right-password") });
  assert.equal(ok.code, 0, ok.stderr);
});

test("a port in use, a missing certificate file, an unreadable SMTP_CA_FILE: one line naming the variable", async (t) => {
  const { leaf } = testServerCertificates();
  const certFile = join(tmp, "server.crt");
  const keyFile = join(tmp, "server.key");
  writeFileSync(certFile, leaf.cert);
  writeFileSync(keyFile, leaf.key);
  const tlsEnv = { TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile, HOST: "127.0.0.1", MIGRATE_ON_START: "false" };

  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
  t.after(() => taken.close());
  const port = (taken.address() as net.AddressInfo).port;
  const inUse = cli(["serve"], { ...tlsEnv, PORT: String(port) });
  assertOneLine(inUse, new RegExp(`^sealpost: port ${port} is in use: set PORT or stop the other process$`), "port in use");

  const missingCert = join(tmp, "missing.crt");
  assertOneLine(
    cli(["serve"], { ...tlsEnv, PORT: "0", TLS_CERT_FILE: missingCert }),
    new RegExp(`^sealpost: TLS_CERT_FILE: cannot read ${missingCert} \\(no such file\\): fix the path in TLS_CERT_FILE$`),
    "missing certificate",
  );
  assertOneLine(cli(["serve"], { ...tlsEnv, PORT: "0", TLS_KEY_FILE: certFile }), /^sealpost: TLS_KEY_FILE: .* is not a PEM private key/, "a certificate given as the key");

  const inboundInUse = cli(["inbound"], { ...tlsEnv, INBOUND_LISTEN: `127.0.0.1:${port}` });
  assertOneLine(inboundInUse, new RegExp(`^sealpost: INBOUND_LISTEN: 127\\.0\\.0\\.1:${port} is in use: stop what listens there or choose another port$`), "bounce receiver port in use");

  const missingCa = join(tmp, "missing-ca.pem");
  assertOneLine(cli(["worker"], { MIGRATE_ON_START: "false", SMTP_CA_FILE: missingCa }), new RegExp(`^sealpost: SMTP_CA_FILE: cannot read ${missingCa} \\(no such file\\): fix the path in SMTP_CA_FILE$`), "missing SMTP CA");
  assertOneLine(cli(["worker"], { MIGRATE_ON_START: "false", SMTP_CA_FILE: tmp }), /^sealpost: SMTP_CA_FILE: cannot read .* \(it is a directory\)/, "SMTP CA that is a directory");
});

test("without DATABASE_URL, keys create and keys list say they use the embedded database", () => {
  const dataDir = join(tmp, "data");
  const env = { DATABASE_URL: "", DATA_DIR: dataDir };
  const created = cli(["keys", "create", "--name", "local"], env);
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /^sp_[0-9a-f]{16}_/m);
  assert.equal(created.stderr.trim(), `sealpost: using the embedded database in ${dataDir} (DATABASE_URL is not set)`);
  const listed = cli(["keys", "list"], env);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stderr, /using the embedded database in .* \(DATABASE_URL is not set\)/);
  // With DATABASE_URL, nothing extra is said.
  assert.equal(cli(["keys", "list"]).stderr, "");
});

// ---------------------------------------------------------------------------------------
// The worker's start-up line (issue 7, finding 8): where mail goes, what it trusts, under
// which policy, in one line, without the relay password.

async function workerStartLine(t: TestContext, env: Record<string, string>): Promise<{ line: string; output: string }> {
  const p = spawnCli(process.execPath, ["src/cli.ts", "worker"], { DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: TEST_DATA_KEY, MIGRATE_ON_START: "false", ...env });
  t.after(() => p.kill());
  const line = await p.waitForLine(/delivery worker started/, "the worker's start-up line", 30_000);
  p.child.kill("SIGTERM");
  const r = await exitWithin(p, 10_000, "the worker after SIGTERM");
  assert.equal(r.code, 0, p.output());
  return { line, output: p.output() };
}

test("the worker says at start where mail goes: a relay with AUTH, never its password", async (t) => {
  const { line, output } = await workerStartLine(t, {
    SMTP_RELAY_URL: "smtp://mailer:s3cret%2Fpass@relay.example.net:2525",
    SMTP_CA_FILE: testCaFile(),
    SMTP_TLS_POLICY: "required",
    WORKER_CONCURRENCY: "3",
  });
  const msg = JSON.parse(line).msg as string;
  assert.match(msg, /through the relay relay\.example\.net:2525 \(STARTTLS, AUTH configured\)/);
  assert.ok(msg.includes(`extra trusted CA ${testCaFile()}`), msg);
  assert.match(msg, /server TLS policy required/);
  assert.match(msg, /up to 3 deliveries at once/);
  for (const secret of ["s3cret", "s3cret%2Fpass", "s3cret/pass"]) assert.ok(!output.includes(secret), `the relay password never appears (${secret})`);
});

test("the worker says at start where mail goes: direct MX, its port and DNS servers", async (t) => {
  const { line } = await workerStartLine(t, { SMTP_MX_PORT: "2526", DNS_SERVERS: "127.0.0.1:5399" });
  const msg = JSON.parse(line).msg as string;
  assert.match(msg, /direct to each domain's MX on port 2526 \(DNS servers 127\.0\.0\.1:5399\)/);
  assert.match(msg, /no extra CA \(system roots\)/);
  assert.match(msg, /server TLS policy opportunistic/);
  assert.match(msg, /up to 8 deliveries at once/);
});
