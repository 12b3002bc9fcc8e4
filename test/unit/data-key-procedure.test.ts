// The data key rotation procedure is written down where the refusals point: README,
// "Rotating the data key", with its steps in the order the checks enforce.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
const README = readFileSync(resolve(ROOT, "README.md"), "utf8");

function section(title: string): string {
  const start = README.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has a "## ${title}" section`);
  const end = README.indexOf("\n## ", start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

test("README documents the rotation steps in the order the checks enforce", () => {
  const s = section("Rotating the data key");
  const steps = [
    "1. Restart every process with `SEALPOST_DATA_KEY=k1:<old>,k2:<new>`",
    "2. Restart every process with `SEALPOST_DATA_KEY=k2:<new>,k1:<old>`",
    "3. Run `sealpost keys rotate-data` with that same value",
    "4. Restart every process with `SEALPOST_DATA_KEY=k2:<new>`",
  ];
  let at = -1;
  for (const step of steps) {
    const i = s.indexOf(step);
    assert.ok(i > at, `step in order: ${step}`);
    at = i;
  }
  assert.match(s, /refuses to start/);
  assert.match(s, /defers the delivery \(`4\.3\.5`/);
  assert.match(s, /`content_unreadable`/);
});

test("the refusals cite a README heading that exists", () => {
  const src = readFileSync(resolve(ROOT, "src/security/data-key-check.ts"), "utf8");
  const cited = [...src.matchAll(/README, "([^"]+)"/g)].map((m) => m[1]!);
  assert.ok(cited.length >= 2, "the refusals point to the README");
  for (const title of new Set(cited)) section(title);
});
