// The CLI as users run it: keys create/list/revoke/rotate-data and migrate, against a
// real database, in child processes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { TEST_DATA_KEY } from "../helpers/app.ts";
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

test("bad arguments are usage errors, not crashes", () => {
  for (const args of [["keys", "create"], ["keys", "create", "--name", "x", "--scopes", "admin"], ["keys", "create", "--name", "x", "--domains", "not a domain"], ["keys", "frobnicate"], ["nope"]]) {
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
  assert.match(r.stdout, /re-encrypted 0 messages under data key k1/);
});
