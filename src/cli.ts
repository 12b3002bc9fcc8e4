// sealpost command line: serve | worker | start | migrate | keys | domains.
//
// The command line is parsed in full before anything else happens: `--help` anywhere
// prints that command's usage and touches nothing, and a mistyped word is a usage error
// (exit 2). Mistakes in the environment print one line saying what to change (exit 1);
// only an error nobody foresaw says "unexpected", and LOG_LEVEL=debug adds its stack.
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import type { Logger } from "pino";
import { bounceMxHost, ConfigError, loadConfig, verifySettings, type Config } from "./config.ts";
import { createLogger, errorFields } from "./logger.ts";
import type { Runtime } from "./runtime.ts";
import { migrate, MigrationError, resolveRolledBack } from "./db/migrate.ts";
import type { SenderDomainView } from "./services/sender-domains.ts";
import { countActiveKeys, createApiKey, DEFAULT_SCOPES, listApiKeys, revokeApiKey, SCOPES, type Scope } from "./services/api-keys.ts";
import { parseDomain } from "./domain/address.ts";
import { editDistance } from "./domain/edit-distance.ts";
import { errorChain, isPermissionDenied } from "./db/errors.ts";
import { AppError } from "./domain/errors.ts";
import { DataKeyError } from "./security/data-keys.ts";

// The runtime (Prisma, PGlite) and the HTTPS server (Fastify) are loaded only by the
// commands that use them, so --help and usage errors answer at once.
const runtime = () => import("./runtime.ts");

// ---------------------------------------------------------------------------------------
// Commands and their usage

type OptionSpec = { type: "string" | "boolean" };

interface CommandSpec {
  /** The words after `sealpost`. */
  path: string;
  usage: string;
  options?: Record<string, OptionSpec>;
  /** Options that must be given. */
  required?: string[];
  /** Names of the positional arguments, all required. */
  positionals?: string[];
  /** Sub-commands, for `keys` and `migrate`. */
  sub?: string[];
}

const STOPPING = `SIGTERM or SIGINT (Ctrl-C) stops it cleanly and it exits 0: the API stops accepting and
finishes the requests it has, the worker hands back what it claimed but has not started and gives
deliveries in flight SHUTDOWN_GRACE (default 8s) to finish before handing them back too. Further
signals while it stops are ignored; a stop that hangs is forced after 30 s (exit 1).`;

const DATABASE = `Uses DATABASE_URL, or without it the embedded database in DATA_DIR (default ./data).`;

const COMMANDS: Record<string, CommandSpec> = {
  "": {
    path: "",
    sub: ["start", "serve", "worker", "inbound", "migrate", "keys", "domains", "webhooks", "suppressions", "healthcheck", "help"],
    usage: `usage: sealpost <command> [options]

  start                 API and delivery worker in one process (what npm start runs)
  serve                 HTTPS API only
  worker                delivery worker only
  inbound               bounce receiver only: SMTP on INBOUND_LISTEN (default 0.0.0.0:25) for bounces and complaints
  migrate               apply database migrations
  migrate resolve --rolled-back <name>
                        mark a failed migration as rolled back so it can run again
  keys create --name N [--scopes send,read] [--domains a.example,b.example|*] [--tls required] [--rate-limit N]
  keys list
  keys revoke <id>
  keys rotate-data      re-encrypt stored content under the first SEALPOST_DATA_KEY
  domains add <domain> [--bounce-domain B]
                        add a sender domain: makes its DKIM keys, prints the DNS records to publish
  domains list | show <domain> [--zone] | verify <domain> | remove <domain>
  webhooks add <url> --key ID [--events T,T] [--description D]
                        register a webhook endpoint for an API key's events; prints its secret once
  webhooks list | show | enable | disable | rotate-secret | test | deliveries | retry | remove
  suppressions list [--domain D] [--reason R] | add <address> --domain D | remove <address> [--domain D]
                        addresses a sender domain no longer mails (hard bounces, complaints, by hand)
  healthcheck serve|worker|inbound
                        exit 0 when the API on this host answers /readyz, the worker's loop runs,
                        or the bounce receiver greets

Every command takes -h or --help. Settings come from environment variables (README.md).`,
  },
  start: {
    path: "start",
    usage: `usage: sealpost start

Runs the HTTPS API and the delivery worker in one process, after applying pending
migrations (MIGRATE_ON_START). With no API key in the database it creates one and
prints it once. ${DATABASE}

${STOPPING}`,
  },
  serve: {
    path: "serve",
    usage: `usage: sealpost serve

Runs the HTTPS API only (any number of API processes may share one database), after
applying pending migrations (MIGRATE_ON_START). ${DATABASE}

${STOPPING}`,
  },
  inbound: {
    path: "inbound",
    usage: `usage: sealpost inbound

Runs the bounce receiver only: an SMTP server on INBOUND_LISTEN (default 0.0.0.0:25) that
takes delivery status notifications and complaints sent to the bounce addresses of the
verified bounce domains, and records them (README, "Bounces that come back later").
\`start\` runs it too when INBOUND_LISTEN is set. ${DATABASE}

${STOPPING}`,
  },
  worker: {
    path: "worker",
    usage: `usage: sealpost worker

Runs the delivery worker only (any number of workers may share one database). Its first
log line says where mail goes (SMTP_RELAY_URL or direct MX), which CA it trusts and under
which TLS policy. ${DATABASE}

${STOPPING}`,
  },
  migrate: {
    path: "migrate",
    sub: ["resolve"],
    usage: `usage: sealpost migrate
       sealpost migrate resolve --rolled-back <name>

Applies the migrations under prisma/migrations that the database does not have yet, and
records them in _prisma_migrations as prisma migrate deploy does. ${DATABASE}`,
  },
  "migrate resolve": {
    path: "migrate resolve",
    options: { "rolled-back": { type: "string" } },
    required: ["rolled-back"],
    usage: `usage: sealpost migrate resolve --rolled-back <name>

Marks the failed migration <name> as rolled back, so that the next migrate runs it again
(after you fixed what made it fail). Changes nothing else.`,
  },
  keys: {
    path: "keys",
    sub: ["create", "list", "revoke", "rotate-data", "rotate-receipt"],
    usage: `usage: sealpost keys <create|list|revoke|rotate-data|rotate-receipt> [options]

  keys create --name N [--scopes send,read] [--domains a.example,b.example|*] [--tls required] [--rate-limit N]
  keys list
  keys revoke <id>
  keys rotate-data
  keys rotate-receipt

Run sealpost keys <command> --help for each. ${DATABASE}`,
  },
  "keys create": {
    path: "keys create",
    options: { name: { type: "string" }, scopes: { type: "string" }, domains: { type: "string" }, tls: { type: "string" }, "rate-limit": { type: "string" } },
    required: ["name"],
    usage: `usage: sealpost keys create --name N [options]

Creates an API key and prints it once (only a hash of its secret is stored).

  --name N              what the key is for (required)
  --scopes LIST         any of send, read, admin, comma separated (default send,read);
                        admin manages sender domains (/domains)
  --domains LIST        sender domains it may use in from, comma separated, or * for any (default *)
  --tls POLICY          the key's default TLS policy: required or opportunistic
  --rate-limit N        requests per RATE_LIMIT_KEY_WINDOW_MS for this key (default RATE_LIMIT_KEY_MAX)

${DATABASE}`,
  },
  "keys list": {
    path: "keys list",
    usage: `usage: sealpost keys list

Lists the API keys, one a line: id, name, scopes, sender domains, TLS policy, created,
active or revoked. Never shows a secret. ${DATABASE}`,
  },
  "keys revoke": {
    path: "keys revoke",
    positionals: ["id"],
    usage: `usage: sealpost keys revoke <id>

Revokes the key with this id (the part after sp_ in the key, or the first column of keys
list). Servers stop accepting it within API_KEY_CACHE_TTL_MS. ${DATABASE}`,
  },
  "keys rotate-data": {
    path: "keys rotate-data",
    usage: `usage: sealpost keys rotate-data

Re-encrypts stored content under the first key of SEALPOST_DATA_KEY; every key listed
there may still decrypt. ${DATABASE}`,
  },
  "keys rotate-receipt": {
    path: "keys rotate-receipt",
    usage: `usage: sealpost keys rotate-receipt

Makes a new Ed25519 key to sign delivery receipts; the current one signs no more but stays
in /.well-known/jwks.json, so the receipts it signed still verify. API processes sign with
the new key within a minute. ${DATABASE}`,
  },
  domains: {
    path: "domains",
    sub: ["add", "list", "show", "verify", "rotate-dkim", "remove"],
    usage: `usage: sealpost domains <add|list|show|verify|rotate-dkim|remove> [options]

  domains add <domain> [--bounce-domain B]
  domains list
  domains show <domain>
  domains verify <domain>
  domains rotate-dkim <domain>
  domains remove <domain>

Sender domains: mail from a domain is DKIM-signed once its records are published
(README, "Set up your sending domain"). <domain> is its name or its id. Run sealpost
domains <command> --help for each. ${DATABASE}`,
  },
  "domains add": {
    path: "domains add",
    positionals: ["domain"],
    options: { "bounce-domain": { type: "string" } },
    usage: `usage: sealpost domains add <domain> [--bounce-domain B]

Adds a sender domain, makes its DKIM key pairs (RSA-2048 and Ed25519, private keys
encrypted with SEALPOST_DATA_KEY) and prints the DNS records to publish, one a line:
name, type, value.

  --bounce-domain B     a subdomain of <domain> for the envelope sender (Return-Path)

${DATABASE}`,
  },
  "domains list": {
    path: "domains list",
    usage: `usage: sealpost domains list

Lists the sender domains, one a line: id, name, status (pending or verified), bounce
domain, DKIM selectors. ${DATABASE}`,
  },
  "domains show": {
    path: "domains show",
    positionals: ["domain"],
    options: { zone: { type: "boolean" } },
    usage: `usage: sealpost domains show <domain> [--zone]

Shows a sender domain, its DKIM keys (pending, active, retiring with the time it
retires, retired) and the DNS records to publish, one a line: the state the last verify
found (or unchecked), name, type, value.

  --zone    only the records, as zone-file lines to paste into a zone (or to give
            \`npm run sink\`'s DNS): long TXT values split in 255-character strings

${DATABASE}`,
  },
  "domains rotate-dkim": {
    path: "domains rotate-dkim",
    positionals: ["domain"],
    usage: `usage: sealpost domains rotate-dkim <domain>

Makes a new RSA-2048 and Ed25519 key pair under new selectors and prints the records to
publish beside the current ones. The current keys sign until the new records verify
(domains verify); then the new keys sign and the old ones stay published for
DKIM_ROTATION_GRACE (7d) before they retire. ${DATABASE}`,
  },
  "domains verify": {
    path: "domains verify",
    positionals: ["domain"],
    usage: `usage: sealpost domains verify <domain>

Checks the domain's DNS records through the worker's resolver (DNS_SERVERS) and prints
each one's state: ok, missing, mismatch (with what was found and what is expected),
invalid, or pending when DNS did not answer. Exit 0 once verified, 1 when a DKIM
record is missing or wrong, 3 when DNS did not answer (try again). ${DATABASE}`,
  },
  "domains remove": {
    path: "domains remove",
    positionals: ["domain"],
    usage: `usage: sealpost domains remove <domain>

Removes a sender domain and its DKIM keys; mail from it is no longer signed. ${DATABASE}`,
  },
  webhooks: {
    path: "webhooks",
    sub: ["add", "list", "show", "enable", "disable", "rotate-secret", "test", "deliveries", "retry", "remove"],
    usage: `usage: sealpost webhooks <add|list|show|enable|disable|rotate-secret|test|deliveries|retry|remove> [options]

  webhooks add <url> --key ID [--events T,T] [--description D]
  webhooks list [--key ID]
  webhooks show <id>
  webhooks enable <id> | disable <id>
  webhooks rotate-secret <id>
  webhooks test <id>
  webhooks deliveries <id>
  webhooks retry <id> [--since TIME]
  webhooks remove <id>

Webhook endpoints receive the events of one API key, signed per Standard Webhooks
(README, "Webhooks"). ID is the key's id (keys list). ${DATABASE}`,
  },
  suppressions: {
    path: "suppressions",
    sub: ["list", "add", "remove"],
    usage: `usage: sealpost suppressions <list|add|remove> [options]

  suppressions list [--domain D] [--reason hard_bounce|complaint|manual] [--address A]
  suppressions add <address> --domain D [--description TEXT]
  suppressions remove <address> [--domain D]

Each sender domain has its own suppression list (README, "Suppression list"). ${DATABASE}`,
  },
  "suppressions list": {
    path: "suppressions list",
    options: { domain: { type: "string" }, reason: { type: "string" }, address: { type: "string" } },
    usage: `usage: sealpost suppressions list [--domain D] [--reason R] [--address A]

Lists suppressed addresses, newest first, one a line: address, sender domain, reason,
when, and the reply that put it there. ${DATABASE}`,
  },
  "suppressions add": {
    path: "suppressions add",
    positionals: ["address"],
    options: { domain: { type: "string" }, description: { type: "string" } },
    required: ["domain"],
    usage: `usage: sealpost suppressions add <address> --domain D [--description TEXT]

Stops mail from sender domain D to the address (reason manual). ${DATABASE}`,
  },
  "suppressions remove": {
    path: "suppressions remove",
    positionals: ["address"],
    options: { domain: { type: "string" } },
    usage: `usage: sealpost suppressions remove <address> [--domain D]

Mails the address again: removes it from D's list, or from every list. ${DATABASE}`,
  },
  "webhooks add": {
    path: "webhooks add",
    positionals: ["url"],
    options: { key: { type: "string" }, events: { type: "string" }, description: { type: "string" } },
    required: ["key"],
    usage: `usage: sealpost webhooks add <url> --key ID [--events T,T] [--description D]

Registers an https:// endpoint for the events of API key ID and prints its signing
secret (whsec_...) once.

  --key ID              the API key whose events it receives (keys list)
  --events LIST         event types, comma separated (default: all), e.g.
                        message.delivered,message.bounced,message.failed
  --description D       what it is for

${DATABASE}`,
  },
  "webhooks list": {
    path: "webhooks list",
    options: { key: { type: "string" } },
    usage: `usage: sealpost webhooks list [--key ID]

Lists webhook endpoints, one a line: id, key, enabled or disabled (and why), event
types, URL. ${DATABASE}`,
  },
  "webhooks show": { path: "webhooks show", positionals: ["id"], usage: `usage: sealpost webhooks show <id>\n\nShows a webhook endpoint. ${DATABASE}` },
  "webhooks enable": {
    path: "webhooks enable", positionals: ["id"],
    usage: `usage: sealpost webhooks enable <id>\n\nResumes deliveries to an endpoint, also one disabled for failing or for 410 Gone. ${DATABASE}`,
  },
  "webhooks disable": {
    path: "webhooks disable", positionals: ["id"],
    usage: `usage: sealpost webhooks disable <id>\n\nPauses deliveries to an endpoint; they wait until it is enabled. ${DATABASE}`,
  },
  "webhooks rotate-secret": {
    path: "webhooks rotate-secret", positionals: ["id"],
    usage: `usage: sealpost webhooks rotate-secret <id>\n\nPrints a new signing secret once; the previous one also signs for 24 hours. ${DATABASE}`,
  },
  "webhooks test": {
    path: "webhooks test", positionals: ["id"],
    usage: `usage: sealpost webhooks test <id>\n\nQueues a signed webhook.test delivery; a running worker sends it (see webhooks deliveries). ${DATABASE}`,
  },
  "webhooks deliveries": {
    path: "webhooks deliveries", positionals: ["id"],
    usage: `usage: sealpost webhooks deliveries <id>\n\nThe endpoint's latest deliveries, one a line: id, event, state, attempts, last status or error. ${DATABASE}`,
  },
  "webhooks retry": {
    path: "webhooks retry", positionals: ["id"], options: { since: { type: "string" } },
    usage: `usage: sealpost webhooks retry <id> [--since TIME]\n\nMakes the endpoint's failed deliveries (those created since TIME, an ISO 8601 time, if given) due again. ${DATABASE}`,
  },
  "webhooks remove": {
    path: "webhooks remove", positionals: ["id"],
    usage: `usage: sealpost webhooks remove <id>\n\nRemoves an endpoint, its pending deliveries and its log. ${DATABASE}`,
  },
  healthcheck: {
    path: "healthcheck",
    sub: ["serve", "worker", "inbound"],
    usage: `usage: sealpost healthcheck <serve|worker|inbound>

For container health checks, with the same environment as the process checked.
  healthcheck serve     GET /readyz on this host's PORT over HTTPS, verifying the certificate
                        against the name in TLS_CERT_FILE (or the development CA); exit 0 on 200
  healthcheck worker    the worker's heartbeat file in DATA_DIR shows its delivery loop went round
                        in the last two minutes; exit 0 if so
  healthcheck inbound   the bounce receiver on INBOUND_LISTEN (on this host) greets with 220; exit 0 if so
Prints one line saying what it found.`,
  },
  "healthcheck serve": { path: "healthcheck serve", usage: "usage: sealpost healthcheck serve\n\nExit 0 when GET /readyz on this host's PORT answers 200 over verified HTTPS." },
  "healthcheck worker": { path: "healthcheck worker", usage: "usage: sealpost healthcheck worker\n\nExit 0 when the worker's heartbeat file in DATA_DIR is fresh." },
  "healthcheck inbound": { path: "healthcheck inbound", usage: "usage: sealpost healthcheck inbound\n\nExit 0 when the bounce receiver on INBOUND_LISTEN (on this host) greets with 220." },
  help: {
    path: "help",
    usage: `usage: sealpost help [command]

Prints the usage of sealpost, or of one command (sealpost help keys create).`,
  },
};

/** A mistake on the command line: one line, then the usage of the command it concerns. */
class UsageError extends Error {
  override name = "UsageError";
  readonly usage: string;
  constructor(message: string, spec: CommandSpec) {
    super(spec.path ? `${spec.path}: ${message}` : message);
    this.usage = spec.usage;
  }
}

interface Invocation {
  kind: "run";
  path: string;
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}
type Parsed = { kind: "help"; spec: CommandSpec } | Invocation;

/** The closest known word within two edits, for "did you mean". */
function closest(word: string, known: string[]): string | undefined {
  let best: { w: string; d: number } | undefined;
  for (const k of known) {
    const d = editDistance(word, k);
    if (d <= 2 && (!best || d < best.d)) best = { w: k, d };
  }
  return best?.w;
}

const didYouMean = (word: string, known: string[], prefix = "") => {
  const c = closest(word, known);
  return c ? ` (did you mean ${prefix}${c}?)` : "";
};

/** Parse argv into one command, or a request for its usage. Throws UsageError. */
export function parseCommandLine(argv: string[]): Parsed {
  // Help wins over every other mistake on the line, as in git: `keys create --nmae --help`
  // shows how to write it.
  const end = argv.indexOf("--");
  const wantsHelp = (end === -1 ? argv : argv.slice(0, end)).some((a) => a === "--help" || a === "-h");
  let spec = COMMANDS[""]!;
  let rest = argv;
  // Walk down the command words: "keys", then "create".
  while (spec.sub && rest.length > 0 && !rest[0]!.startsWith("-")) {
    const word = rest[0]!;
    const path = spec.path ? `${spec.path} ${word}` : word;
    if (!spec.sub.includes(word)) {
      if (wantsHelp) return { kind: "help", spec };
      throw new UsageError(`unknown command ${word}${didYouMean(word, spec.sub)}`, spec);
    }
    spec = COMMANDS[path]!;
    rest = rest.slice(1);
  }
  if (spec.path === "help") {
    const topic = COMMANDS[rest.filter((a) => !a.startsWith("-")).join(" ")];
    if (!topic) throw new UsageError(`no command ${rest.join(" ")}`, COMMANDS[""]!);
    return { kind: "help", spec: topic };
  }
  if (wantsHelp) return { kind: "help", spec };
  if (spec.path === "") throw new UsageError(argv.length === 0 ? "which command?" : `unknown option ${argv[0]}`, spec);
  if (spec.sub && spec.path !== "migrate" && rest.length === 0) throw new UsageError(`which command? ${spec.sub.join(", ")}`, spec);

  const options = spec.options ?? {};
  const { tokens } = parseArgs({ args: rest, options, strict: false, allowPositionals: true, tokens: true });
  const values: Record<string, string | boolean | undefined> = {};
  const positionals: string[] = [];
  for (const t of tokens) {
    if (t.kind === "option-terminator") continue;
    if (t.kind === "positional") {
      positionals.push(t.value);
      continue;
    }
    const known = options[t.name];
    if (!known) throw new UsageError(`unknown option ${t.rawName}${didYouMean(t.name, Object.keys(options), "--")}`, spec);
    if (known.type === "string" && (t.value === undefined || (!t.inlineValue && t.value.startsWith("-"))))
      throw new UsageError(`${t.rawName} needs a value`, spec);
    values[t.name] = t.value ?? true;
  }
  const expected = spec.positionals ?? [];
  if (positionals.length > expected.length) {
    const extra = positionals[expected.length]!;
    throw new UsageError(spec.sub ? `unknown command ${extra}${didYouMean(extra, spec.sub)}` : `unexpected argument ${extra}`, spec);
  }
  if (positionals.length < expected.length) throw new UsageError(`needs <${expected[positionals.length]}>`, spec);
  for (const name of spec.required ?? []) if (values[name] === undefined) throw new UsageError(`needs --${name}`, spec);
  return { kind: "run", path: spec.path, values, positionals };
}

// ---------------------------------------------------------------------------------------
// keys and migrate

function out(line: string): void {
  process.stdout.write(line + "\n");
}

/** Says on stderr which database a one-off command uses, when it is not the one DATABASE_URL names. */
function sayWhichDatabase(config: Config): void {
  if (!config.DATABASE_URL) process.stderr.write(`sealpost: using the embedded database in ${resolve(config.DATA_DIR)} (DATABASE_URL is not set)\n`);
}

/** A one-off command on the runtime (openRuntime checks the database answers first). */
async function withRuntime<T>(config: Config, fn: (rt: Runtime) => Promise<T>, opts: { dataKeys?: "encrypts" } = {}): Promise<T> {
  sayWhichDatabase(config);
  const { openRuntime } = await runtime();
  const rt = await openRuntime(config, createLogger(config.LOG_LEVEL === "info" ? "warn" : config.LOG_LEVEL, process.stderr), opts);
  try {
    return await fn(rt);
  } finally {
    await rt.close();
  }
}

/** Checks keys create's arguments before any database is opened. */
function keyInput(values: Record<string, string | boolean | undefined>) {
  const spec = COMMANDS["keys create"]!;
  const name = values.name;
  if (typeof name !== "string" || name.trim() === "") throw new UsageError("needs --name", spec);
  const scopes = String(values.scopes ?? DEFAULT_SCOPES.join(",")).split(",").map((s) => s.trim());
  for (const s of scopes) if (!(SCOPES as readonly string[]).includes(s)) throw new UsageError(`unknown scope ${s} (use ${SCOPES.join(", ")})`, spec);
  const domains = String(values.domains ?? "*").split(",").map((s) => s.trim().toLowerCase());
  for (const d of domains) if (d !== "*" && !parseDomain(d).ok) throw new UsageError(`not a domain: ${d}`, spec);
  const tls = values.tls;
  if (tls !== undefined && tls !== "required" && tls !== "opportunistic") throw new UsageError("--tls is required or opportunistic", spec);
  const rate = values["rate-limit"] !== undefined ? Number(values["rate-limit"]) : null;
  if (rate !== null && (!Number.isInteger(rate) || rate < 1)) throw new UsageError("--rate-limit is a positive whole number of requests per window", spec);
  return { name, scopes: scopes as Scope[], domains, tlsPolicy: tls === "required" ? ("required" as const) : null, rateLimitPerMinute: rate };
}

async function keysCommand(config: Config, cmd: Invocation): Promise<number> {
  switch (cmd.path) {
    case "keys create": {
      const input = keyInput(cmd.values);
      const { key, record } = await withRuntime(config, (rt) => createApiKey(rt.db.prisma, input));
      out(`created key ${record.id} (${record.name}); scopes ${record.scopes.join(",")}; domains ${record.allowedDomains.join(",")}`);
      out("store it now, it is not shown again:");
      out(key);
      return 0;
    }
    case "keys list": {
      const keys = await withRuntime(config, (rt) => listApiKeys(rt.db.prisma));
      for (const k of keys)
        out([k.id, JSON.stringify(k.name), k.scopes.join(","), k.allowedDomains.join(","), k.tlsPolicy ?? "-", k.createdAt.toISOString(), k.revokedAt ? `revoked ${k.revokedAt.toISOString()}` : "active"].join("\t"));
      return 0;
    }
    case "keys revoke": {
      const id = cmd.positionals[0]!;
      const ok = await withRuntime(config, (rt) => revokeApiKey(rt.db.prisma, id));
      out(ok ? `revoked ${id}` : `no active key ${id}`);
      return ok ? 0 : 1;
    }
    case "keys rotate-receipt": {
      const { rotateReceiptKey } = await import("./services/receipts.ts");
      const r = await withRuntime(config, (rt) => rotateReceiptKey(rt.db.prisma, rt.cipher), { dataKeys: "encrypts" });
      out(`receipts are now signed with key ${r.kid}${r.retired ? `; ${r.retired} signs no more and stays published to verify what it signed` : ""}`);
      return 0;
    }
    case "keys rotate-data": {
      const { rotateDataKey } = await import("./services/rotate-data-key.ts");
      const { r, keyId } = await withRuntime(config, async (rt) => ({
        r: await rotateDataKey(rt.db.prisma, rt.cipher, { onBatch: (done) => process.stderr.write(`re-encrypted ${done} messages\n`) }),
        keyId: rt.cipher.currentKeyId,
      }));
      out(`re-encrypted ${r.rewritten} messages, ${r.dkimKeysRewritten} DKIM private keys, ${r.webhookSecretsRewritten} webhook endpoints' secrets and ${r.receiptKeysRewritten} receipt signing keys under data key ${keyId}`);
      if (r.retired.length > 0)
        out(`no stored content uses data key ${r.retired.join(", ")} any more: remove ${r.retired.length > 1 ? "them" : "it"} from SEALPOST_DATA_KEY once every process runs with ${keyId} first`);
      if (r.unreadable.length > 0) {
        out(`${r.unreadable.length} messages or DKIM keys could not be decrypted and were left as they are: ${r.unreadable.join(", ")}`);
        return 1;
      }
      return 0;
    }
  }
  throw new Error(`no handler for ${cmd.path}`);
}

/** The lines of a domain for the terminal: a summary, then each record to publish. */
function printDomain(d: SenderDomainView): void {
  out(`${d.name} (id ${d.id}): ${d.status}${d.bounce_domain ? `; bounce domain ${d.bounce_domain} ${d.bounce_status}` : ""}; DKIM selectors ${d.dkim.map((k) => k.selector).join(", ")}`);
  for (const k of d.dkim) out(`DKIM key ${k.selector} (${k.algorithm}): ${k.state}${k.state === "retiring" && k.retired_at ? ` until ${k.retired_at}` : ""}`);
  out(`DNS records to publish (state at the last verify${d.checked_at ? `, ${d.checked_at}` : ""}; name; type; value):`);
  for (const r of d.records) {
    out([r.state, r.name, r.type, r.value].join("\t"));
    if (r.state === "mismatch" || r.state === "invalid") out(`\tfound: ${r.found}`);
  }
}

async function domainsCommand(config: Config, cmd: Invocation): Promise<number> {
  const services = await import("./services/sender-domains.ts");
  const arg = cmd.positionals[0] ?? "";
  switch (cmd.path) {
    case "domains add": {
      const { AddDomainRequestSchema } = await import("./domain/sender-domain.ts");
      const bounce = cmd.values["bounce-domain"];
      const parsed = AddDomainRequestSchema.safeParse({ name: arg, ...(typeof bounce === "string" ? { bounce_domain: bounce } : {}) });
      if (!parsed.success) throw new UsageError(parsed.error.issues.map((i) => i.message).join("; "), COMMANDS["domains add"]!);
      const d = await withRuntime(config, (rt) => services.addDomain(rt.db.prisma, rt.cipher, null, parsed.data, bounceMxHost(config)), { dataKeys: "encrypts" });
      printDomain(d);
      return 0;
    }
    case "domains list": {
      const list = await withRuntime(config, (rt) => services.listDomains(rt.db.prisma, null, bounceMxHost(config)));
      for (const d of list) out([d.id, d.name, d.status, d.bounce_domain ?? "-", d.dkim.map((k) => k.selector).join(",")].join("\t"));
      return 0;
    }
    case "domains verify": {
      const { createTxtResolver } = await import("./worker/mx.ts");
      const dns = createTxtResolver(config.DNS_SERVERS ? { servers: config.DNS_SERVERS } : {});
      const r = await withRuntime(config, async (rt) => {
        const d = await services.findDomainForOwner(rt.db.prisma, arg, bounceMxHost(config));
        return d ? services.verifyDomain(rt.db.prisma, dns, null, d.id, verifySettings(config)) : null;
      });
      if (!r) {
        out(`no domain ${arg} (sealpost domains list shows them)`);
        return 1;
      }
      out(`${r.domain.name}: ${r.status}${r.bounce_status ? `; bounce domain ${r.domain.bounce_domain}: ${r.bounce_status}` : ""}`);
      for (const c of r.checks) {
        out(`${c.state}\t${c.purpose}\t${c.name}\t${c.detail}`);
        if (c.state === "mismatch" || c.state === "invalid") out(`\tfound:    ${c.found}\n\texpected: ${c.expected}`);
        if (c.state === "missing") out(`\texpected: ${c.expected}`);
      }
      return r.status === "verified" ? 0 : r.status === "pending" ? 3 : 1;
    }
    case "domains rotate-dkim": {
      const d = await withRuntime(config, async (rt) => {
        const found = await services.findDomainForOwner(rt.db.prisma, arg, bounceMxHost(config));
        return found ? services.rotateDkim(rt.db.prisma, rt.cipher, null, found.id, bounceMxHost(config)) : null;
      }, { dataKeys: "encrypts" });
      if (!d) {
        out(`no domain ${arg} (sealpost domains list shows them)`);
        return 1;
      }
      printDomain(d);
      out("publish the new DKIM records, then run sealpost domains verify: the new keys sign once they are seen");
      return 0;
    }
    case "domains show":
    case "domains remove": {
      const found = await withRuntime(config, async (rt) => {
        const d = await services.findDomainForOwner(rt.db.prisma, arg, bounceMxHost(config));
        if (d && cmd.path === "domains remove") await services.removeDomain(rt.db.prisma, null, d.id);
        return d;
      });
      if (!found) {
        out(`no domain ${arg} (sealpost domains list shows them)`);
        return 1;
      }
      if (cmd.path === "domains show" && cmd.values.zone === true) {
        const { zoneFileLine } = await import("./domain/sender-domain.ts");
        for (const r of found.records) out(zoneFileLine(r));
      } else if (cmd.path === "domains show") printDomain(found);
      else out(`removed ${found.name} and its DKIM keys; remove its DNS records too`);
      return 0;
    }
  }
  throw new Error(`no handler for ${cmd.path}`);
}

/** `sealpost webhooks`: the API's /webhooks for the owner, who names the key an endpoint belongs to. */
async function webhooksCommand(config: Config, cmd: Invocation): Promise<number> {
  const services = await import("./services/webhooks.ts");
  const { findWebhookEndpointById, findWebhookEndpoints } = await import("./db/webhooks.ts");
  const { webhookTargetPolicy } = await import("./security/webhook-targets.ts");
  const arg = cmd.positionals[0] ?? "";
  const line = (w: { id: string; enabled: boolean; disabled_reason: string | null; event_types: string[]; url: string }, key: string) =>
    [w.id, key, w.enabled ? "enabled" : `disabled (${w.disabled_reason ?? "by the API"})`, w.event_types.length ? w.event_types.join(",") : "all events", w.url].join("\t");
  switch (cmd.path) {
    case "webhooks add": {
      const parsed = services.CreateWebhookSchema.safeParse({
        url: arg,
        ...(typeof cmd.values.events === "string" ? { event_types: cmd.values.events.split(",").map((t) => t.trim()).filter(Boolean) } : {}),
        ...(typeof cmd.values.description === "string" ? { description: cmd.values.description } : {}),
      });
      const named = (path: PropertyKey[]) => (path[0] === "event_types" ? "--events" : path[0] === "description" ? "--description" : "url");
      if (!parsed.success) throw new UsageError(parsed.error.issues.map((i) => `${named(i.path)}: ${i.message}`).join("; "), COMMANDS["webhooks add"]!);
      const keyId = String(cmd.values.key);
      const r = await withRuntime(config, async (rt) => {
        const keys = await listApiKeys(rt.db.prisma);
        if (!keys.some((k) => k.id === keyId && !k.revokedAt)) return null;
        return services.createWebhook(rt.db.prisma, rt.cipher, keyId, parsed.data, webhookTargetPolicy(config));
      }, { dataKeys: "encrypts" });
      if (!r) {
        out(`no active key ${keyId} (sealpost keys list shows them)`);
        return 1;
      }
      out(line(r, keyId));
      out("signing secret, store it now, it is not shown again:");
      out(r.secret);
      return 0;
    }
    case "webhooks list": {
      const key = typeof cmd.values.key === "string" ? cmd.values.key : null;
      const rows = await withRuntime(config, (rt) => findWebhookEndpoints(rt.db.prisma, key));
      for (const w of rows) out(line({ id: w.id, enabled: w.enabled, disabled_reason: w.disabledReason, event_types: w.eventTypes, url: w.url }, w.apiKeyId));
      return 0;
    }
    default: {
      const r = await withRuntime(config, async (rt) => {
        const w = await findWebhookEndpointById(rt.db.prisma, arg);
        if (!w) return null;
        const db = rt.db.prisma;
        switch (cmd.path) {
          case "webhooks show":
            return [line(await services.getWebhook(db, w.apiKeyId, w.id), w.apiKeyId)];
          case "webhooks enable":
          case "webhooks disable":
            return [line(await services.updateWebhook(db, w.apiKeyId, w.id, { enabled: cmd.path === "webhooks enable" }, webhookTargetPolicy(config)), w.apiKeyId)];
          case "webhooks rotate-secret": {
            const v = await services.rotateWebhookSecret(db, rt.cipher, w.apiKeyId, w.id);
            return [`new signing secret, store it now, it is not shown again (the previous one also signs until ${v.previous_secret_valid_until}):`, v.secret];
          }
          case "webhooks test":
            return [`queued test delivery ${(await services.testWebhook(db, w.apiKeyId, w.id)).delivery_id}; a running worker sends it (sealpost webhooks deliveries ${w.id})`];
          case "webhooks deliveries":
            return (await services.listWebhookDeliveries(db, w.apiKeyId, w.id, { limit: 50 })).data.map((d) =>
              [d.id, d.event_id ?? "test", d.state, String(d.attempts), d.last_error ?? (d.last_status === null ? "-" : String(d.last_status))].join("\t"));
          case "webhooks retry": {
            const since = cmd.values.since;
            if (since !== undefined && (typeof since !== "string" || Number.isNaN(Date.parse(since))))
              throw new UsageError("--since must be an ISO 8601 time, such as 2030-01-01T00:00:00Z", COMMANDS["webhooks retry"]!);
            const n = (await services.retryWebhookDeliveries(db, w.apiKeyId, w.id, typeof since === "string" ? { since: new Date(since).toISOString() } : {})).retried;
            return [`${n} failed deliveries due again`];
          }
          case "webhooks remove":
            await services.removeWebhook(db, w.apiKeyId, w.id);
            return [`removed webhook endpoint ${w.id}`];
        }
        throw new Error(`no handler for ${cmd.path}`);
      }, { dataKeys: "encrypts" });
      if (!r) {
        out(`no webhook endpoint ${arg} (sealpost webhooks list shows them)`);
        return 1;
      }
      for (const l of r) out(l);
      return 0;
    }
  }
}

/** `sealpost suppressions`: the API's /suppressions for the owner, over every sender domain. */
async function suppressionsCommand(config: Config, cmd: Invocation): Promise<number> {
  const services = await import("./services/suppressions.ts");
  const { SUPPRESSION_REASONS } = await import("./domain/suppression.ts");
  const owner = { keyId: null, allowedDomains: ["*"] };
  const str = (name: string) => (typeof cmd.values[name] === "string" ? (cmd.values[name] as string) : undefined);
  const line = (v: { address: string; domain: string; reason: string; created_at: string; reply: { code: number | null; enhanced_code: string | null; text: string | null } | null; description: string | null }) =>
    [v.address, v.domain, v.reason, v.created_at, v.reply ? [v.reply.code, v.reply.enhanced_code, v.reply.text].filter((x) => x !== null).join(" ") : (v.description ?? "-")].join("\t");
  const address = cmd.positionals[0] ?? "";
  const lines = await withRuntime(config, async (rt) => {
    const db = rt.db.prisma;
    switch (cmd.path) {
      case "suppressions list": {
        const reason = str("reason");
        if (reason !== undefined && !(SUPPRESSION_REASONS as readonly string[]).includes(reason))
          throw new UsageError(`--reason must be one of ${SUPPRESSION_REASONS.join(", ")}`, COMMANDS["suppressions list"]!);
        const all: string[] = [];
        let cursor: string | undefined;
        do {
          const page = await services.listSuppressions(db, owner, { limit: 1000, cursor, reason: reason as never, domain: str("domain"), address: str("address") });
          all.push(...page.data.map(line));
          cursor = page.next_cursor ?? undefined;
        } while (cursor);
        return all;
      }
      case "suppressions add": {
        const r = await services.addSuppression(db, owner, { address, domain: str("domain"), description: str("description") });
        return [r.created ? line(r.view) : `already suppressed: ${line(r.view)}`];
      }
      case "suppressions remove": {
        const r = await services.deleteSuppression(db, owner, { address, domain: str("domain") });
        return [`${r.address} removed from the suppression list of ${r.removed_from.join(", ")}`];
      }
    }
    throw new Error(`no handler for ${cmd.path}`);
  });
  for (const l of lines) out(l);
  return 0;
}

async function migrateCommand(config: Config, cmd: Invocation): Promise<number> {
  const rolledBack = cmd.values["rolled-back"];
  sayWhichDatabase(config);
  const logger = createLogger(config.LOG_LEVEL, process.stderr);
  const { databaseFor } = await runtime();
  const { url, embedded } = await databaseFor(config, logger);
  try {
    if (typeof rolledBack === "string") {
      const ok = await resolveRolledBack(url, rolledBack);
      out(ok ? `marked ${rolledBack} as rolled back` : `no failed migration named ${rolledBack}`);
      return ok ? 0 : 1;
    }
    const r = await migrate(url, { log: logger });
    out(r.applied.length ? `applied: ${r.applied.join(", ")}` : `nothing to apply (${r.alreadyApplied.length} applied before)`);
    return 0;
  } finally {
    await embedded?.stop();
  }
}

// ---------------------------------------------------------------------------------------
// start | serve | worker, and how they stop

/** A stop also ends on its own this long after the first signal, whatever hangs. */
const FORCE_EXIT_MS = 30_000;

class StopRequested extends Error {
  override name = "StopRequested";
}

/**
 * The one way a serving process stops. Installed first thing in run(): a signal during
 * start-up aborts it and cleans up, instead of Node's default (die at once, leaving the
 * embedded database's lock file and the worker's leases behind). The first SIGTERM or
 * SIGINT starts the stop; later ones are logged and ignored, because launchers often
 * deliver two (Ctrl-C reaches the whole process group, and npm forwards it once more).
 */
function watchStopSignals(logger: Logger): { signal: AbortSignal; requested: Promise<void>; done(): void } {
  const controller = new AbortController();
  let force: NodeJS.Timeout | undefined;
  let since = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      const left = Math.max(1, Math.ceil((FORCE_EXIT_MS - (Date.now() - since)) / 1000));
      logger.warn({ signal: sig }, `already stopping; ${sig} ignored (a stop that hangs is forced in ${left} s)`);
      return;
    }
    since = Date.now();
    logger.info({ signal: sig }, "shutting down");
    force = setTimeout(() => {
      logger.error({}, `the stop did not finish within ${FORCE_EXIT_MS / 1000} s; exiting without a clean stop`);
      process.exit(1);
    }, FORCE_EXIT_MS);
    controller.abort(new StopRequested(sig));
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const requested = new Promise<void>((r) => controller.signal.addEventListener("abort", () => r(), { once: true }));
  // The handlers stay until the process exits: a late signal must not kill it mid-exit.
  return { signal: controller.signal, requested, done: () => clearTimeout(force) };
}

async function ensureFirstKey(rt: Runtime): Promise<void> {
  if ((await countActiveKeys(rt.db.prisma)) > 0) return;
  // In production a process's output goes to a log collector: a key printed there would
  // be a secret in the logs. The operator creates the first one with the CLI instead.
  if (rt.config.NODE_ENV === "production") {
    rt.logger.warn({}, "no API key exists yet: create one with `sealpost keys create --name NAME` (it is shown once, on your terminal)");
    return;
  }
  try {
    const { key, record } = await createApiKey(rt.db.prisma, { name: "initial" });
    // Printed once to the terminal, never logged.
    process.stdout.write(`\nNo API keys existed, so one was created (id ${record.id}, scopes send,read, any sender domain).\nStore it now, it is not shown again:\n\n  ${key}\n\n`);
  } catch (err) {
    // Under the least-privilege API role keys are the owner's to create.
    if (!isPermissionDenied(err)) throw err;
    rt.logger.warn({}, "no API keys exist and this database role may not create one: run `sealpost keys create` as the database owner");
  }
}

async function run(config: Config, mode: "start" | "serve" | "worker" | "inbound"): Promise<number> {
  const logger = createLogger(config.LOG_LEVEL);
  const stop = watchStopSignals(logger);
  const parts: Array<() => Promise<void>> = [];
  let rt: Runtime | null = null;
  // The API and the worker stop side by side: the API must not keep accepting while
  // the worker waits for its deliveries. The database closes last.
  const stopAll = async () => {
    const results = await Promise.allSettled(parts.map((s) => s()));
    for (const r of results) if (r.status === "rejected") logger.error({ err: errorFields(r.reason) }, "error while stopping");
    await rt?.close().catch((err: unknown) => logger.error({ err: errorFields(err) }, "error while closing the database"));
    stop.done();
    logger.info({}, "stopped");
  };
  try {
    // Each step runs to its end (none is safe to cut in half: the embedded database's
    // files, a migration); a signal that came meanwhile stops before the next one.
    const { openRuntime } = await runtime();
    rt = await openRuntime(config, logger, { dataKeys: mode === "worker" || mode === "inbound" ? "decrypts" : "encrypts" });
    stop.signal.throwIfAborted();
    if (config.METRICS_LISTEN || config.METRICS_TOKEN) {
      const [{ enableMetrics }, { queueStats }, { startMetricsListener }] = await Promise.all([import("./metrics.ts"), import("./db/metrics.ts"), import("./metrics-listener.ts")]);
      const pool = rt.db.pool;
      enableMetrics(() => queueStats(pool));
      const listener = await startMetricsListener(config, logger);
      if (listener) parts.push(listener.close);
    }
    if (mode === "inbound" || (mode === "start" && config.INBOUND_LISTEN)) {
      const { startInbound } = await import("./inbound/start.ts");
      const inbound = await startInbound(rt);
      parts.push(inbound.close);
      stop.signal.throwIfAborted();
    }
    if (mode === "start" || mode === "serve") {
      await ensureFirstKey(rt);
      stop.signal.throwIfAborted();
      const { startServer } = await import("./api/server.ts");
      const server = await startServer(rt);
      parts.push(server.close);
      stop.signal.throwIfAborted();
      if (server.caFile) process.stdout.write(`HTTPS on ${server.url}; trust the development CA with: curl --cacert ${resolve(server.caFile)} ${server.url}/healthz\n`);
    }
    if (mode === "start" || mode === "worker") {
      const { startWorker } = await import("./worker/worker.ts");
      const worker = startWorker(rt);
      parts.push(() => worker.stop(config.SHUTDOWN_GRACE));
    }
    stop.signal.throwIfAborted();
  } catch (err) {
    if (stop.signal.aborted) logger.info({}, "start-up interrupted");
    await stopAll();
    if (err instanceof StopRequested) return 0;
    throw err;
  }
  await stop.requested;
  await stopAll();
  return 0;
}

// ---------------------------------------------------------------------------------------
// Errors, as the operator reads them


/**
 * A failure to reach or log in to the database, as one line naming what to change.
 * Decided from codes: node's (ECONNREFUSED ...), Postgres' SQLSTATE (3D000, 28P01,
 * 28000) and Prisma's (P1000-P1017, which replace the driver's error).
 */
export function explainDatabaseError(err: unknown, config: Config): string | null {
  let server = "";
  let where = `the embedded database in ${resolve(config.DATA_DIR)}`;
  let user = "";
  let name = "";
  let fix = "check DATA_DIR, or set DATABASE_URL";
  if (config.DATABASE_URL) {
    const u = new URL(config.DATABASE_URL);
    server = `${u.hostname || "localhost"}:${u.port || "5432"}`;
    where = `the database at ${server}`;
    user = decodeURIComponent(u.username);
    name = decodeURIComponent(u.pathname.slice(1)) || user;
    fix = "check DATABASE_URL";
  }
  const cannotConnect = (why: string, extra = "") => `cannot connect to ${where}${why ? ` (${why})` : ""}: ${fix}${extra}`;
  const refused = (why: string) => `${where} refused ${user ? `user "${user}"` : "the connection"} (${why}): check the user and password in DATABASE_URL`;
  for (const e of errorChain(err)) {
    const code = typeof e.code === "string" ? e.code : "";
    const message = typeof e.message === "string" ? e.message : "";
    switch (code) {
      case "ECONNREFUSED":
        return cannotConnect("connection refused");
      case "ENOTFOUND":
      case "EAI_AGAIN":
        return cannotConnect("host name not found");
      case "ETIMEDOUT":
        return cannotConnect("connection timed out");
      case "EHOSTUNREACH":
      case "ENETUNREACH":
        return cannotConnect("host unreachable");
      case "ECONNRESET":
      case "P1017":
        return cannotConnect("the server closed the connection");
      case "P1001":
      case "P1002":
        return cannotConnect("");
      case "3D000":
      case "P1003":
        return `the database "${name}" does not exist on ${server || where}: create it, or fix its name in DATABASE_URL`;
      case "28P01":
      case "P1000":
        return refused("password authentication failed");
      case "28000":
        return refused(message || "not allowed");
      case "P1010":
        return refused("access denied");
      case "42P01":
      case "P2021":
        // With MIGRATE_ON_START=false nothing created the tables; otherwise it is a bug.
        if (!config.MIGRATE_ON_START) return `${where} has no sealpost tables yet: run sealpost migrate as the database owner, or set MIGRATE_ON_START=true`;
    }
    if (/timeout exceeded when trying to connect/.test(message))
      return cannotConnect(`no answer within ${config.DATABASE_CONNECT_TIMEOUT_MS} ms`, ", or raise DATABASE_CONNECT_TIMEOUT_MS");
  }
  return null;
}

/** One line for any error that ends a command; the stack only at LOG_LEVEL=debug or trace. */
export function describeFailure(err: unknown, config: Config | null): string {
  if (err instanceof ConfigError || err instanceof DataKeyError || err instanceof MigrationError) return `sealpost: ${err.message}`;
  // A refusal of a service (a domain that exists already): what it said, as the API says it.
  if (err instanceof AppError) return `sealpost: ${err.message}`;
  const db = config ? explainDatabaseError(err, config) : null;
  if (db) return `sealpost: ${db}`;
  const message = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, " ").trim();
  if (config?.LOG_LEVEL === "debug" || config?.LOG_LEVEL === "trace") {
    const stacks = [...errorChain(err)].map((e) => (e instanceof Error ? (e.stack ?? e.message) : String(e)));
    return `sealpost: unexpected error: ${message}\n${stacks.join("\ncaused by: ")}`;
  }
  return `sealpost: unexpected error: ${message} (run with LOG_LEVEL=debug for details)`;
}

export async function main(argv: string[]): Promise<number> {
  let cmd: Parsed;
  try {
    cmd = parseCommandLine(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`sealpost: ${err.message}\n\n${err.usage}\n`);
    return 2;
  }
  if (cmd.kind === "help") {
    out(cmd.spec.usage);
    return 0;
  }
  let config: Config | null = null;
  try {
    config = loadConfig();
    switch (cmd.path) {
      case "start":
      case "serve":
      case "worker":
      case "inbound":
        return await run(config, cmd.path);
      case "migrate":
      case "migrate resolve":
        return await migrateCommand(config, cmd);
      case "healthcheck serve":
      case "healthcheck worker":
      case "healthcheck inbound": {
        const { checkInbound, checkServe, checkWorkerHeartbeat } = await import("./healthcheck.ts");
        const r = cmd.path === "healthcheck serve" ? await checkServe(config) : cmd.path === "healthcheck inbound" ? await checkInbound(config) : checkWorkerHeartbeat(config);
        out(`sealpost: ${r.ok ? "healthy" : "unhealthy"}: ${r.detail}`);
        return r.ok ? 0 : 1;
      }
      case "domains add":
      case "domains list":
      case "domains show":
      case "domains verify":
      case "domains rotate-dkim":
      case "domains remove":
        return await domainsCommand(config, cmd);
      case "suppressions list":
      case "suppressions add":
      case "suppressions remove":
        return await suppressionsCommand(config, cmd);
      case "webhooks add":
      case "webhooks list":
      case "webhooks show":
      case "webhooks enable":
      case "webhooks disable":
      case "webhooks rotate-secret":
      case "webhooks test":
      case "webhooks deliveries":
      case "webhooks retry":
      case "webhooks remove":
        return await webhooksCommand(config, cmd);
      default:
        return await keysCommand(config, cmd);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`sealpost: ${err.message}\n\n${err.usage}\n`);
      return 2;
    }
    process.stderr.write(describeFailure(err, config) + "\n");
    return 1;
  }
}

/** Runs the CLI in this process and exits with its status (bin/sealpost.js and `node src/cli.ts`). */
export function runCli(): void {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(describeFailure(err, null) + "\n");
      process.exit(1);
    },
  );
}

if (import.meta.url === `file://${process.argv[1]}`) runCli();
