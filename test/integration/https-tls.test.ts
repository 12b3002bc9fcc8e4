// The HTTPS listener's TLS policy, probed with real handshakes on loopback against the
// server the API uses (createHttpsServer: TLS with the plain-HTTP answer in front), and
// the certificate files behind it: development certificates and reload without restart.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import type https from "node:https";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { waitFor } from "../helpers/wait.ts";
import { serverTlsOptions } from "../../src/api/tls-options.ts";
import { createHttpsServer } from "../../src/api/https-server.ts";
import { ensureDevCertificates, loadPem, watchCertificates, type CertPaths } from "../../src/api/certificates.ts";
import { createCa, issueCertificate, type Pem } from "../../src/tls/certificates.ts";
import { rawTlsProbe, request } from "../helpers/https-client.ts";
import { startTestApp, validSend } from "../helpers/app.ts";

const ca = createCa("sealpost https test CA");
const NAMES = ["localhost", "127.0.0.1"];
const first = issueCertificate({ names: NAMES, ca });
const trust = { ca: ca.cert, servername: "localhost" };

async function startServer(t: TestContext, pem: { cert: string | Buffer; key: string | Buffer }) {
  const server = createHttpsServer(serverTlsOptions(pem), (_req, res) => res.end("ok"), {
    keepAliveTimeoutMs: 5000,
    requestTimeoutMs: 5000,
    connectionTimeoutMs: 5000,
  });
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

/** Writes `data` on a plain TCP connection and returns everything the server sent until it closed. */
async function plainExchange(port: number, data: string | Buffer): Promise<string> {
  const socket = net.connect(port, "127.0.0.1");
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  const closed = once(socket, "close");
  socket.write(data);
  await closed;
  return Buffer.concat(chunks).toString("latin1");
}

/** The answer's status line, headers and JSON body. */
function parseAnswer(raw: string) {
  const [head, body] = [raw.slice(0, raw.indexOf("\r\n\r\n")), raw.slice(raw.indexOf("\r\n\r\n") + 4)];
  const [statusLine, ...lines] = head.split("\r\n");
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  return { statusLine, headers, body };
}

function assertUseHttps(raw: string, what: string) {
  const a = parseAnswer(raw);
  assert.equal(a.statusLine, "HTTP/1.1 400 Bad Request", `${what}: ${raw.slice(0, 200)}`);
  assert.equal(a.headers["connection"], "close", what);
  assert.match(a.headers["content-type"] ?? "", /^application\/problem\+json/, what);
  assert.equal(Number(a.headers["content-length"]), Buffer.byteLength(a.body, "latin1"), `${what}: one response, nothing after it`);
  const p = JSON.parse(a.body);
  assert.equal(p.status, 400);
  assert.equal(p.code, "invalid_request");
  assert.match(p.detail, /use https:\/\//, what);
}

test("a plain HTTP request on the HTTPS port gets a 400 that says to use https://, and the port still speaks TLS", async (t) => {
  const { server, port } = await startServer(t, first);
  let tlsErrors = 0;
  server.on("tlsClientError", () => tlsErrors++);
  let requests = 0;
  server.on("request", () => requests++);
  assertUseHttps(await plainExchange(port, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"), "GET");
  // A request with a body larger than one read still gets the answer (not a reset).
  const big = "x".repeat(512 * 1024);
  assertUseHttps(await plainExchange(port, `POST /send HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${big.length}\r\n\r\n${big}`), "POST 512 KiB");
  assert.equal(requests, 0, "no plain HTTP request reached the handler");
  assert.equal(tlsErrors, 0, "plain HTTP never reached the TLS layer");
  // The same port still serves HTTPS.
  const res = await request(`https://127.0.0.1:${port}/`, { ca: ca.cert, servername: "localhost" });
  assert.equal(res.status, 200);
  assert.equal(requests, 1);
});

test("bytes that are neither HTTP nor TLS still go to TLS and are refused there, with no HTTP answer", async (t) => {
  const { server, port } = await startServer(t, first);
  const serverErr = once(server, "tlsClientError");
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {}); // a reset is an acceptable way to end; 'close' follows
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.write(Buffer.from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09]));
  await once(socket, "close");
  assert.ok(!Buffer.concat(chunks).toString("latin1").startsWith("HTTP/"), "server answered in HTTP");
  await serverErr; // the bytes reached the TLS layer and were rejected there
});

test("a ClientHello whose first byte arrives alone still completes the handshake", async (t) => {
  const { port } = await startServer(t, first);
  const raw = net.connect(port, "127.0.0.1");
  t.after(() => raw.destroy());
  await once(raw, "connect");
  raw.setNoDelay(true);
  // A socket for tls.connect that sends the first byte of the client's first write on its
  // own, and the rest only once that byte has left, so the server reads it separately.
  let split = false;
  const splitter = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      if (split) return void raw.write(chunk, cb);
      split = true;
      raw.write(chunk.subarray(0, 1), () => setTimeout(() => raw.write(chunk.subarray(1), cb), 50));
    },
    read() {},
  });
  raw.on("data", (d: Buffer) => splitter.push(d));
  raw.on("end", () => splitter.push(null));
  const client = tls.connect({ socket: splitter, ...trust });
  t.after(() => client.destroy());
  await once(client, "secureConnect");
  client.end("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  const chunks: Buffer[] = [];
  client.on("data", (c: Buffer) => chunks.push(c));
  await once(client, "end");
  assert.match(Buffer.concat(chunks).toString("latin1"), /^HTTP\/1\.1 200[\s\S]*\r\n\r\nok$/);
});

test("close() does not wait for a connection that has not sent its first byte", async (t) => {
  const { server, port } = await startServer(t, first); // connection timeout 5 s
  const silent = net.connect(port, "127.0.0.1");
  t.after(() => silent.destroy());
  silent.on("error", () => {});
  await once(silent, "connect");
  await waitFor(() => new Promise<boolean>((res) => server.getConnections((_e, n) => res(n === 1))), { what: "the server to hold the connection" });
  const started = Date.now();
  await new Promise((resolve) => server.close(resolve));
  assert.ok(Date.now() - started < 2000, `close took ${Date.now() - started} ms`);
  await once(silent, "close");
});

test("no API route is reachable over plain HTTP, even with a valid key", async (t) => {
  const app = await startTestApp();
  t.after(() => app.close());
  const { key, id } = await app.createKey();
  const port = new URL(app.url).port;
  const body = JSON.stringify(validSend());
  const attempts = [
    `GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n`,
    `GET /openapi.yaml HTTP/1.0\r\n\r\n`,
    `GET /messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${key}\r\n\r\n`,
    `POST /send HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    // Pipelined: still one answer, and the second request is not read as one.
    `GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n`,
  ];
  for (const a of attempts) assertUseHttps(await plainExchange(Number(port), a), a.split("\r\n")[0]!);
  assert.equal(await app.tdb.db.prisma.message.count({ where: { apiKeyId: id } }), 0, "nothing was sent over plain HTTP");
  assert.ok(!app.logs.some((l) => /"msg":"request"/.test(l)), "no request reached Fastify");
  // Over HTTPS the same port serves the API.
  const ok = await app.call("POST", "/send", { key, body: validSend() });
  assert.equal(ok.status, 202, ok.body);
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
