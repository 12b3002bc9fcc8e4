// sealpost command line: serve | worker | start | migrate | keys.
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { ConfigError, loadConfig, type Config } from "./config.ts";
import { createLogger } from "./logger.ts";
import { databaseFor, openRuntime, type Runtime } from "./runtime.ts";
import { migrate, resolveRolledBack } from "./db/migrate.ts";
import { countActiveKeys, createApiKey, listApiKeys, revokeApiKey, SCOPES, type Scope } from "./services/api-keys.ts";
import { parseDomain } from "./domain/address.ts";
import { isPermissionDenied } from "./db/errors.ts";
import { startServer } from "./api/server.ts";
import { rotateDataKey } from "./services/rotate-data-key.ts";

const USAGE = `usage: sealpost <command>

  start                 API and delivery worker in one process (default of npm start)
  serve                 API only
  worker                delivery worker only
  migrate               apply database migrations
  migrate resolve --rolled-back <name>
                        mark a failed migration as rolled back so it can be retried
  keys create --name N [--scopes send,read] [--domains a.example,b.example|*] [--tls required] [--rate-limit N]
  keys list
  keys revoke <id>
  keys rotate-data      re-encrypt stored content under the first SEALPOST_DATA_KEY
`;

function out(line: string): void {
  process.stdout.write(line + "\n");
}

async function withRuntime<T>(config: Config, fn: (rt: Runtime) => Promise<T>): Promise<T> {
  const rt = await openRuntime(config, createLogger(config.LOG_LEVEL === "info" ? "warn" : config.LOG_LEVEL, process.stderr));
  try {
    return await fn(rt);
  } finally {
    await rt.close();
  }
}

async function keysCommand(config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === "create") {
    const { values } = parseArgs({
      args: rest,
      options: { name: { type: "string" }, scopes: { type: "string" }, domains: { type: "string" }, tls: { type: "string" }, "rate-limit": { type: "string" } },
      strict: true,
    });
    if (!values.name) throw new UsageError("keys create needs --name");
    const scopes = (values.scopes ?? "send,read").split(",").map((s) => s.trim());
    for (const s of scopes) if (!(SCOPES as readonly string[]).includes(s)) throw new UsageError(`unknown scope ${s} (use send, read)`);
    const domains = (values.domains ?? "*").split(",").map((s) => s.trim().toLowerCase());
    for (const d of domains) if (d !== "*" && !parseDomain(d).ok) throw new UsageError(`not a domain: ${d}`);
    if (values.tls && values.tls !== "required" && values.tls !== "opportunistic") throw new UsageError("--tls is required or opportunistic");
    const rate = values["rate-limit"] ? Number(values["rate-limit"]) : null;
    if (rate !== null && (!Number.isInteger(rate) || rate < 1)) throw new UsageError("--rate-limit is a positive whole number of requests per window");
    const { key, record } = await withRuntime(config, (rt) =>
      createApiKey(rt.db.prisma, { name: values.name!, scopes: scopes as Scope[], domains, tlsPolicy: (values.tls as "required" | undefined) ?? null, rateLimitPerMinute: rate }),
    );
    out(`created key ${record.id} (${record.name}); scopes ${record.scopes.join(",")}; domains ${record.allowedDomains.join(",")}`);
    out("store it now, it is not shown again:");
    out(key);
    return 0;
  }
  if (sub === "list") {
    const keys = await withRuntime(config, (rt) => listApiKeys(rt.db.prisma));
    for (const k of keys)
      out([k.id, JSON.stringify(k.name), k.scopes.join(","), k.allowedDomains.join(","), k.tlsPolicy ?? "-", k.createdAt.toISOString(), k.revokedAt ? `revoked ${k.revokedAt.toISOString()}` : "active"].join("\t"));
    return 0;
  }
  if (sub === "revoke") {
    const id = rest[0];
    if (!id) throw new UsageError("keys revoke needs a key id");
    const ok = await withRuntime(config, (rt) => revokeApiKey(rt.db.prisma, id));
    out(ok ? `revoked ${id}` : `no active key ${id}`);
    return ok ? 0 : 1;
  }
  if (sub === "rotate-data") {
    const { r, keyId } = await withRuntime(config, async (rt) => ({
      r: await rotateDataKey(rt.db.prisma, rt.cipher, { onBatch: (done) => process.stderr.write(`re-encrypted ${done} messages\n`) }),
      keyId: rt.cipher.currentKeyId,
    }));
    out(`re-encrypted ${r.rewritten} messages under data key ${keyId}`);
    if (r.retired.length > 0)
      out(`no stored content uses data key ${r.retired.join(", ")} any more: remove ${r.retired.length > 1 ? "them" : "it"} from SEALPOST_DATA_KEY once every process runs with ${keyId} first`);
    if (r.unreadable.length > 0) {
      out(`${r.unreadable.length} messages could not be decrypted and were left as they are: ${r.unreadable.join(", ")}`);
      return 1;
    }
    return 0;
  }
  throw new UsageError("keys create|list|revoke|rotate-data");
}

async function migrateCommand(config: Config, args: string[]): Promise<number> {
  const logger = createLogger(config.LOG_LEVEL, process.stderr);
  const { url, embedded } = await databaseFor(config, logger);
  try {
    if (args[0] === "resolve") {
      const { values } = parseArgs({ args: args.slice(1), options: { "rolled-back": { type: "string" } }, strict: true });
      if (!values["rolled-back"]) throw new UsageError("migrate resolve --rolled-back <name>");
      const ok = await resolveRolledBack(url, values["rolled-back"]);
      out(ok ? `marked ${values["rolled-back"]} as rolled back` : `no failed migration named ${values["rolled-back"]}`);
      return ok ? 0 : 1;
    }
    const r = await migrate(url, { log: logger });
    out(r.applied.length ? `applied: ${r.applied.join(", ")}` : `nothing to apply (${r.alreadyApplied.length} applied before)`);
    return 0;
  } finally {
    await embedded?.stop();
  }
}

async function run(config: Config, mode: "start" | "serve" | "worker"): Promise<number> {
  const logger = createLogger(config.LOG_LEVEL);
  const rt = await openRuntime(config, logger, { dataKeys: mode === "worker" ? "decrypts" : "encrypts" });
  const stops: Array<() => Promise<void>> = [];
  try {
    if (mode !== "worker" && (await countActiveKeys(rt.db.prisma)) === 0) {
      try {
        const { key, record } = await createApiKey(rt.db.prisma, { name: "initial" });
        // Printed once to the terminal, never logged.
        process.stdout.write(`\nNo API keys existed, so one was created (id ${record.id}, scopes send,read, any sender domain).\nStore it now, it is not shown again:\n\n  ${key}\n\n`);
      } catch (err) {
        // Under the least-privilege API role keys are the owner's to create.
        if (!isPermissionDenied(err)) throw err;
        logger.warn({}, "no API keys exist and this database role may not create one: run `sealpost keys create` as the database owner");
      }
    }
    if (mode !== "worker") {
      const server = await startServer(rt);
      stops.push(server.close);
      if (server.caFile) process.stdout.write(`HTTPS on ${server.url}; trust the development CA with: curl --cacert ${resolve(server.caFile)} ${server.url}/healthz\n`);
    }
    if (mode !== "serve") {
      const { startWorker } = await import("./worker/worker.ts");
      const worker = startWorker(rt);
      stops.push(() => worker.stop());
    }
  } catch (err) {
    for (const s of stops.reverse()) await s().catch(() => {});
    await rt.close();
    throw err;
  }
  await new Promise<void>((resolveSignal) => {
    const onSignal = (sig: string) => {
      logger.info({ signal: sig }, "shutting down");
      resolveSignal();
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  });
  const force = setTimeout(() => {
    logger.error({}, "shutdown took too long; exiting");
    process.exit(1);
  }, 30_000);
  force.unref();
  for (const s of stops.reverse()) await s().catch((err) => logger.error({ err }, "error while stopping"));
  await rt.close();
  logger.info({}, "stopped");
  return 0;
}

class UsageError extends Error {}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (!cmd || cmd === "help" || cmd === "--help" || cmd === "-h") {
      out(USAGE);
      return cmd ? 0 : 2;
    }
    const config = loadConfig();
    switch (cmd) {
      case "start":
      case "serve":
      case "worker":
        return await run(config, cmd);
      case "migrate":
        return await migrateCommand(config, rest);
      case "keys":
        return await keysCommand(config, rest);
      default:
        throw new UsageError(`unknown command ${cmd}`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`sealpost: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err instanceof ConfigError || (err instanceof Error && /DataKeyError|MigrationError/.test(err.name))) {
      process.stderr.write(`sealpost: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

/** Runs the CLI in this process and exits with its status (bin/sealpost.js and `node src/cli.ts`). */
export function runCli(): void {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`sealpost: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}

if (import.meta.url === `file://${process.argv[1]}`) runCli();
