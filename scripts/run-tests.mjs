#!/usr/bin/env node
// Runs every test/**/*.test.ts with node's test runner; Node >= 22.18 runs the
// TypeScript itself (erasable syntax only, see tsconfig.json). Each test file makes its own database,
// so files run in parallel. Extra arguments narrow the set: `npm test -- smtp`; an argument
// that is the path of a file runs that file whatever its name (the leak guard's fixtures).
//
// Every file's process preloads test/helpers/leak-guard.ts, which fails a file that leaves
// an app, a worker, a server, a socket, a child process or a timer open; --test-force-exit
// then ends that process instead of letting what it left open hang the run.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";

const GUARD = pathToFileURL(resolve("test/helpers/leak-guard.ts")).href;

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith(".test.ts") ? [p] : [];
  });
}

const args = process.argv.slice(2);
const paths = args.filter((a) => a.endsWith(".ts") && existsSync(a) && statSync(a).isFile());
const filters = args.filter((a) => !paths.includes(a));
const files = [
  ...(filters.length > 0 || paths.length === 0
    ? walk("test").map((f) => relative(".", f)).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
    : []),
  ...paths.map((f) => relative(".", f)),
]
  .filter((f, i, all) => all.indexOf(f) === i)
  .sort();
if (files.length === 0) {
  console.error("no test files matched");
  process.exit(1);
}
const res = spawnSync(
  process.execPath,
  ["--test", "--test-concurrency=4", "--test-reporter=spec", "--test-force-exit", "--import", GUARD, ...files],
  { stdio: "inherit", env: { ...process.env, NODE_ENV: "test" } },
);
process.exit(res.status ?? 1);
