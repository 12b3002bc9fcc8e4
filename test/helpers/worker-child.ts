// A delivery worker in a process of its own, configured only from the environment and
// built by startWorker() exactly as `sealpost worker` builds it, for tests that must kill
// a worker for real (SIGKILL leaves no chance to clean up, unlike anything in-process).
// Run: node test/helpers/worker-child.ts with DATABASE_URL, WORKER_ID ... set.
// Prints "ready <worker id>" on stdout once it polls; logs go to stderr. SIGTERM stops it
// gracefully.
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { openRuntime } from "../../src/runtime.ts";
import { startWorker } from "../../src/worker/worker.ts";

// The test database is migrated already; migrating again would only add start-up time.
const config = loadConfig({ ...process.env, MIGRATE_ON_START: "false" });
const logger = createLogger(config.LOG_LEVEL, process.stderr);
const rt = await openRuntime(config, logger);
const worker = startWorker(rt);
process.stdout.write(`ready ${worker.id}\n`);

process.once("SIGTERM", () => {
  void (async () => {
    await worker.stop(5000);
    await rt.close();
    process.exit(0);
  })();
});
