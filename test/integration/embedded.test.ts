// `npm start` on a machine with nothing but Node: no DATABASE_URL, no data key, no
// certificates. The real CLI runs as a child process on the embedded database (PGlite
// under DATA_DIR), creates its development CA, data key and first API key, accepts a
// message, stops cleanly on SIGTERM, and after a restart on the same DATA_DIR still
// has the message and can decrypt it.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { request, type Response } from "../helpers/https-client.ts";
import { validSend } from "../helpers/app.ts";
import { freePort } from "../helpers/cli-process.ts"; // the CLI prints its URL, but PORT=0 would leave us parsing it
import { waitFor } from "../helpers/wait.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const KEY_RE = /sp_[0-9a-f]{16}_[a-z2-7]{52}/g;

const tmp = mkdtempSync(join(tmpdir(), "sealpost-embedded-"));
const DATA_DIR = join(tmp, "data");
const CERTS_DIR = join(tmp, "certs");
const children = new Set<ChildProcess>();

after(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await gone;
    }
  }
  rmSync(tmp, { recursive: true, force: true });
});

interface Cli {
  child: ChildProcess;
  port: number;
  output(): { stdout: string; stderr: string };
  exited: Promise<number | null>;
}

function cliEnv(port: number, dataDir = DATA_DIR): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ["DATABASE_URL", "SEALPOST_DATA_KEY", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE", "NODE_TEST_CONTEXT"]) delete env[k];
  return Object.assign(env, { NODE_ENV: "development", DATA_DIR: dataDir, CERTS_DIR, HOST: "127.0.0.1", PORT: String(port), LOG_LEVEL: "info" });
}

async function startCli(dataDir = DATA_DIR): Promise<Cli> {
  const port = await freePort();
  const child = spawn(process.execPath, ["src/cli.ts", "serve"], { cwd: ROOT, env: cliEnv(port, dataDir), stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, port, output: () => ({ stdout, stderr }), exited };
}

/** Poll /healthz until it answers over TLS verified by the CA the CLI generated. */
async function waitHealthy(cli: Cli, deadlineMs = 60_000): Promise<string> {
  const caFile = join(CERTS_DIR, "ca.crt");
  let last = "no CA file yet";
  return waitFor(
    async () => {
      if (!existsSync(caFile)) return null;
      const ca = readFileSync(caFile, "utf8");
      try {
        const r = await request(`https://127.0.0.1:${cli.port}/healthz`, { ca, timeoutMs: 2000 });
        if (r.status === 200) return ca;
        last = `status ${r.status}`;
      } catch (err) {
        last = String(err);
      }
      return null;
    },
    {
      timeoutMs: deadlineMs,
      intervalMs: 100, // while the CLI starts
      what: () => `/healthz to answer (${last}):\n${cli.output().stdout}\n${cli.output().stderr}`,
      failFast: () => assert.equal(cli.child.exitCode, null, `the CLI exited early:\n${cli.output().stdout}\n${cli.output().stderr}`),
    },
  );
}

async function stop(cli: Cli): Promise<void> {
  cli.child.kill("SIGTERM");
  const code = await cli.exited;
  assert.equal(code, 0, `exit code after SIGTERM:\n${cli.output().stderr}`);
}

const call = (cli: Cli, ca: string, method: string, path: string, key: string, body?: unknown, timeoutMs?: number): Promise<Response> =>
  request(`https://127.0.0.1:${cli.port}${path}`, { method, ca, body, headers: { authorization: `Bearer ${key}` }, ...(timeoutMs ? { timeoutMs } : {}) });

test("without DATABASE_URL the CLI runs on the embedded database and keeps data across a restart", { timeout: 180_000 }, async () => {
  // First start: everything is created.
  const first = await startCli();
  const ca = await waitHealthy(first);
  const printed = first.output().stdout.match(KEY_RE) ?? [];
  assert.equal(printed.length, 1, `exactly one key printed, once:\n${first.output().stdout}`);
  assert.ok(!first.output().stderr.includes(printed[0]!), "the key never reaches the logs");
  const key = printed[0]!;

  const sent = await call(first, ca, "POST", "/send", key, validSend({ subject: "Survives a restart" }));
  assert.equal(sent.status, 202, sent.body);
  const id: string = sent.json().id;
  await stop(first);

  // Secrets on disk are readable by the owner only.
  assert.equal(statSync(join(DATA_DIR, "data-key")).mode & 0o777, 0o600);
  assert.equal(statSync(join(CERTS_DIR, "server.key")).mode & 0o777, 0o600);
  assert.equal(statSync(join(CERTS_DIR, "ca.key")).mode & 0o777, 0o600);
  const dataKey = readFileSync(join(DATA_DIR, "data-key"), "utf8");

  // Second start on the same DATA_DIR and CERTS_DIR: same CA, same data key, no new API key.
  const second = await startCli();
  const ca2 = await waitHealthy(second);
  assert.equal(ca2, ca, "the development CA is reused, so a client that trusts it keeps working");
  assert.equal(readFileSync(join(DATA_DIR, "data-key"), "utf8"), dataKey, "the data key file is reused");
  const got = await call(second, ca, "GET", `/messages/${id}`, key);
  assert.equal(got.status, 200, got.body);
  // While it runs, `keys create` from another process uses the running database
  // (PGlite must never be opened twice) and the new key works at once.
  const lock = JSON.parse(readFileSync(join(DATA_DIR, "pglite.lock"), "utf8"));
  assert.equal(lock.pid, second.child.pid);
  const created = spawnSync(process.execPath, ["src/cli.ts", "keys", "create", "--name", "second"], {
    cwd: ROOT, env: cliEnv(0), encoding: "utf8", timeout: 60_000,
  });
  assert.equal(created.status, 0, created.stderr);
  const key2 = created.stdout.match(KEY_RE)?.[0];
  assert.ok(key2, created.stdout);
  const listed = await call(second, ca, "GET", "/messages?limit=1", key2);
  assert.equal(listed.status, 200, listed.body);
  assert.equal(got.json().id, id);
  // The subject is stored encrypted: reading it back proves the data key survived too.
  assert.equal(got.json().subject, "Survives a restart");
  await stop(second);
  assert.equal(second.output().stdout.match(KEY_RE), null, `no second key printed:\n${second.output().stdout}`);
  assert.ok(!/No API keys existed/.test(second.output().stdout));
  assert.ok(!existsSync(join(DATA_DIR, "pglite.lock")), "a clean stop releases the embedded database");
});

test("20 concurrent sends of about 1 MB each on the embedded database are all accepted and stored", { timeout: 300_000 }, async () => {
  // Every pool connection shares the one PGlite session: a 1 MB insert arrives in many
  // TCP pieces while other connections send theirs, and no statement may run against
  // another connection's prepared statement (this used to answer 500 with 08P01).
  const cli = await startCli(join(tmp, "data-concurrent"));
  const ca = await waitHealthy(cli);
  const key = cli.output().stdout.match(KEY_RE)?.[0];
  assert.ok(key, cli.output().stdout);
  const attachment = (i: number) => Buffer.alloc(760 * 1024, i).toString("base64"); // ~1 MB of JSON per request
  const sends = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      call(cli, ca, "POST", "/send", key, validSend({
        subject: `Concurrent ${i}`,
        attachments: [{ filename: `f${i}.bin`, content: attachment(i), content_type: "application/octet-stream" }],
      }), 120_000), // 20 MB through one database session: seconds on a busy machine
    ),
  );
  const logged = () => (cli.output().stdout + cli.output().stderr).split("\n").filter((l) => /"level":(40|50|60)/.test(l)).join("\n");
  assert.deepEqual(sends.map((r) => r.status), Array(20).fill(202), `${sends.filter((r) => r.status !== 202).map((r) => r.body).join("\n")}\n${logged()}`);
  const ids = sends.map((r) => r.json().id as string);
  assert.equal(new Set(ids).size, 20);
  for (const [i, id] of ids.entries()) {
    const got = await call(cli, ca, "GET", `/messages/${id}`, key);
    assert.equal(got.status, 200, got.body);
    assert.equal(got.json().subject, `Concurrent ${i}`, "stored, and decrypts to what was sent");
  }
  assert.ok(!/08P01|prepared statement/.test(cli.output().stdout + cli.output().stderr), "no protocol error was logged");
  await stop(cli);
});

test("a data key file that cannot read the embedded database is refused at start, in one line", { timeout: 120_000 }, async () => {
  // The data directory of the first test, whose content is under its data-key file; a
  // new key file (the old one lost) must not start serving and fail every read later.
  const saved = readFileSync(join(DATA_DIR, "data-key"), "utf8");
  writeFileSync(join(DATA_DIR, "data-key"), `k1:${randomBytes(32).toString("base64")}\n`, { mode: 0o600 });
  try {
    const r = spawnSync(process.execPath, ["src/cli.ts", "serve"], { cwd: ROOT, env: cliEnv(await freePort()), encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 1, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^sealpost: SEALPOST_DATA_KEY holds a different key under id k1 .* \(SEALPOST_DATA_KEY is not set: the key came from .*data-key\)$/);
    assert.ok(!existsSync(join(DATA_DIR, "pglite.lock")), "the embedded database was closed");
  } finally {
    writeFileSync(join(DATA_DIR, "data-key"), saved, { mode: 0o600 });
  }
});
