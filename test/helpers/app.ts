// Builds the real app (real Postgres, real HTTPS with a test CA) on 127.0.0.1:0 and
// gives tests a small client bound to it. Everything is closed by `close()`.
import type { FastifyInstance } from "fastify";
import { Writable } from "node:stream";
import { buildApp } from "../../src/api/app.ts";
import type { AnyRoute } from "../../src/api/route.ts";
import { serverTlsOptions } from "../../src/api/tls-options.ts";
import { loadConfig, type Config } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { ContentCipher } from "../../src/security/content-cipher.ts";
import { ApiKeyVerifier, createApiKey, type NewKeyInput } from "../../src/services/api-keys.ts";
import type { TxtLookup } from "../../src/services/sender-domains.ts";
import { issueCertificate, type Pem } from "../../src/tls/certificates.ts";
import { testCa } from "./smtp-peers.ts";
import { createTestDatabase, type TestDatabase } from "./db.ts";
import { request, type Response } from "./https-client.ts";
import { trackOpen } from "./leak-guard.ts";

let leaf: Pem | undefined;
/** The API's certificate for localhost and 127.0.0.1, from the same test CA as the SMTP peers. */
export function testServerCertificates(): { ca: Pem; leaf: Pem } {
  leaf ??= issueCertificate({ names: ["localhost", "127.0.0.1"], ca: testCa() });
  return { ca: testCa(), leaf };
}

export const TEST_DATA_KEY = Buffer.alloc(32, 7).toString("base64");
export const testCipher = () => new ContentCipher([{ id: "k1", key: Buffer.from(TEST_DATA_KEY, "base64") }]);

/** A logger whose lines land in `logs`, for tests that assert on them. */
export function captureLogger(logs: string[], level: string) {
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  return createLogger(level, sink);
}

export interface TestApp {
  app: FastifyInstance;
  tdb: TestDatabase;
  url: string;
  ca: string;
  config: Config;
  cipher: ContentCipher;
  logs: string[];
  /** Request with the test CA trusted; `key` adds the Bearer header. */
  call(method: string, path: string, opts?: { key?: string; body?: unknown; headers?: Record<string, string> }): Promise<Response>;
  createKey(input?: Partial<NewKeyInput>): Promise<{ key: string; id: string }>;
  close(): Promise<void>;
}

export async function startTestApp(env: Record<string, string> = {}, opts: { tdb?: TestDatabase; routes?: AnyRoute[]; dns?: TxtLookup } = {}): Promise<TestApp> {
  const tdb = opts.tdb ?? (await createTestDatabase());
  const config = loadConfig({
    NODE_ENV: "test",
    DATABASE_URL: tdb.url,
    HOST: "127.0.0.1",
    PORT: "0",
    SEALPOST_DATA_KEY: TEST_DATA_KEY,
    LOG_LEVEL: "info",
    RATE_LIMIT_IP_MAX: "100000",
    RATE_LIMIT_KEY_MAX: "100000",
    RATE_LIMIT_AUTH_FAIL_MAX: "100000",
    ...env,
  });
  const logs: string[] = [];
  const logger = captureLogger(logs, config.LOG_LEVEL);
  const cipher = testCipher();
  const certs = testServerCertificates();
  const app = await buildApp(
    { config, db: tdb.db, cipher, keys: new ApiKeyVerifier(tdb.db.prisma, config.API_KEY_CACHE_TTL_MS), logger, ...(opts.dns ? { dns: opts.dns } : {}) },
    serverTlsOptions(certs.leaf),
    opts.routes ? { routes: opts.routes } : {},
  );
  await app.listen({ host: "127.0.0.1", port: 0 });
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  const url = `https://127.0.0.1:${port}`;
  const closed = trackOpen(`app on ${url}`, "startTestApp");
  return {
    app, tdb, url, ca: certs.ca.cert, config, cipher, logs,
    call(method, path, o = {}) {
      const headers: Record<string, string> = { ...(o.key ? { authorization: `Bearer ${o.key}` } : {}), ...o.headers };
      return request(url + path, { method, headers, body: o.body, ca: certs.ca.cert });
    },
    async createKey(input = {}) {
      const r = await createApiKey(tdb.db.prisma, { name: input.name ?? "test", ...input });
      return { key: r.key, id: r.record.id };
    },
    async close() {
      await app.close();
      if (!opts.tdb) await tdb.drop();
      closed();
    },
  };
}

export const validSend = (over: Record<string, unknown> = {}) => ({
  from: "Shop <noreply@shop.example>",
  to: "alice@example.com",
  subject: "Reset your password",
  text: "Follow this link to reset your password.",
  ...over,
});
