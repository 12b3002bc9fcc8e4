// A small HTTPS client for tests. Each request trusts exactly the CA it is given, through
// its own agent: no NODE_TLS_REJECT_UNAUTHORIZED, no global agent or CA changes.
import https from "node:https";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import tls from "node:tls";

export interface RequestOptions {
  method?: string;
  headers?: OutgoingHttpHeaders;
  /** A string or Buffer is sent as is; anything else is sent as JSON. */
  body?: unknown;
  /** The CA(s) to trust, PEM. */
  ca: string | Buffer | Array<string | Buffer>;
  /** Name to verify (and send as SNI) when the URL holds an IP address. */
  servername?: string;
  timeoutMs?: number;
}

export interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  json(): any;
}

export function request(url: string | URL, opts: RequestOptions): Promise<Response> {
  const headers: OutgoingHttpHeaders = { ...opts.headers };
  let payload: string | Buffer | undefined;
  if (typeof opts.body === "string" || Buffer.isBuffer(opts.body)) {
    payload = opts.body;
  } else if (opts.body !== undefined) {
    payload = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  if (payload !== undefined) headers["content-length"] = Buffer.byteLength(payload);

  const agent = new https.Agent({ ca: opts.ca, keepAlive: false });
  return new Promise<Response>((resolve, reject) => {
    const req = https.request(
      url,
      { method: opts.method ?? "GET", headers, agent, servername: opts.servername, timeout: opts.timeoutMs ?? 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const body = Buffer.concat(chunks).toString("utf8");
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`request to ${String(url)} timed out`)));
    req.on("error", reject);
    req.end(payload);
  }).finally(() => agent.destroy());
}

export type ProbeResult =
  | { ok: true; protocol: string; cipher: string; fingerprint256: string }
  | { ok: false; code: string };

/**
 * One TLS handshake with the given client options, then close. Reports what was
 * negotiated, or the error code (e.g. ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: an alert
 * received from the server). Never rejects.
 */
export function rawTlsProbe(host: string, port: number, tlsOptions: tls.ConnectionOptions = {}): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let socket: tls.TLSSocket;
    try {
      socket = tls.connect({ host, port, ...tlsOptions });
    } catch (err) {
      // Options the local OpenSSL rejects (e.g. an unknown cipher name) throw here.
      resolve({ ok: false, code: errorCode(err) });
      return;
    }
    socket.setTimeout(5000, () => socket.destroy(Object.assign(new Error("handshake timed out"), { code: "ETIMEDOUT" })));
    socket.once("secureConnect", () => {
      const cipher = socket.getCipher();
      resolve({
        ok: true,
        protocol: socket.getProtocol() ?? "",
        cipher: cipher.name, // OpenSSL name, as in cipher strings
        fingerprint256: socket.getPeerCertificate().fingerprint256,
      });
      socket.destroy();
    });
    socket.once("error", (err) => resolve({ ok: false, code: errorCode(err) }));
    socket.once("close", () => resolve({ ok: false, code: "ECONNRESET" })); // no-op if already resolved
  });
}

function errorCode(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ?? e.message ?? String(err);
}
