#!/usr/bin/env node
// Runs every test/**/*.test.ts with node's test runner; Node >= 22.18 runs the
// TypeScript itself (erasable syntax only, see tsconfig.json). Each test file makes its own database,
// so files run in parallel. Extra arguments narrow the set: `npm test -- smtp`.
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { spawnSync } from "node:child_process";

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith(".test.ts") ? [p] : [];
  });
}

const filters = process.argv.slice(2);
const files = walk("test")
  .map((f) => relative(".", f))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error("no test files matched");
  process.exit(1);
}
const res = spawnSync(
  process.execPath,
  ["--test", "--test-concurrency=4", "--test-reporter=spec", ...files],
  { stdio: "inherit", env: { ...process.env, NODE_ENV: "test" } },
);
process.exit(res.status ?? 1);
