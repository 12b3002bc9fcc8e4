// The HTTPS server's certificate files: a development CA and server certificate made on
// first start (outside production, when TLS_CERT_FILE/TLS_KEY_FILE are unset), loading,
// and reloading without a restart when the files change or on SIGHUP.
import { X509Certificate, createPrivateKey } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { createCa, issueCertificate, type Pem } from "../tls/certificates.ts";
import { writeAtomic } from "../files.ts";
import { serverTlsOptions } from "./tls-options.ts";

export interface CertPaths {
  certFile: string;
  keyFile: string;
  /**
   * The CA clients should trust (printed for `curl --cacert`). It is not sent by the
   * server: intermediates belong in certFile after the leaf, as in a fullchain.pem.
   */
  caFile?: string;
}

/** The subset of a pino logger used here. */
export interface CertLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

const DEV_NAMES = ["localhost", "127.0.0.1", "::1"];
const RENEW_WITHIN_MS = 30 * 86_400_000;
const LOCK_STALE_MS = 30_000;
const RELOAD_DEBOUNCE_MS = 200;

/**
 * Create (once) certs/ca.crt, ca.key, server.crt, server.key for localhost, 127.0.0.1
 * and ::1, or reuse them while they stay valid for more than 30 days. A server
 * certificate close to expiry is re-issued by the same CA, so a CA the developer
 * already trusts keeps working. Keys are written with mode 0600.
 */
export function ensureDevCertificates(
  certsDir: string,
  log: CertLog,
): CertPaths & { caFile: string; created: boolean } {
  const dir = path.resolve(certsDir);
  const files = {
    caFile: path.join(dir, "ca.crt"),
    caKeyFile: path.join(dir, "ca.key"),
    certFile: path.join(dir, "server.crt"),
    keyFile: path.join(dir, "server.key"),
  };
  fs.mkdirSync(dir, { recursive: true });
  const created = withLock(path.join(dir, ".lock"), () => {
    let wrote = false;
    let ca = readUsablePair(files.caFile, files.caKeyFile, (x) => x.ca);
    if (!ca) {
      ca = createCa("sealpost development CA");
      writeAtomic(files.caKeyFile, ca.key, 0o600);
      writeAtomic(files.caFile, ca.cert, 0o644);
      wrote = true;
    }
    const caKey = new X509Certificate(ca.cert).publicKey;
    const coversDevNames = (x: X509Certificate) =>
      x.checkHost("localhost") !== undefined && x.checkIP("127.0.0.1") !== undefined && x.checkIP("::1") !== undefined;
    const serverOk = !wrote && readUsablePair(files.certFile, files.keyFile, (x) => x.verify(caKey) && coversDevNames(x));
    if (!serverOk) {
      const leaf = issueCertificate({ names: DEV_NAMES, ca });
      // Key first: a crash between the two renames leaves a mismatched pair, which the
      // next start detects and re-issues, never a new cert served with an old key.
      writeAtomic(files.keyFile, leaf.key, 0o600);
      writeAtomic(files.certFile, leaf.cert, 0o644);
      wrote = true;
    }
    return wrote;
  });
  log.info(
    { caFile: files.caFile, certFile: files.certFile, created },
    `development TLS certificate for ${DEV_NAMES.join(", ")}; trust it with: curl --cacert ${files.caFile}`,
  );
  return { caFile: files.caFile, certFile: files.certFile, keyFile: files.keyFile, created };
}

export function loadPem(paths: CertPaths): { cert: Buffer; key: Buffer } {
  return { cert: fs.readFileSync(paths.certFile), key: fs.readFileSync(paths.keyFile) };
}

/**
 * Keep `server` serving what is in the certificate files: reload on change (debounced)
 * and on SIGHUP (unless `signal: false`). Invalid files (unreadable, key not matching,
 * expired or not yet valid) are refused with a warning and the previous certificate
 * stays in use. Existing connections are untouched; the listener never closes.
 */
export function watchCertificates(
  server: tls.Server,
  paths: CertPaths,
  log: CertLog,
  opts: { signal?: boolean; served?: { cert: Buffer; key: Buffer } } = {},
): { reload(): boolean; stop(): void } {
  // What the server serves now: given by the caller that just loaded it, so a change
  // between loading and watching is not missed, or read here.
  let applied: { cert: Buffer; key: Buffer } | undefined = opts.served;
  if (!applied) {
    try {
      applied = loadPem(paths);
    } catch {
      // Nothing to compare with yet; the first successful reload sets it.
    }
  }

  function reload(): boolean {
    let pem: { cert: Buffer; key: Buffer };
    let leaf: X509Certificate;
    try {
      pem = loadPem(paths);
      if (applied && pem.cert.equals(applied.cert) && pem.key.equals(applied.key)) return true;
      leaf = checkCertificate(pem);
      server.setSecureContext(serverTlsOptions(pem));
    } catch (err) {
      log.warn({ err, certFile: paths.certFile, keyFile: paths.keyFile }, "TLS certificate not reloaded; still serving the previous one");
      return false;
    }
    applied = pem;
    log.info(
      { certFile: paths.certFile, subject: leaf.subject, validTo: leaf.validTo, fingerprint256: leaf.fingerprint256 },
      "TLS certificate reloaded",
    );
    return true;
  }

  const unwatch = watchDirectoriesOf([paths.certFile, paths.keyFile], reload, log);
  const onSighup = () => {
    log.info({ certFile: paths.certFile }, "SIGHUP: reloading TLS certificate");
    reload();
  };
  if (opts.signal ?? true) process.on("SIGHUP", onSighup);

  function stop(): void {
    unwatch();
    process.off("SIGHUP", onSighup);
    server.off("close", stop);
  }
  server.once("close", stop);
  return { reload, stop };
}

/**
 * Calls `onChange` (debounced) after any change in the directories holding `files`;
 * returns a function that stops watching. Directories, not files: inotify follows an
 * inode, and certificate tools replace files by rename (certbot, Kubernetes' `..data`
 * symlink swap, our own writeAtomic), which would leave a file watch on the old inode
 * forever. Unchanged content makes the reload a no-op.
 */
function watchDirectoriesOf(files: string[], onChange: () => void, log: CertLog): () => void {
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      onChange();
    }, RELOAD_DEBOUNCE_MS).unref();
  };
  const watchers: fs.FSWatcher[] = [];
  for (const dir of new Set(files.map((f) => path.dirname(path.resolve(f))))) {
    try {
      const w = fs.watch(dir, { persistent: false }, schedule);
      w.on("error", (err) => log.warn({ err, dir }, "certificate directory watch failed; SIGHUP still reloads"));
      watchers.push(w);
    } catch (err) {
      log.warn({ err, dir }, "cannot watch certificate directory; SIGHUP still reloads");
    }
  }
  return () => {
    for (const w of watchers) w.close();
    clearTimeout(timer);
  };
}

/** Throws unless the pair can be served now. Returns the leaf (first certificate in the file). */
function checkCertificate(pem: { cert: Buffer; key: Buffer }): X509Certificate {
  const leaf = new X509Certificate(pem.cert);
  const now = Date.now();
  if (Date.parse(leaf.validFrom) > now || Date.parse(leaf.validTo) <= now) {
    throw new Error(`certificate is not valid now (valid ${leaf.validFrom} to ${leaf.validTo})`);
  }
  // Builds a context exactly as the server will; throws on a malformed key or a key
  // that does not match the certificate (ERR_OSSL_X509_KEY_VALUES_MISMATCH).
  tls.createSecureContext(serverTlsOptions(pem));
  return leaf;
}

/** The PEM pair if both files parse, match, stay valid beyond the renewal window and pass `accept`. */
function readUsablePair(certFile: string, keyFile: string, accept: (x: X509Certificate) => boolean): Pem | undefined {
  try {
    const pem = { cert: fs.readFileSync(certFile, "utf8"), key: fs.readFileSync(keyFile, "utf8") };
    const x = new X509Certificate(pem.cert);
    const usable =
      x.checkPrivateKey(createPrivateKey(pem.key)) &&
      Date.parse(x.validFrom) <= Date.now() &&
      Date.parse(x.validTo) - Date.now() > RENEW_WITHIN_MS &&
      accept(x);
    return usable ? pem : undefined;
  } catch {
    return undefined; // missing or unparseable: make new ones
  }
}

/**
 * Several API processes may start at once on one certs directory; without a lock two
 * of them could interleave their renames and leave a certificate with the other's key.
 * The lock is a file created with O_EXCL; one left behind by a crash is broken after 30 s.
 */
function withLock<T>(lockFile: string, fn: () => T): T {
  const deadline = Date.now() + 2 * LOCK_STALE_MS;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      fs.closeSync(fs.openSync(lockFile, "wx", 0o600));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const age = Date.now() - (fs.statSync(lockFile, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > LOCK_STALE_MS) fs.rmSync(lockFile, { force: true });
      else if (Date.now() > deadline) throw new Error(`timed out waiting for ${lockFile}`);
      else Atomics.wait(pause, 0, 0, 50); // synchronous start-up code: block briefly, then retry
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lockFile, { force: true });
  }
}
