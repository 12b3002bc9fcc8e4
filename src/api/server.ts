// The HTTPS listener: certificates (real ones, or a generated development CA),
// listen, hot certificate reload and graceful shutdown. There is no plaintext
// listener at all.
import type { FastifyInstance } from "fastify";
import type { Server as TlsServer } from "node:tls";
import type { Runtime } from "../runtime.ts";
import { buildApp } from "./app.ts";
import { ensureDevCertificates, loadPem, watchCertificates, type CertPaths } from "./certificates.ts";
import { serverTlsOptions } from "./tls-options.ts";
import { ApiKeyVerifier } from "../services/api-keys.ts";

export interface RunningServer {
  app: FastifyInstance;
  url: string;
  caFile: string | null;
  close(): Promise<void>;
}

export function resolveCertificates(rt: Runtime): CertPaths {
  const c = rt.config;
  if (c.TLS_CERT_FILE && c.TLS_KEY_FILE) return { certFile: c.TLS_CERT_FILE, keyFile: c.TLS_KEY_FILE, ...(c.TLS_CA_FILE ? { caFile: c.TLS_CA_FILE } : {}) };
  // config.ts refuses production without certificate files, so this is development only.
  const dev = ensureDevCertificates(c.CERTS_DIR, rt.logger);
  return { certFile: dev.certFile, keyFile: dev.keyFile, caFile: dev.caFile };
}

export async function startServer(rt: Runtime): Promise<RunningServer> {
  const paths = resolveCertificates(rt);
  const app = await buildApp(
    { config: rt.config, db: rt.db, cipher: rt.cipher, keys: new ApiKeyVerifier(rt.db.prisma, rt.config.API_KEY_CACHE_TTL_MS), logger: rt.logger },
    serverTlsOptions(loadPem(paths)),
  );
  await app.listen({ host: rt.config.HOST, port: rt.config.PORT });
  const watcher = watchCertificates(app.server as unknown as TlsServer, paths, rt.logger);
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
