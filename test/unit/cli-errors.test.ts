// How the CLI words the errors that end a command: operator mistakes as one line naming
// the variable to change, anything unforeseen as one line that says how to see more.
// (The same errors met by real processes are in test/integration/cli.test.ts.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { describeFailure, explainDatabaseError } from "../../src/cli.ts";
import { ConfigError, loadConfig } from "../../src/config.ts";

const config = (env: Record<string, string> = {}) => loadConfig({ DATABASE_URL: "postgresql://app:secret@db.internal:6432/mail", ...env });

test("an unforeseen error is one line that points to LOG_LEVEL=debug; at debug it carries the stack", () => {
  const err = new Error("something\n  odd happened", { cause: new Error("deeper") });
  assert.equal(describeFailure(err, config()), "sealpost: unexpected error: something odd happened (run with LOG_LEVEL=debug for details)");
  const debug = describeFailure(err, config({ LOG_LEVEL: "debug" }));
  assert.match(debug, /^sealpost: unexpected error: something odd happened\nError: something/);
  assert.match(debug, /\n\s+at /, "the stack, for whoever asked for it");
  assert.match(debug, /caused by: Error: deeper/);
});

test("configuration errors are printed as they are", () => {
  assert.equal(describeFailure(new ConfigError("PORT: must be a whole number"), config()), "sealpost: PORT: must be a whole number");
});

test("Prisma's connection codes, which replace the driver's error, are explained too; the password never appears", () => {
  const c = config();
  const cases: Array<[string, RegExp]> = [
    ["P1000", /^the database at db\.internal:6432 refused user "app" \(password authentication failed\): check the user and password in DATABASE_URL$/],
    ["P1001", /^cannot connect to the database at db\.internal:6432: check DATABASE_URL$/],
    ["P1003", /^the database "mail" does not exist on db\.internal:6432: create it, or fix its name in DATABASE_URL$/],
    ["P1010", /^the database at db\.internal:6432 refused user "app" \(access denied\)/],
  ];
  for (const [code, re] of cases) {
    const err = Object.assign(new Error("Invalid `prisma.apiKey.count()` invocation"), { code });
    const line = explainDatabaseError(err, c);
    assert.match(line ?? "", re, code);
    assert.ok(!line!.includes("secret"));
  }
  // A pool timeout, found along the cause chain.
  const timeout = new Error("wrapped", { cause: new Error("timeout exceeded when trying to connect") });
  assert.match(explainDatabaseError(timeout, c) ?? "", /no answer within 2000 ms\): check DATABASE_URL, or raise DATABASE_CONNECT_TIMEOUT_MS$/);
  assert.equal(explainDatabaseError(new Error("unrelated"), c), null);
});

test("SHUTDOWN_GRACE defaults below docker stop's 10 s and stays below the 30 s forced exit", () => {
  assert.equal(loadConfig({}).SHUTDOWN_GRACE, 8000);
  assert.equal(loadConfig({ SHUTDOWN_GRACE: "20s" }).SHUTDOWN_GRACE, 20_000);
  assert.throws(() => loadConfig({ SHUTDOWN_GRACE: "40s" }), /SHUTDOWN_GRACE: must be at most 25s/);
});
