// `sealpost healthcheck serve|worker|inbound`, as the compose file runs them: the same
// environment as the process checked, verified TLS against the certificate's own name,
// and a production API that never prints a first key into its logs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { createCa, issueCertificate } from "../../src/tls/certificates.ts";
import { createTestDatabase } from "../helpers/db.ts";
import { childEnv, exitWithin, freePort, ROOT, spawnCli } from "../helpers/cli-process.ts";

function healthcheck(kind: "serve" | "worker" | "inbound", env: Record<string, string>) {
  const r = spawnSync(process.execPath, ["src/cli.ts", "healthcheck", kind], { cwd: ROOT, env: childEnv(env), encoding: "utf8", timeout: 30_000 });
  return { code: r.status, out: (r.stdout + r.stderr).trim() };
}

test("healthcheck serve: healthy over verified TLS for the certificate's own name; unhealthy once the API is gone", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  const dir = mkdtempSync(join(tmpdir(), "sp-health-"));
  const ca = createCa("health test CA");
  // A name other than localhost: the check must take it from the certificate, not assume it.
  const leaf = issueCertificate({ names: ["api.shop.test"], ca });
  writeFileSync(join(dir, "ca.crt"), ca.cert);
  writeFileSync(join(dir, "server.crt"), leaf.cert);
  writeFileSync(join(dir, "server.key"), leaf.key, { mode: 0o600 });
  const port = await freePort();
  const env = {
    NODE_ENV: "production", DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: Buffer.alloc(32, 7).toString("base64"),
    TLS_CERT_FILE: join(dir, "server.crt"), TLS_KEY_FILE: join(dir, "server.key"), TLS_CA_FILE: join(dir, "ca.crt"),
    HOST: "127.0.0.1", PORT: String(port), DATA_DIR: join(dir, "data"),
  };
  const before = healthcheck("serve", env);
  assert.equal(before.code, 1, before.out);
  assert.match(before.out, /^sealpost: unhealthy: https:\/\/127\.0\.0\.1:\d+\/readyz: .*ECONNREFUSED/);

  const api = spawnCli(process.execPath, ["src/cli.ts", "serve"], env);
  t.after(() => api.kill());
  await api.waitForLine(/API listening/, "the API to listen");
  // Production: the first key is the operator's to create with the CLI, never printed here.
  await api.waitForLine(/no API key exists yet: create one with `sealpost keys create/, "the first-key notice");
  assert.doesNotMatch(api.output(), /sp_[A-Za-z0-9]+_[A-Za-z0-9]/);

  const ok = healthcheck("serve", env);
  assert.equal(ok.code, 0, ok.out);
  assert.equal(ok.out, `sealpost: healthy: ready on https://api.shop.test:${port}`);

  // A CA that did not issue the certificate: verification is on, so the check fails.
  const other = createCa("someone else");
  writeFileSync(join(dir, "other-ca.crt"), other.cert);
  const untrusted = healthcheck("serve", { ...env, TLS_CA_FILE: join(dir, "other-ca.crt") });
  assert.equal(untrusted.code, 1, untrusted.out);
  assert.match(untrusted.out, /unable to verify|self.signed|certificate/i);

  api.child.kill("SIGTERM");
  const { code } = await exitWithin(api, 20_000, "the API");
  assert.equal(code, 0);
  const after = healthcheck("serve", env);
  assert.equal(after.code, 1, after.out);
});

test("healthcheck worker: healthy while the delivery loop goes round, unhealthy when its heartbeat is stale or gone", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  const dir = mkdtempSync(join(tmpdir(), "sp-health-"));
  const env = { DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: Buffer.alloc(32, 7).toString("base64"), DATA_DIR: join(dir, "data"), WORKER_POLL_MS: "50" };
  const none = healthcheck("worker", env);
  assert.equal(none.code, 1, none.out);
  assert.match(none.out, /no worker heartbeat at .*worker\.heartbeat: is `sealpost worker` running with this DATA_DIR\?/);

  const worker = spawnCli(process.execPath, ["src/cli.ts", "worker"], env);
  t.after(() => worker.kill());
  await worker.waitForLine(/delivery worker started/, "the worker to start");
  const ok = healthcheck("worker", env);
  assert.equal(ok.code, 0, ok.out);
  assert.match(ok.out, /^sealpost: healthy: worker loop went round \d+ s ago$/);

  worker.child.kill("SIGTERM");
  assert.equal((await exitWithin(worker, 20_000, "the worker")).code, 0);
  const gone = healthcheck("worker", env);
  assert.equal(gone.code, 1, gone.out);

  // A heartbeat file whose loop time is old: a stuck loop in a live process.
  writeFileSync(join(dir, "data", "worker.heartbeat"), JSON.stringify({ at: Date.now() - 10 * 60_000, pid: 1, worker: "w" }));
  const stale = healthcheck("worker", env);
  assert.equal(stale.code, 1, stale.out);
  assert.match(stale.out, /the worker's loop last went round 60\d s ago/);
});

test("healthcheck inbound: unhealthy before sealpost inbound listens, healthy once it greets, and it stops cleanly on SIGTERM", async (t) => {
  const tdb = await createTestDatabase();
  t.after(() => tdb.drop());
  const dir = mkdtempSync(join(tmpdir(), "sp-health-"));
  const leaf = issueCertificate({ names: ["bounce-in.shop.test"], ca: createCa("inbound test CA") });
  writeFileSync(join(dir, "server.crt"), leaf.cert);
  writeFileSync(join(dir, "server.key"), leaf.key, { mode: 0o600 });
  const port = await freePort();
  const env = {
    NODE_ENV: "production", DATABASE_URL: tdb.url, SEALPOST_DATA_KEY: Buffer.alloc(32, 7).toString("base64"), DATA_DIR: join(dir, "data"),
    TLS_CERT_FILE: join(dir, "server.crt"), TLS_KEY_FILE: join(dir, "server.key"), INBOUND_LISTEN: `127.0.0.1:${port}`, SMTP_HELO_NAME: "bounce-in.shop.test",
  };
  const before = healthcheck("inbound", env);
  assert.equal(before.code, 1, before.out);
  assert.match(before.out, new RegExp(`^sealpost: unhealthy: cannot connect to the bounce receiver on 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`));

  const inbound = spawnCli(process.execPath, ["src/cli.ts", "inbound"], env);
  t.after(() => inbound.kill());
  await inbound.waitForLine(/bounce receiver listening on 127\.0\.0\.1/, "the bounce receiver to listen");
  const ok = healthcheck("inbound", env);
  assert.equal(ok.code, 0, ok.out);
  assert.match(ok.out, new RegExp(`^sealpost: healthy: the bounce receiver on 127\\.0\\.0\\.1:${port} greets: 220 bounce-in\\.shop\\.test ESMTP`));

  inbound.child.kill("SIGTERM");
  assert.equal((await exitWithin(inbound, 20_000, "the bounce receiver")).code, 0);
});
