// The leak guard (test/helpers/leak-guard.ts) as `npm test` runs it: scripts/run-tests.mjs
// in a child process on fixture files (test/fixtures/leak-guard/). A file that leaves things
// open fails, naming each thing, the helper that opened it and the fixture's line, and the
// run ends instead of hanging on them; a file that closes everything passes; a file in a
// `unit` folder that opens a socket fails even though it closed it.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { dropDatabase } from "../helpers/db.ts";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const FIXTURES = "test/fixtures/leak-guard";
const tmp = mkdtempSync(join(tmpdir(), "sp-leak-guard-"));
const record = join(tmp, "databases");
writeFileSync(record, "");

after(async () => {
  // What the leaking fixture made on the shared server (its process was ended by the runner).
  for (const name of readFileSync(record, "utf8").split("\n").filter(Boolean)) await dropDatabase(name);
  rmSync(tmp, { recursive: true, force: true });
});

/** `npm test -- <fixture>`: exit code and everything it printed. */
async function runFixture(fixture: string): Promise<{ code: number | null; output: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, LEAK_FIXTURE_RECORD: record };
  delete env.NODE_TEST_CONTEXT; // else the inner runner reports in this runner's binary protocol
  delete env.LEAK_GUARD; // the guard is what is under test, as npm test runs it
  delete env.LEAK_GUARD_GRACE_MS;
  const child = spawn(process.execPath, ["scripts/run-tests.mjs", `${FIXTURES}/${fixture}`], { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (output += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (output += d));
  const [code] = await once(child, "exit");
  return { code: code as number | null, output };
}

/** The line of the fixture that holds `text`, for matching the places the guard names. */
function lineOf(fixture: string, text: string): number {
  const lines = readFileSync(join(REPO, FIXTURES, fixture), "utf8").split("\n");
  const i = lines.findIndex((l) => l.includes(text));
  assert.ok(i >= 0, `${fixture} has no line with ${text}`);
  return i + 1;
}

const [leaking, clean, unit] = await Promise.all(
  ["leaks-everything.ts", "closes-everything.ts", "unit/opens-socket.ts"].map((f) => runFixture(f)),
);

test("a file that leaves things open fails, naming each thing, the helper that opened it and the line", () => {
  const { code, output } = leaking!;
  assert.equal(code, 1, output);
  const at = (text: string) => `leaks-everything\\.ts:${lineOf("leaks-everything.ts", text)}\\b`;
  const expected: Array<[string, string]> = [
    ["the app", `app on https://127\\.0\\.0\\.1:\\d+, opened by startTestApp at .*${at("startTestApp(")}.*was never closed \\(close\\(\\)\\)`],
    ["its database", `database sp_test_\\w+ and its pool, opened by createTestDatabase at .*${at("startTestApp(")}.*\\(drop\\(\\)\\)`],
    ["the empty database", `database sp_test_\\w+, opened by createEmptyDatabase at .*${at("createEmptyDatabase(")}.*\\(drop\\(\\)\\)`],
    ["the worker", `delivery worker \\S+, opened by startTestWorker at .*${at("startTestWorker(")}.*\\(stop\\(\\)\\)`],
    ["the SMTP peer", `SMTP peer on 127\\.0\\.0\\.1:\\d+, opened by startPeer at .*${at("startPeer(")}`],
    ["the SMTP peer's server", `TCP server listening on 127\\.0\\.0\\.1:\\d+, created by .*startPeer \\(test/helpers/smtp-peers\\.ts:\\d+\\) <- .*${at("startPeer(")}`],
    ["the app's server", `TCP server listening on 127\\.0\\.0\\.1:\\d+, created by startTestApp \\(test/helpers/app\\.ts:\\d+\\) <- .*${at("startTestApp(")}`],
    ["the net server", `TCP server listening on 127\\.0\\.0\\.1:\\d+, created by .*${at("net.createServer(")}`],
    ["the client socket", `TCP socket 127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:\\d+, created by .*${at("net.connect(")}`],
    ["the accepted socket", `TCP socket 127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:\\d+, accepted by the TCP server listening on 127\\.0\\.0\\.1:\\d+ created by .*${at("net.createServer(")}`],
    ["the child process", `child process \\d+ \\(node -e process\\.stdin\\.resume\\(\\)\\), created by .*${at("spawn(")}`],
    ["the timer", `interval of 60000 ms, created by .*${at("setInterval(")}`],
  ];
  assert.match(output, /leak guard: test\/fixtures\/leak-guard\/leaks-everything\.ts left \d+ thing\(s\) open when its tests ended:/);
  for (const [what, pattern] of expected) assert.match(output, new RegExp(`^ +- ${pattern}`, "m"), `${what} is named:\n${output}`);
  // The test itself passed: the failure is the guard's alone.
  assert.match(output, /^✔ opens an app, a worker/m);
});

test("a file that closes everything, some of it still closing when its hooks end, passes", () => {
  const { code, output } = clean!;
  assert.equal(code, 0, output);
  assert.doesNotMatch(output, /leak guard/);
  assert.match(output, /^ℹ pass 1$/m);
});

test("a file in a unit folder that opens a socket fails, even though it closed it", () => {
  const { code, output } = unit!;
  assert.equal(code, 1, output);
  assert.match(output, /leak guard: test\/fixtures\/leak-guard\/unit\/opens-socket\.ts opens sockets or child processes; such tests belong in test\/integration\//);
  assert.match(output, new RegExp(`^ +- a UDP socket, created by .*opens-socket\\.ts:${lineOf("unit/opens-socket.ts", 'createSocket("udp4")')}\\b`, "m"));
});
