// `npm run knip` as CI runs it: no unused file, export, exported type or dependency, and
// no dependency used but not listed. The entry points are in knip.jsonc; tests are entries,
// so what only a test uses counts as used. A finding fails here with knip's own report.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
// knip exports no package.json; its main is dist/index.js, its CLI bin/knip.js.
const CLI = resolve(createRequire(import.meta.url).resolve("knip"), "../../bin/knip.js");

test("knip finds no unused files, exports or dependencies", { timeout: 60_000 }, async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, CI: "true" };
  delete env.NODE_TEST_CONTEXT;
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, [CLI, "--no-progress"], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 55_000);
  const code = await new Promise<number | null>((res, rej) => {
    child.once("error", rej);
    child.once("exit", (c) => res(c));
  });
  clearTimeout(timer);
  assert.equal(code, 0, `knip found unused code (remove it, or un-export what only its own file uses):\n${out}`);
});
