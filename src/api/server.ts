// The HTTPS listener: certificates (real ones, or a generated development CA),
// listen, hot certificate reload and graceful shutdown. There is no plaintext
// listener at all (plain HTTP sent to the port gets a 400 naming https://: https-server.ts).
import { createPrivateKey, X509Certificate } from "node:crypto";
import { createSecureContext, type Server as TlsServer } from "node:tls";
import type { Runtime } from "../runtime.ts";
import { buildApp } from "./app.ts";
import { ensureDevCertificates, loadPem, watchCertificates, type CertLog, type CertPaths } from "./certificates.ts";
import { ConfigError, type Config } from "../config.ts";
import { serverTlsOptions } from "./tls-options.ts";
import { ApiKeyVerifier } from "../services/api-keys.ts";

export interface RunningServer {
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
  try {
    return ensureDevCertificates(config.CERTS_DIR, log);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM" || code === "EROFS" || code === "ENOTDIR")
      throw new ConfigError(
        `CERTS_DIR: cannot write the development certificate in ${config.CERTS_DIR} (${code === "ENOTDIR" ? "not a directory" : "not writable"}): set CERTS_DIR to a writable directory, or set TLS_CERT_FILE and TLS_KEY_FILE`,
        { cause: err },
      );
    throw err;
  }
}

/** The certificate and key the server starts with; a file that cannot be served is a ConfigError naming its variable. */
function loadServedCertificate(config: Config, paths: CertPaths): { cert: Buffer; key: Buffer } {
  if (config.TLS_CERT_FILE === undefined) return loadPem(paths); // the development pair, made and checked by ensureDevCertificates
  let served: { cert: Buffer; key: Buffer };
  try {
    served = loadPem(paths);
  } catch (err) {
    const file = (err as NodeJS.ErrnoException).path === paths.keyFile ? paths.keyFile : paths.certFile;
    throw ConfigError.unreadableFile(file === paths.keyFile ? "TLS_KEY_FILE" : "TLS_CERT_FILE", file, err);
  }
  try {
    new X509Certificate(served.cert);
  } catch (err) {
    throw new ConfigError(`TLS_CERT_FILE: ${paths.certFile} is not a PEM certificate: point it at the server certificate (with its chain)`, { cause: err });
  }
  try {
    createPrivateKey(served.key);
  } catch (err) {
    throw new ConfigError(`TLS_KEY_FILE: ${paths.keyFile} is not a PEM private key without a passphrase: point it at the certificate's private key`, { cause: err });
  }
  try {
    // Builds the context exactly as the server will (a key that belongs to another certificate fails here).
    createSecureContext(serverTlsOptions(served));
  } catch (err) {
    const why = (err as { code?: string }).code === "ERR_OSSL_X509_KEY_VALUES_MISMATCH" ? "the key does not belong to the certificate" : (err as Error).message;
    throw new ConfigError(`TLS_CERT_FILE and TLS_KEY_FILE cannot be served together (${why}): point TLS_KEY_FILE at the private key of ${paths.certFile}`, { cause: err });
  }
  return served;
}

/** Why the listener could not open, as the operator fixes it. */
function listenError(err: unknown, config: Config): ConfigError | null {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "EADDRINUSE") return new ConfigError(`port ${config.PORT} is in use: set PORT or stop the other process`, { cause: err });
  if (code === "EACCES")
    return new ConfigError(`cannot listen on port ${config.PORT} (permission denied: ports below 1024 need privileges): set PORT to 1024 or above, or grant CAP_NET_BIND_SERVICE`, { cause: err });
  if (code === "EADDRNOTAVAIL") return new ConfigError(`cannot listen on ${config.HOST} (not an address of this machine): set HOST`, { cause: err });
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return new ConfigError(`cannot listen on ${config.HOST} (host name not found): set HOST`, { cause: err });
  return null;
}

export async function startServer(rt: Runtime): Promise<RunningServer> {
  const paths = resolveCertificates(rt.config, rt.logger);
  const served = loadServedCertificate(rt.config, paths);
  const app = await buildApp(
    { config: rt.config, db: rt.db, cipher: rt.cipher, keys: new ApiKeyVerifier(rt.db.prisma, rt.config.API_KEY_CACHE_TTL_MS), logger: rt.logger },
    serverTlsOptions(served),
  );
  try {
    await app.listen({ host: rt.config.HOST, port: rt.config.PORT });
  } catch (err) {
    await app.close().catch(() => {});
    throw listenError(err, rt.config) ?? err;
  }
  const watcher = watchCertificates(app.server as unknown as TlsServer, paths, rt.logger, { served });
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : rt.config.PORT;
  const url = `https://localhost:${port}`;
  rt.logger.info({ url, caFile: paths.caFile }, "sealpost API listening (HTTPS only)");
  return {
    url,
    caFile: paths.caFile ?? null,
    async close() {
      watcher.stop();
      await app.close();
    },
  };
}
