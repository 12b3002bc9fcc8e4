// The HTTPS listener's TLS policy, probed with real handshakes on loopback, and the
// certificate files behind it: development certificates and reload without restart.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { waitFor } from "../helpers/wait.ts";
import { serverTlsOptions } from "../../src/api/tls-options.ts";
import { ensureDevCertificates, loadPem, watchCertificates, type CertPaths } from "../../src/api/certificates.ts";
import { createCa, issueCertificate, type Pem } from "../../src/tls/certificates.ts";
import { rawTlsProbe, request } from "../helpers/https-client.ts";

const ca = createCa("sealpost https test CA");
const NAMES = ["localhost", "127.0.0.1"];
const first = issueCertificate({ names: NAMES, ca });
const trust = { ca: ca.cert, servername: "localhost" };

async function startServer(t: TestContext, pem: { cert: string | Buffer; key: string | Buffer }) {
  const server = https.createServer(serverTlsOptions(pem), (_req, res) => res.end("ok"));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(async () => {
    server.closeAllConnections();
    if (server.listening) await new Promise((resolve) => server.close(resolve));
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** A handshake the server must refuse; returns the client's and the server's error codes. */
async function refused(server: https.Server, port: number, opts: tls.ConnectionOptions) {
  const [[serverErr], client] = await Promise.all([once(server, "tlsClientError"), rawTlsProbe("127.0.0.1", port, { ...trust, ...opts })]);
  assert.equal(client.ok, false, `handshake with ${JSON.stringify(opts)} should fail`);
  return { client: client.ok ? "" : client.code, server: (serverErr as NodeJS.ErrnoException).code };
}

const fingerprint = (pem: Pem) => new X509Certificate(pem.cert).fingerprint256;

test("TLS 1.0 and 1.1 are refused by the server (RFC 8996)", async (t) => {
  const { server, port } = await startServer(t, first);
  for (const version of ["TLSv1", "TLSv1.1"] as const) {
    // SECLEVEL=0 lets this client offer the old versions, so the refusal is the server's.
    const r = await refused(server, port, { minVersion: version, maxVersion: version, ciphers: "DEFAULT@SECLEVEL=0" });
    assert.equal(r.client, "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION", version); // alert received from the server
    assert.equal(r.server, "ERR_SSL_UNSUPPORTED_PROTOCOL", version);
  }
});

test("TLS 1.2 refuses CBC, SHA-1, static RSA and DHE suites", async (t) => {
  const { server, port } = await startServer(t, first);
  const weak = [
    "ECDHE-RSA-AES128-SHA256", // CBC
    "ECDHE-RSA-AES128-SHA", // CBC, SHA-1 MAC
    "AES128-SHA", // static RSA key exchange, CBC
    "AES128-GCM-SHA256", // static RSA key exchange: no forward secrecy
    "DHE-RSA-AES128-GCM-SHA256", // finite-field DHE
  ];
  for (const cipher of weak) {
    const r = await refused(server, port, { maxVersion: "TLSv1.2", ciphers: `${cipher}:@SECLEVEL=0` });
    // OpenSSL 3.5 (Node 24) names the alert ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE, 3.0 names it SSLV3_ALERT.
    assert.match(r.client ?? "", /^ERR_SSL_(SSLV3|SSL\/TLS)_ALERT_HANDSHAKE_FAILURE$/, cipher);
    assert.equal(r.server, "ERR_SSL_NO_SHARED_CIPHER", cipher);
  }
});

test("under TLS 1.2 exactly the ECDHE AEAD suites are accepted, in the server's order", async (t) => {
  const { port } = await startServer(t, first);
  // Every TLS 1.2 suite this OpenSSL knows, one at a time (PSK and SRP suites cannot be
  // offered without callbacks and fail locally; they are not accepted either way).
  const accepted: string[] = [];
  for (const name of tls.getCiphers().filter((c) => !c.startsWith("tls_"))) {
    const r = await rawTlsProbe("127.0.0.1", port, { ...trust, maxVersion: "TLSv1.2", ciphers: `${name.toUpperCase()}:@SECLEVEL=0` });
    if (r.ok) accepted.push(r.cipher);
  }
  // The certificate is RSA, so the ECDSA variants cannot be negotiated here.
  assert.deepEqual(accepted.sort(), ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"]);

  // honorCipherOrder: the client lists AES-128-GCM last and still gets it.
  const r = await rawTlsProbe("127.0.0.1", port, {
    ...trust,
    maxVersion: "TLSv1.2",
    ciphers: "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256",
  });
  assert.deepEqual(r.ok && [r.protocol, r.cipher], ["TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"]);
});

test("TLS 1.3 is accepted", async (t) => {
  const { port } = await startServer(t, first);
  const r = await rawTlsProbe("127.0.0.1", port, { ...trust, minVersion: "TLSv1.3" });
  assert.equal(r.ok && r.protocol, "TLSv1.3");
  assert.equal(r.ok && r.cipher, "TLS_AES_128_GCM_SHA256");
});

test("TLS 1.2 renegotiation is refused", async (t) => {
  const { port } = await startServer(t, first);
  const socket = tls.connect({ host: "127.0.0.1", port, ...trust, maxVersion: "TLSv1.2" });
  t.after(() => socket.destroy());
  await once(socket, "secureConnect");
  const outcome = await new Promise<string>((resolve) => {
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.renegotiate({}, (err) => resolve(err ? "callback error" : "renegotiated"));
  });
  assert.equal(outcome, "ERR_SSL_NO_RENEGOTIATION");
});

test("a plaintext HTTP request gets no HTTP response", async (t) => {
  const { server, port } = await startServer(t, first);
  const serverErr = once(server, "tlsClientError");
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {}); // a reset is an acceptable way to end; 'close' follows
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
  await once(socket, "close");
  assert.ok(!Buffer.concat(chunks).toString("latin1").startsWith("HTTP/"), "server answered plaintext HTTP");
  await serverErr; // the bytes reached the TLS layer and were rejected there
});

// ---- certificate files ----

function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sealpost-certs-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writePair(paths: CertPaths, pem: Pem): void {
  for (const [file, data] of [[paths.keyFile, pem.key], [paths.certFile, pem.cert]] as const) {
    fs.writeFileSync(`${file}.tmp`, data);
    fs.renameSync(`${file}.tmp`, file);
  }
}

function recordingLog() {
  const entries: Array<{ level: "info" | "warn"; obj: object; msg: string }> = [];
  return {
    entries,
    info: (obj: object, msg: string) => void entries.push({ level: "info", obj, msg }),
    warn: (obj: object, msg: string) => void entries.push({ level: "warn", obj, msg }),
  };
}

async function servedFingerprint(port: number): Promise<string> {
  const r = await rawTlsProbe("127.0.0.1", port, trust);
  assert.ok(r.ok, `handshake failed: ${r.ok ? "" : r.code}`);
  return r.fingerprint256;
}

async function watchedServer(t: TestContext, opts: { signal?: boolean } = { signal: false }) {
  const dir = tempDir(t);
  const paths = { certFile: path.join(dir, "server.crt"), keyFile: path.join(dir, "server.key") };
  writePair(paths, first);
  const { server, port } = await startServer(t, loadPem(paths));
  let closed = false;
  server.on("close", () => (closed = true));
  const log = recordingLog();
  const watcher = watchCertificates(server, paths, log, opts);
  t.after(() => watcher.stop());
  return { server, port, paths, log, watcher, closed: () => closed };
}

test("reload serves the new certificate to new connections; the listener and open connections stay", async (t) => {
  const { server, port, paths, watcher, closed } = await watchedServer(t);
  assert.equal(await servedFingerprint(port), fingerprint(first));
  const held = tls.connect({ host: "127.0.0.1", port, ...trust });
  t.after(() => held.destroy());
  await once(held, "secureConnect");
  assert.equal(held.getPeerCertificate().fingerprint256, fingerprint(first));

  const second = issueCertificate({ names: NAMES, ca });
  writePair(paths, second);
  assert.equal(watcher.reload(), true);
  assert.equal(await servedFingerprint(port), fingerprint(second));

  // The connection opened before the reload (on the old certificate) still works.
  held.end("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  const chunks: Buffer[] = [];
  held.on("data", (c: Buffer) => chunks.push(c));
  await once(held, "end");
  assert.match(Buffer.concat(chunks).toString("latin1"), /^HTTP\/1\.1 200/);

  assert.equal(closed(), false);
  assert.equal(server.listening, true);
  assert.equal((server.address() as AddressInfo).port, port);
});

test("the directory watcher reloads replaced files by itself", async (t) => {
  const { port, paths } = await watchedServer(t);
  const next = issueCertificate({ names: NAMES, ca });
  writePair(paths, next);
  await waitFor(async () => (await servedFingerprint(port)) === fingerprint(next), { what: "watcher reload", timeoutMs: 5000, intervalMs: 20 });
});

test("SIGHUP reloads", async (t) => {
  const { port, paths, log } = await watchedServer(t, { signal: true });
  const next = issueCertificate({ names: NAMES, ca });
  writePair(paths, next);
  process.kill(process.pid, "SIGHUP");
  await waitFor(() => log.entries.some((e) => e.msg.startsWith("SIGHUP")), { what: "SIGHUP handled", timeoutMs: 5000, intervalMs: 20 });
  assert.equal(await servedFingerprint(port), fingerprint(next));
});

test("an invalid replacement keeps the old certificate", async (t) => {
  const { port, paths, log, watcher, closed } = await watchedServer(t);
  const other = issueCertificate({ names: NAMES, ca });
  const expired = issueCertificate({
    names: NAMES,
    ca,
    notBefore: new Date(Date.now() - 10 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
  });
  const invalid: Array<[string, Pem]> = [
    ["certificate with another key", { cert: other.cert, key: first.key }],
    ["not PEM", { cert: "garbage\n", key: "garbage\n" }],
    ["expired", expired],
  ];
  for (const [label, pem] of invalid) {
    writePair(paths, pem);
    const warnings = log.entries.filter((e) => e.level === "warn").length;
    assert.equal(watcher.reload(), false, label);
    assert.equal(log.entries.filter((e) => e.level === "warn").length, warnings + 1, `${label}: one warning`);
    assert.equal(await servedFingerprint(port), fingerprint(first), label);
  }
  assert.equal(closed(), false);
});

test("ensureDevCertificates creates a CA and a server certificate once, keys mode 0600", (t) => {
  const dir = tempDir(t);
  const log = recordingLog();
  const made = ensureDevCertificates(dir, log);
  assert.equal(made.created, true);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["ca.crt", "ca.key", "server.crt", "server.key"]);
  for (const key of ["ca.key", "server.key"]) assert.equal(fs.statSync(path.join(dir, key)).mode & 0o777, 0o600, key);
  assert.ok(log.entries.some((e) => e.level === "info" && e.msg.includes(made.caFile)), "CA path is logged");

  const contents = () => fs.readdirSync(dir).map((f) => fs.readFileSync(path.join(dir, f), "utf8"));
  const before = contents();
  const again = ensureDevCertificates(dir, log);
  assert.equal(again.created, false);
  assert.deepEqual({ ...again, created: true }, made);
  assert.deepEqual(contents(), before);
});

test("a client trusting the dev ca.crt verifies localhost, 127.0.0.1 and ::1", async (t) => {
  const paths = ensureDevCertificates(tempDir(t), recordingLog());
  const { port } = await startServer(t, loadPem(paths));
  const devCa = fs.readFileSync(paths.caFile);

  const res = await request(`https://127.0.0.1:${port}/`, { ca: devCa, servername: "localhost" });
  assert.equal(res.status, 200);
  assert.equal(res.body, "ok");
  assert.equal((await rawTlsProbe("127.0.0.1", port, { ca: devCa })).ok, true); // IP SAN
  assert.ok(new X509Certificate(fs.readFileSync(paths.certFile)).checkIP("::1"));

  // The check is real: another name, or another CA, is rejected.
  const wrongName = await rawTlsProbe("127.0.0.1", port, { ca: devCa, servername: "example.com" });
  assert.deepEqual(wrongName, { ok: false, code: "ERR_TLS_CERT_ALTNAME_INVALID" });
  const wrongCa = await rawTlsProbe("127.0.0.1", port, { ca: ca.cert, servername: "localhost" });
  assert.equal(wrongCa.ok, false);
});

test("ensureDevCertificates re-issues a server certificate near expiry with the same CA", (t) => {
  const dir = tempDir(t);
  const paths = ensureDevCertificates(dir, recordingLog());
  const caBefore = fs.readFileSync(paths.caFile, "utf8");
  const devCa = { cert: caBefore, key: fs.readFileSync(path.join(dir, "ca.key"), "utf8") };
  writePair(paths, issueCertificate({ names: ["localhost", "127.0.0.1", "::1"], ca: devCa, notAfter: new Date(Date.now() + 10 * 86_400_000) }));

  const renewed = ensureDevCertificates(dir, recordingLog());
  assert.equal(renewed.created, true);
  assert.equal(fs.readFileSync(paths.caFile, "utf8"), caBefore);
  const leaf = new X509Certificate(fs.readFileSync(paths.certFile));
  assert.ok(Date.parse(leaf.validTo) > Date.now() + 365 * 86_400_000);
  assert.ok(leaf.verify(new X509Certificate(caBefore).publicKey));
});
