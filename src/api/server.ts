// The HTTPS listener: certificates (real ones, or a generated development CA),
// listen, hot certificate reload and graceful shutdown. There is no plaintext
// listener at all (plain HTTP sent to the port gets a 400 naming https://: https-server.ts).
import type { FastifyInstance } from "fastify";
import type { Server as TlsServer } from "node:tls";
import type { Runtime } from "../runtime.ts";
import { buildApp } from "./app.ts";
import { ensureDevCertificates, loadPem, watchCertificates, type CertLog, type CertPaths } from "./certificates.ts";
import { ConfigError, type Config } from "../config.ts";
import { serverTlsOptions } from "./tls-options.ts";
import { ApiKeyVerifier } from "../services/api-keys.ts";

export interface RunningServer {
  app: FastifyInstance;
  url: string;
  caFile: string | null;
  close(): Promise<void>;
}

/**
 * The server's certificate files. Only the API needs them, so the check lives here and
 * not in config.ts: a worker in production runs without any TLS key.
 */
export function resolveCertificates(config: Config, log: CertLog): CertPaths {
  if (config.TLS_CERT_FILE && config.TLS_KEY_FILE)
    return { certFile: config.TLS_CERT_FILE, keyFile: config.TLS_KEY_FILE, ...(config.TLS_CA_FILE ? { caFile: config.TLS_CA_FILE } : {}) };
  if (config.NODE_ENV === "production")
    throw new ConfigError("invalid configuration:\n  TLS_CERT_FILE: TLS_CERT_FILE and TLS_KEY_FILE are required when NODE_ENV=production");
  return ensureDevCertificates(config.CERTS_DIR, log);
}

export async function startServer(rt: Runtime): Promise<RunningServer> {
  const paths = resolveCertificates(rt.config, rt.logger);
  const served = loadPem(paths);
  const app = await buildApp(
    { config: rt.config, db: rt.db, cipher: rt.cipher, keys: new ApiKeyVerifier(rt.db.prisma, rt.config.API_KEY_CACHE_TTL_MS), logger: rt.logger },
    serverTlsOptions(served),
  );
  await app.listen({ host: rt.config.HOST, port: rt.config.PORT });
  const watcher = watchCertificates(app.server as unknown as TlsServer, paths, rt.logger, { served });
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : rt.config.PORT;
  const url = `https://localhost:${port}`;
  rt.logger.info({ url, caFile: paths.caFile }, "sealpost API listening (HTTPS only)");
  return {
    app,
    url,
    caFile: paths.caFile ?? null,
    async close() {
      watcher.stop();
      await app.close();
    },
  };
}
