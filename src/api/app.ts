// buildApp: the Fastify application with every plugin and route, given its
// dependencies. It never listens; server.ts (or a test) does.
import { AppError } from "../domain/errors.ts";
import { randomUUID } from "node:crypto";
import Fastify, { LogController, type FastifyInstance } from "fastify";
import type { SecureContextOptions } from "node:tls";
import type { AppDeps } from "./deps.ts";
import { registerErrorHandling } from "./plugins/errors.ts";
import { registerJsonBody } from "./plugins/json-body.ts";
import { registerAuth } from "./plugins/auth.ts";
import { AuthFailures } from "./plugins/auth-failures.ts";
import { localCounters, sharedCounters, type Counters } from "./plugins/counters.ts";
import { countHttp } from "../metrics.ts";
import { registerMetricsRoute } from "./metrics.ts";
import { registerIpRateLimit, registerKeyRateLimit } from "./plugins/rate-limits.ts";
import { registerSecurityHeaders } from "./plugins/security-headers.ts";
import { registerRoute, type AnyRoute } from "./route.ts";
import { ROUTES } from "./routes/index.ts";
import { registerApiReference } from "./routes/getApiReference.ts";
import { createHttpsServer, type HttpsServerTimeouts } from "./https-server.ts";
import { SenderDomainGate } from "../services/sender-domain-gate.ts";
import { ReceiptSigner } from "../services/receipts.ts";
import { heloName } from "../config.ts";
import { MessageWriter, maxQueueWaitFor } from "../services/message-writer.ts";
import type { TxtLookup } from "../services/sender-domains.ts";
import { createTxtResolver } from "../worker/mx.ts";

const TIMEOUTS: HttpsServerTimeouts = { keepAliveTimeoutMs: 72_000, requestTimeoutMs: 60_000, connectionTimeoutMs: 30_000 };

export interface BuildOptions {
  /** The operations to serve (default: every route of the API); a test may add its own. */
  routes?: AnyRoute[];
}

export async function buildApp(
  given: Omit<AppDeps, "writer" | "dns" | "counters" | "receipts"> & { writer?: MessageWriter; dns?: TxtLookup; counters?: Counters; receipts?: ReceiptSigner },
  https: SecureContextOptions,
  opts: BuildOptions = {},
): Promise<FastifyInstance> {
  const writer =
    given.writer ??
    new MessageWriter(given.db.pool, {
      maxQueueWaitMs: maxQueueWaitFor(given.db.statementTimeoutMs, given.db.singleSession),
      prepared: !given.db.singleSession,
    });
  // The same resolver set-up as the worker's (DNS_SERVERS), so a domain verifies against the DNS that delivery sees.
  const dns = given.dns ?? createTxtResolver(given.config.DNS_SERVERS ? { servers: given.config.DNS_SERVERS } : {});
  const senderDomains = given.config.SENDER_DOMAINS === "verified" ? new SenderDomainGate(given.db.prisma) : undefined;
  const counters = given.counters ?? (given.config.REDIS_URL ? await sharedCounters(given.config.REDIS_URL, given.config.REDIS_KEY_PREFIX, given.logger) : localCounters());
  const receipts = given.receipts ?? new ReceiptSigner(given.db.prisma, given.cipher, heloName(given.config));
  const deps: AppDeps = { ...given, writer, dns, senderDomains, counters, receipts };
  const app = Fastify({
    https,
    // Our https.Server: the same as Fastify's, plus a 400 for plain HTTP sent to this port.
    serverFactory: (handler: Parameters<typeof createHttpsServer>[1]) => createHttpsServer(https, handler, TIMEOUTS),
    loggerInstance: deps.logger.child({ component: "api" }),
    bodyLimit: deps.config.BODY_LIMIT_BYTES,
    trustProxy: deps.config.TRUST_PROXY,
    // Reject __proto__ and constructor.prototype keys instead of silently dropping them.
    onProtoPoisoning: "error",
    onConstructorPoisoning: "error",
    genReqId: (req: { headers: Record<string, string | string[] | undefined> }) => {
      const given = req.headers["x-request-id"];
      return typeof given === "string" && /^[A-Za-z0-9._-]{8,64}$/.test(given) ? given : randomUUID();
    },
    requestIdHeader: false,
    // One log line per request (the onResponse hook below) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    // Our own 503 while closing (below): Fastify's has no Retry-After and is not a problem document.
    return503OnClosing: false,
    connectionTimeout: TIMEOUTS.connectionTimeoutMs,
    requestTimeout: TIMEOUTS.requestTimeoutMs,
    keepAliveTimeout: TIMEOUTS.keepAliveTimeoutMs,
    http2: false,
  } as never) as unknown as FastifyInstance;

  // Hooks that do not wait for anything take a callback: an async hook costs a promise and
  // a microtask turn per request.
  // A request that reaches a closing server (pipelined, or on a keep-alive connection that
  // was busy when the close began) is answered 503 with Retry-After, and the connection
  // closed, so the client retries on another instance or the restarted one.
  let closing = false;
  app.addHook("preClose", (done) => {
    closing = true;
    done();
  });
  app.addHook("onRequest", (req, reply, done) => {
    reply.header("x-request-id", req.id);
    if (!closing) return done();
    reply.header("connection", "close");
    done(new AppError("service_unavailable", "this server is shutting down; retry the request"));
  });
  // Method, route path (no query string: it never carries a key, but could carry an id
  // someone considers private), status and time. Never headers or bodies.
  app.addHook("onResponse", (req, reply, done) => {
    countHttp(req.method, req.routeOptions.url ?? "(no route)", reply.statusCode);
    req.log.info(
      { method: req.method, url: req.routeOptions.url ?? "(no route)", status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 },
      "request",
    );
    done();
  });
  // Only JSON bodies: text/plain would let a browser form post cross-origin without preflight.
  app.removeContentTypeParser("text/plain");
  registerJsonBody(app);
  registerErrorHandling(app);
  registerSecurityHeaders(app);
  registerIpRateLimit(app, deps.config, counters);
  registerAuth(app, deps.keys, new AuthFailures(counters, deps.config.RATE_LIMIT_AUTH_FAIL_MAX, deps.config.RATE_LIMIT_AUTH_FAIL_WINDOW_MS));
  registerKeyRateLimit(app, deps.config, counters);
  if (!given.counters) app.addHook("onClose", async () => counters.close());

  for (const route of opts.routes ?? ROUTES) registerRoute(app, route, deps);
  // Generated on the first request, not at start: building it (every schema and example)
  // took about 10 MB that a serving process otherwise keeps for nothing.
  let spec: string | undefined;
  app.get("/openapi.yaml", { config: { scope: null } }, async (_req, reply) => {
    spec ??= (await import("./openapi.ts")).openApiYaml();
    return reply.type("application/yaml; charset=utf-8").send(spec);
  });
  registerApiReference(app);
  if (deps.config.METRICS_TOKEN) registerMetricsRoute(app, deps.config.METRICS_TOKEN);
  return app;
}
