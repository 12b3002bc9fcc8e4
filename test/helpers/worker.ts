// A real delivery worker on a test database, configured like production through the
// environment schema (DNS_SERVERS, SMTP_MX_PORT, SMTP_CA_FILE ...), in this process or,
// for tests that kill it for real, in a child process.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { loadConfig, type Config } from "../../src/config.ts";
import { createDeliveryWorker, type WorkerHandle } from "../../src/worker/worker.ts";
import type { TestDatabase } from "./db.ts";
import type { ContentCipher } from "../../src/security/content-cipher.ts";
import { captureLogger, TEST_DATA_KEY, testCipher } from "./app.ts";
import { testCa } from "./smtp-peers.ts";
import { trackOpen } from "./leak-guard.ts";

let caFile: string | undefined;
/** The test CA as a file, for SMTP_CA_FILE; written once per process. */
export function testCaFile(): string {
  if (!caFile) {
    caFile = join(mkdtempSync(join(tmpdir(), "sp-ca-")), "ca.crt");
    writeFileSync(caFile, testCa().cert);
  }
  return caFile;
}

/** The environment of a test worker on `tdb` (also for a worker in a child process), `env` last. */
function testWorkerEnv(tdb: TestDatabase, env: Record<string, string>): Record<string, string> {
  return {
    NODE_ENV: "test",
    DATABASE_URL: tdb.url,
    SEALPOST_DATA_KEY: TEST_DATA_KEY,
    SMTP_CA_FILE: testCaFile(),
    SMTP_HELO_NAME: "sealpost.test",
    SMTP_CONNECT_TIMEOUT_MS: "2000",
    WORKER_POLL_MS: "25",
    WORKER_CONCURRENCY: "4",
    SMTP_RETRY_MIN: "50ms",
    SMTP_RETRY_MAX: "200ms",
    // Retries in tests come fast; so does the end of a throttling host's pause (destinations.ts).
    SMTP_THROTTLE_PAUSE: "50ms",
    ...env,
  };
}

function workerConfig(tdb: TestDatabase, env: Record<string, string>): Config {
  return loadConfig(testWorkerEnv(tdb, env));
}

/**
 * A worker on `tdb` (content key TEST_DATA_KEY unless `cipher` is given). `stop` may be
 * called more than once (early in a test, and again when it ends): the first call's grace
 * applies and every call waits for the same stop.
 */
export function startTestWorker(
  tdb: TestDatabase,
  env: Record<string, string>,
  logs: string[] = [],
  opts: { cipher?: ContentCipher } = {},
): WorkerHandle & { config: Config } {
  const config = workerConfig(tdb, env);
  const w = createDeliveryWorker({ config, pool: tdb.db.pool, cipher: opts.cipher ?? testCipher(), logger: captureLogger(logs, "info"), resolver: { timeoutMs: 500, tries: 1 } });
  const stopped = trackOpen(`delivery worker ${w.id}`, "startTestWorker", "stop()");
  const stop = w.stop.bind(w);
  let stopping: Promise<void> | undefined;
  return Object.assign(w, { config, stop: (graceMs?: number) => (stopping ??= stop(graceMs).then(stopped)) });
}

export interface WorkerChild {
  child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output: string[];
  exited: Promise<unknown[]>;
}

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const WORKER_CHILD = fileURLToPath(new URL("./worker-child.ts", import.meta.url));

/**
 * A worker in a process of its own (worker-child.ts, built as `sealpost worker` builds it)
 * with the settings of startTestWorker and `env`, for tests that kill it for real; killed
 * with SIGKILL when the test ends if it still runs.
 */
export function spawnTestWorker(t: TestContext, tdb: TestDatabase, env: Record<string, string>): WorkerChild {
  const output: string[] = [];
  const child = spawn(process.execPath, [WORKER_CHILD], {
    cwd: REPO,
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH ?? "", LOG_LEVEL: "info", ...testWorkerEnv(tdb, env) },
  });
  child.stdout.on("data", (c: Buffer) => output.push(String(c)));
  child.stderr.on("data", (c: Buffer) => output.push(String(c)));
  const exited = once(child, "exit");
  t.after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGKILL");
    await exited;
  });
  return { child, output, exited };
}
