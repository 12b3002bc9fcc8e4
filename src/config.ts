// The one place that reads process.env. Every variable is parsed and checked here
// once; the rest of the code receives a frozen Config.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { isIP } from "node:net";
import { X509Certificate } from "node:crypto";
import { z } from "zod";
import { TLS_POLICIES } from "./domain/tls-policy.ts";
import { parseMapRule, type TlsMapRule } from "./domain/tls-policy-map.ts";

const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"])
  .transform((v) => v === "true" || v === "1" || v === "yes");
const int = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, "must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
const optionalPath = z.string().min(1).optional();
const tlsPolicy = z.enum(TLS_POLICIES);

// SMTP_MAX_RETRY accepts 90s, 30m, 12h, 3d (Postfix's maximal_queue_lifetime style).
const duration = z
  .string()
  .regex(/^\d+(ms|s|m|h|d)$/, "must be a duration such as 30s, 15m, 12h or 3d")
  .transform((v) => {
    const m = /^(\d+)(ms|s|m|h|d)$/.exec(v)!;
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms"];
    return Number(m[1]) * unit;
  });

/** SMTP_RELAY_URL, parsed: every message goes to this smarthost. */
export interface SmtpRelay {
  host: string;
  port: number;
  /** smtps:// (port 465 style): TLS from the first byte, no STARTTLS. */
  implicitTls: boolean;
  auth?: { user: string; pass: string };
}

const RELAY_SHAPE = "expected smtp://[user:password@]host[:port] or smtps://..., with reserved characters in the user and password percent-encoded";

/**
 * smtp://[user:password@]host[:port] (STARTTLS, port 587 by default) or smtps://... (implicit
 * TLS, 465). The messages never quote the URL: it may carry the relay password.
 */
const relayUrl = z
  .string()
  .regex(/^smtps?:\/\//, "must be an smtp:// or smtps:// URL")
  .transform((v, ctx): SmtpRelay => {
    const fail = (message: string) => {
      ctx.addIssue({ code: "custom", message });
      return z.NEVER;
    };
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return fail(`is not a valid URL: ${RELAY_SHAPE}`);
    }
    const host = u.hostname.replace(/^\[|\]$/g, "");
    if (!host) return fail(`has no host: ${RELAY_SHAPE}`);
    const implicitTls = u.protocol === "smtps:";
    const relay: SmtpRelay = { host, port: u.port ? Number(u.port) : implicitTls ? 465 : 587, implicitTls };
    if (u.username) {
      try {
        relay.auth = { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) };
      } catch {
        return fail(`has a malformed %-escape in the user or password: ${RELAY_SHAPE}`);
      }
    }
    return relay;
  });

const hostPortList = z
  .string()
  .transform((v) => v.split(",").map((s) => s.trim()).filter(Boolean))
  .pipe(z.array(z.string().regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\])(:\d{1,5})?$/, "must be ip or ip:port")));

// Addresses the worker sends from, as SPF sees them (the public ones behind any NAT).
const ipList = z
  .string()
  .transform((v) => v.split(",").map((s) => s.trim()).filter(Boolean))
  .pipe(z.array(z.string().refine((s) => isIP(s) !== 0, "must be an IPv4 or IPv6 address")));

// Networks (CIDR) webhooks may reach in production although private, e.g. 10.1.0.0/16.
const cidrList = z
  .string()
  .transform((v) => v.split(",").map((s) => s.trim()).filter(Boolean))
  .pipe(z.array(z.string().refine((s) => {
    const [ip, bits, ...rest] = s.split("/");
    const v = isIP(ip ?? "");
    return rest.length === 0 && v !== 0 && /^\d{1,3}$/.test(bits ?? "") && Number(bits) <= (v === 4 ? 32 : 128);
  }, "must be networks such as 10.1.0.0/16 or fd00::/8, separated by commas")));

/** A rule of SMTP_DESTINATION_LIMITS: `example.com` names that domain or host, `.example.com` those under it. */
export interface DestinationRule {
  pattern: string;
  sessions?: number;
  messagesPerSession?: number;
}

// SMTP_DESTINATION_LIMITS: rules for some destinations, e.g.
// "gmail.com:sessions=4:messages=100,.protection.outlook.com:sessions=2". A rule names a
// recipient domain or an MX host; a leading dot names everything under it.
const DESTINATION_RULE_SHAPE =
  'expected rules separated by commas, each a domain or host ("gmail.com", or ".outlook.com" for everything under it) ' +
  'followed by :sessions=N and/or :messages=N, such as "gmail.com:sessions=4:messages=100"';
const destinationRules = z.string().transform((v, ctx): DestinationRule[] => {
  const rules: DestinationRule[] = [];
  for (const item of v.split(",").map((x) => x.trim()).filter(Boolean)) {
    const [pattern = "", ...settings] = item.split(":").map((x) => x.trim());
    const rule: DestinationRule = { pattern: pattern.toLowerCase() };
    const bad = (why: string) => ctx.addIssue({ code: "custom", message: `${JSON.stringify(item)}: ${why}; ${DESTINATION_RULE_SHAPE}` });
    if (!/^\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/i.test(pattern)) {
      bad("does not start with a domain or host name");
      continue;
    }
    for (const setting of settings) {
      const m = /^(sessions|messages)=(\d{1,6})$/.exec(setting);
      if (!m || Number(m[2]) < 1) {
        bad(`${JSON.stringify(setting)} is not sessions=N or messages=N with N a whole number from 1`);
        continue;
      }
      if (m[1] === "sessions") rule.sessions = Number(m[2]);
      else rule.messagesPerSession = Number(m[2]);
    }
    if (settings.length === 0) bad("sets nothing");
    rules.push(rule);
  }
  return rules;
});

// SMTP_TLS_POLICY_MAP: the operator's per-domain rules (domain/tls-policy-map.ts), e.g.
// "bank.example required, .partner.example required mx=*.mail.partner.example fingerprint=AB:CD:…".
const tlsPolicyMap = z.string().transform((v, ctx): TlsMapRule[] => {
  const rules: TlsMapRule[] = [];
  for (const item of v.split(",").map((x) => x.trim()).filter(Boolean)) {
    const r = parseMapRule(item);
    if ("error" in r) {
      ctx.addIssue({ code: "custom", message: `${JSON.stringify(item)}: ${r.error}; expected rules separated by commas, each "<domain or .domain> required [mx=<host>|<host>] [fingerprint=<sha256>|<sha256>]"` });
      continue;
    }
    if (rules.some((x) => x.pattern === r.pattern)) ctx.addIssue({ code: "custom", message: `${r.pattern} has two rules; keep one` });
    rules.push(r);
  }
  return rules;
});

/** DANE_RESOLVER: "127.0.0.1:53", "[::1]:53" or an address alone (port 53); loopback only. Null with the reason when it is not one. */
function parseDaneResolver(v: string): { host: string; port: number } | { error: string } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([0-9.]+|::1))(?::(\d{1,5}))?$/.exec(v.trim());
  const host = m ? (m[1] ?? m[2]!) : "";
  const port = m?.[3] ? Number(m[3]) : 53;
  if (!m || isIP(host) === 0 || port < 1 || port > 65535) return { error: "must be the address of a DNSSEC-validating resolver, such as 127.0.0.1:53" };
  const loopback = isIP(host) === 4 ? host.startsWith("127.") : host === "::1";
  if (!loopback) return { error: "must be on loopback (127.0.0.0/8 or ::1): the AD flag is trusted only from a validating resolver on this host, such as Unbound" };
  return { host, port };
}

const EnvSchema = z
  .object({
    NODE_ENV: z.enum(["production", "development", "test"]).default("development"),
    LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL").optional(),
    DATABASE_POOL_MAX: int(1, 200).default(10),
    DATABASE_STATEMENT_TIMEOUT_MS: int(100, 600_000).default(5000),
    DATABASE_CONNECT_TIMEOUT_MS: int(100, 60_000).default(2000),
    MIGRATE_ON_START: bool.default(true),
    DATA_DIR: z.string().min(1).default("./data"),
    HOST: z.string().min(1).default("0.0.0.0"),
    PORT: int(0, 65535).default(8443),
    TLS_CERT_FILE: optionalPath,
    TLS_KEY_FILE: optionalPath,
    TLS_CA_FILE: optionalPath,
    CERTS_DIR: z.string().min(1).default("./certs"),
    TRUST_PROXY: bool.default(false),
    BODY_LIMIT_BYTES: int(1024, 100 * 1024 * 1024).default(10 * 1024 * 1024),
    ATTACHMENT_MAX_BYTES: int(1, 100 * 1024 * 1024).default(5 * 1024 * 1024),
    ATTACHMENTS_TOTAL_MAX_BYTES: int(1, 100 * 1024 * 1024).default(7 * 1024 * 1024),
    RATE_LIMIT_IP_MAX: int(1, 10_000_000).default(6000),
    RATE_LIMIT_IP_WINDOW_MS: int(100, 86_400_000).default(60_000),
    RATE_LIMIT_KEY_MAX: int(1, 10_000_000).default(1200),
    RATE_LIMIT_KEY_WINDOW_MS: int(100, 86_400_000).default(60_000),
    REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL").optional(),
    REDIS_KEY_PREFIX: z.string().min(1).default("sealpost:rl:"),
    RATE_LIMIT_AUTH_FAIL_MAX: int(1, 1_000_000).default(20),
    RATE_LIMIT_AUTH_FAIL_WINDOW_MS: int(1000, 86_400_000).default(60_000),
    API_KEY_CACHE_TTL_MS: int(0, 600_000).default(5000),
    SMTP_TLS_POLICY: tlsPolicy.default("opportunistic"),
    SMTP_RELAY_URL: relayUrl.optional(),
    SMTP_MX_PORT: int(1, 65535).default(25),
    SMTP_CA_FILE: optionalPath,
    SMTP_HELO_NAME: z.string().min(1).optional(),
    DKIM_ROTATION_GRACE: duration.default(7 * 86_400_000),
    SMTP_SOURCE_IPS: ipList.optional(),
    BOUNCE_MX_HOST: z.string().min(1).transform((v) => v.trim().toLowerCase().replace(/\.$/, "")).optional(),
    SMTP_MAX_RETRY: duration.default(3 * 86_400_000),
    SMTP_RETRY_MIN: duration.default(60_000),
    SMTP_RETRY_MAX: duration.default(3_600_000),
    SMTP_CONNECT_TIMEOUT_MS: int(100, 600_000).default(30_000),
    SMTP_DESTINATION_SESSIONS: int(1, 1000).default(10),
    SMTP_DESTINATION_MESSAGES_PER_SESSION: int(1, 1_000_000).default(1000),
    SMTP_DESTINATION_LIMITS: destinationRules.default([]),
    SMTP_THROTTLE_PAUSE: duration.default(60_000),
    SMTP_TLS_POLICY_MAP: tlsPolicyMap.default([]),
    MTA_STS: z.enum(["on", "off"]).default("on"),
    DANE_RESOLVER: z.string().transform((v, ctx) => {
      const r = parseDaneResolver(v);
      if ("error" in r) {
        ctx.addIssue({ code: "custom", message: r.error });
        return z.NEVER;
      }
      return r;
    }).optional(),
    MTA_STS_TIMEOUT: duration.default(30_000),
    TLS_REPORTS_SEND: z.enum(["on", "off"]).default("off"),
    TLS_REPORT_ORGANIZATION: z.string().min(1).max(200).optional(),
    TLS_REPORT_FROM: z.string().regex(/^[^\s@<>]{1,64}@[a-z0-9.-]{1,253}$/i, "must be an address such as tlsrpt@shop.example").optional(),
    TLS_REPORT_CONTACT: z.string().min(1).max(200).optional(),
    DNS_SERVERS: hostPortList.optional(),
    DNS_CACHE_TTL: duration.default(60_000),
    DKIM_SIGNING: z.enum(["on", "off"]).default("on"),
    SENDER_DOMAINS: z.enum(["verified", "any"]).optional(),
    METRICS_TOKEN: z.string().min(16, "must be at least 16 characters (e.g. openssl rand -hex 24)").optional(),
    METRICS_LISTEN: z
      .string()
      .regex(/^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]|localhost):\d{1,5}$/, "must be a loopback address and port, such as 127.0.0.1:9464 (to scrape from elsewhere, set METRICS_TOKEN and use /metrics on the HTTPS port)")
      .optional(),
    // The bounce receiver (sealpost inbound; part of start when set): host:port to listen on.
    INBOUND_LISTEN: z
      .string()
      .regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|[a-z0-9.-]+):\d{1,5}$/i, "must be an address and port to listen on, such as 0.0.0.0:25")
      .optional(),
    INBOUND_MAX_BYTES: int(1024, 100 * 1024 * 1024).default(10 * 1024 * 1024),
    INBOUND_MAX_CLIENTS: int(1, 100_000).default(100),
    INBOUND_RATE_PER_MINUTE: int(1, 1_000_000).default(60),
    INBOUND_REPORT_MAX_AGE: duration.default(30 * 86_400_000),
    WEBHOOK_TIMEOUT_MS: int(1000, 120_000).default(15_000),
    WEBHOOK_CONCURRENCY: int(1, 1000).default(8),
    WEBHOOK_ALLOWED_NETWORKS: cidrList.optional(),
    WEBHOOK_CA_FILE: optionalPath,
    WORKER_CONCURRENCY: int(1, 1000).default(8),
    WORKER_BATCH_SIZE: int(1, 1000).default(50),
    WORKER_LEASE_MS: int(1000, 86_400_000).default(5 * 60_000),
    WORKER_CLAIM_LEASE_MS: int(1000, 86_400_000).optional(),
    WORKER_LEASE_RENEW_MS: int(100, 86_400_000).optional(),
    WORKER_POLL_MS: int(10, 600_000).default(500),
    WORKER_ID: z.string().min(1).optional(),
    SHUTDOWN_GRACE: duration.default(8_000),
    SEALPOST_DATA_KEY: z.string().min(1).optional(),
    RETENTION_DAYS: int(0, 36500).default(30),
    RETENTION_SWEEP_INTERVAL: duration.default(3_600_000),
  })
  .refine((e) => e.SMTP_RETRY_MIN <= e.SMTP_RETRY_MAX, { message: "SMTP_RETRY_MIN must not exceed SMTP_RETRY_MAX", path: ["SMTP_RETRY_MIN"] })
  // The process exits on its own 30 s after a stop signal whatever happens (cli.ts).
  .refine((e) => e.SHUTDOWN_GRACE <= 25_000, { message: "must be at most 25s (a stop is forced after 30 s)", path: ["SHUTDOWN_GRACE"] })
  .refine((e) => (e.TLS_CERT_FILE === undefined) === (e.TLS_KEY_FILE === undefined), {
    message: "TLS_CERT_FILE and TLS_KEY_FILE must be set together",
    path: ["TLS_CERT_FILE"],
  })
  .refine((e) => e.NODE_ENV !== "production" || e.DATABASE_URL, {
    message: "DATABASE_URL is required when NODE_ENV=production",
    path: ["DATABASE_URL"],
  })
  // Leases (src/db/deliveries.ts). A delivery is claimed with the short claim lease, which
  // becomes the full WORKER_LEASE_MS when its SMTP work starts, and every lease a worker
  // holds is renewed every WORKER_LEASE_RENEW_MS. Because leases are renewed, the lease
  // need not outlast the SMTP timeouts (RFC 5321 4.5.3.2 lets a server take 10 minutes
  // to answer the final dot): it only bounds how long a dead worker's rows wait, and how
  // long a database outage may last before an in-flight delivery's lease can run out.
  // The rule: renewal interval <= a third of the claim lease, and claim lease <= lease, so
  // two renewals in a row can fail without any lease running out. By default the claim
  // lease is a third of the lease, between 1 s and 15 s.
  .transform((e) => {
    const claimLease = e.WORKER_CLAIM_LEASE_MS ?? Math.max(1000, Math.min(15_000, Math.floor(e.WORKER_LEASE_MS / 3)));
    // Sender domains: in production delivering straight to MX hosts, only verified (signed)
    // domains; behind a relay (which signs or vouches for the mail) or in development, any.
    const senderDomains = e.SENDER_DOMAINS ?? (e.NODE_ENV === "production" && !e.SMTP_RELAY_URL ? "verified" : "any");
    return {
      ...e,
      WORKER_CLAIM_LEASE_MS: claimLease,
      WORKER_LEASE_RENEW_MS: e.WORKER_LEASE_RENEW_MS ?? Math.floor(claimLease / 3),
      SENDER_DOMAINS: senderDomains,
    };
  })
  .refine((e) => e.WORKER_CLAIM_LEASE_MS <= e.WORKER_LEASE_MS, {
    message: "must not exceed WORKER_LEASE_MS: the claim lease of a delivery not yet started is the shorter one",
    path: ["WORKER_CLAIM_LEASE_MS"],
  })
  .refine((e) => e.WORKER_LEASE_RENEW_MS * 3 <= e.WORKER_CLAIM_LEASE_MS, {
    message: "must be at most a third of WORKER_CLAIM_LEASE_MS (and so of WORKER_LEASE_MS), so that two failed renewals in a row do not let a lease run out",
    path: ["WORKER_LEASE_RENEW_MS"],
  });

export type Config = Readonly<z.infer<typeof EnvSchema>>;

/**
 * A setting that is invalid, or that does not work on this host (a file that cannot be
 * read, a port in use, a database that refuses): the message says what is wrong and
 * which variable to change, and the CLI prints it as it is, without a stack trace.
 */
export class ConfigError extends Error {
  override name = "ConfigError";

  /** `variable` names `file`, which cannot be read. */
  static unreadableFile(variable: string, file: string, err: unknown): ConfigError {
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    const why = code === "ENOENT" ? "no such file" : code === "EACCES" || code === "EPERM" ? "permission denied" : code === "EISDIR" ? "it is a directory" : (code ?? String(err));
    const fix =
      code === "EACCES" || code === "EPERM"
        ? `make it readable by the user sealpost runs as${typeof process.getuid === "function" ? ` (uid ${process.getuid()})` : ""}, or change ${variable}`
        : `fix the path in ${variable}`;
    return new ConfigError(`${variable}: cannot read ${file} (${why}): ${fix}`, { cause: err });
  }
}

/**
 * The host a bounce domain's MX must name: where bounces reach sealpost. BOUNCE_MX_HOST,
 * else the EHLO name, which is the sending host's name and, by default, the receiving one's.
 */
export function bounceMxHost(config: Pick<Config, "BOUNCE_MX_HOST" | "SMTP_HELO_NAME">): string {
  return config.BOUNCE_MX_HOST ?? heloName(config).toLowerCase();
}

/**
 * Where the bounce receiver listens: INBOUND_LISTEN, else port 25 on every address (what
 * `sealpost inbound` uses; `start` runs the receiver only when INBOUND_LISTEN is set).
 * `host` is the address to bind; `label` is the setting as written, for messages.
 */
export function inboundListen(config: Pick<Config, "INBOUND_LISTEN">): { host: string; port: number; label: string } {
  const label = config.INBOUND_LISTEN ?? "0.0.0.0:25";
  const at = label.lastIndexOf(":");
  return { host: label.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(label.slice(at + 1)), label };
}

/** The name the worker gives in EHLO: SMTP_HELO_NAME, else the host name. */
export function heloName(config: Pick<Config, "SMTP_HELO_NAME">): string {
  return config.SMTP_HELO_NAME ?? hostname();
}

/** What a sender domain's verification needs (services/sender-domains.ts verifyDomain). */
export function verifySettings(config: Config) {
  return {
    bounceMxHost: bounceMxHost(config),
    rotationGraceMs: config.DKIM_ROTATION_GRACE,
    sourceIps: config.SMTP_SOURCE_IPS ?? [],
    heloName: heloName(config),
  };
}

/**
 * The PEM of SMTP_CA_FILE or WEBHOOK_CA_FILE, checked to be a certificate. Read when the
 * worker starts, not with the rest of the configuration: it is I/O, and only the worker needs it.
 */
export function readCaFile(variable: "SMTP_CA_FILE" | "WEBHOOK_CA_FILE", file: string): string {
  const peers = variable === "SMTP_CA_FILE" ? "SMTP peers" : "webhook receivers";
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (err) {
    throw ConfigError.unreadableFile(variable, file, err);
  }
  try {
    new X509Certificate(pem);
  } catch (err) {
    throw new ConfigError(`${variable}: ${file} is not a PEM certificate: point it at the CA certificate to trust for ${peers}, or unset it`, { cause: err });
  }
  return pem;
}

/** Parse an environment (process.env by default). Throws ConfigError naming each bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty strings count as unset, the way shells and compose files usually mean them.
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") cleaned[k] = v;
  const parsed = EnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${String(i.path[0] ?? "environment")}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  return Object.freeze(parsed.data);
}
