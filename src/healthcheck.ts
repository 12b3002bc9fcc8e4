// `sealpost healthcheck serve|worker`: container health checks that need nothing but the
// image. Each answers for the process in the same container (or on the same host):
// - serve: GET /readyz on this host's HTTPS port, verifying the certificate the server
//   presents against the name in its own certificate file, trusting the system CAs plus
//   TLS_CA_FILE (or the development CA), so a check never switches verification off;
// - worker: the delivery loop's heartbeat file under DATA_DIR is fresh (the loop writes
//   when it goes round, so a stuck loop turns unhealthy even while the process lives);
// - inbound: the bounce receiver on INBOUND_LISTEN greets with 220 (RFC 5321 4.2).
import fs from "node:fs";
import net from "node:net";
import https from "node:https";
import path from "node:path";
import { X509Certificate } from "node:crypto";
import { rootCertificates } from "node:tls";
import { inboundListen, type Config } from "./config.ts";

/** Where the worker writes its heartbeat: one file per DATA_DIR (one worker per container). */
export function heartbeatFile(config: Config): string {
  return path.resolve(config.DATA_DIR, "worker.heartbeat");
}

/** A heartbeat older than this is a stalled loop: the loop goes round at least once a minute. */
function heartbeatMaxAgeMs(config: Config): number {
  return Math.max(120_000, 4 * config.WORKER_POLL_MS);
}

export interface HealthResult {
  ok: boolean;
  /** One line for the operator. */
  detail: string;
}

export function checkWorkerHeartbeat(config: Config, now = Date.now()): HealthResult {
  const file = heartbeatFile(config);
  let at: number;
  try {
    at = JSON.parse(fs.readFileSync(file, "utf8")).at;
  } catch {
    return { ok: false, detail: `no worker heartbeat at ${file}: is \`sealpost worker\` running with this DATA_DIR?` };
  }
  const age = now - Number(at);
  if (!(age <= heartbeatMaxAgeMs(config))) return { ok: false, detail: `the worker's loop last went round ${Math.round(age / 1000)} s ago` };
  return { ok: true, detail: `worker loop went round ${Math.round(age / 1000)} s ago` };
}

/** The bounce receiver answers a connection to INBOUND_LISTEN (on this host) with its 220 greeting; the check then says QUIT. */
export function checkInbound(config: Config, timeoutMs = 4000): Promise<HealthResult> {
  const { host: bound, port, label: listen } = inboundListen(config);
  const host = bound === "0.0.0.0" || bound === "::" ? "127.0.0.1" : bound;
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: timeoutMs });
    let got = "";
    const done = (r: HealthResult) => {
      socket.destroy();
      resolve(r);
    };
    socket.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      if (!got.includes("\n")) return;
      if (got.startsWith("220")) {
        socket.end("QUIT\r\n");
        done({ ok: true, detail: `the bounce receiver on ${host}:${port} greets: ${got.trim().slice(0, 80)}` });
      } else done({ ok: false, detail: `the bounce receiver on ${host}:${port} answered ${JSON.stringify(got.trim().slice(0, 80))} instead of 220` });
    });
    socket.on("timeout", () => done({ ok: false, detail: `no greeting from ${host}:${port} within ${timeoutMs} ms` }));
    socket.on("error", (err: NodeJS.ErrnoException) => done({ ok: false, detail: `cannot connect to the bounce receiver on ${host}:${port} (${err.code ?? err.message}): is \`sealpost inbound\` running with INBOUND_LISTEN=${listen}?` }));
  });
}

export async function checkServe(config: Config, timeoutMs = 4000): Promise<HealthResult> {
  const certFile = config.TLS_CERT_FILE ?? path.join(config.CERTS_DIR, "server.crt");
  const caFile = config.TLS_CA_FILE ?? (config.TLS_CERT_FILE ? undefined : path.join(config.CERTS_DIR, "ca.crt"));
  let servername: string;
  const ca: Array<string | Buffer> = [...rootCertificates];
  try {
    const leaf = new X509Certificate(fs.readFileSync(certFile));
    const dns = /DNS:([^,\s]+)/.exec(leaf.subjectAltName ?? "");
    servername = (dns?.[1] ?? "localhost").replace(/^\*\./, "healthcheck.");
    if (caFile) ca.push(fs.readFileSync(caFile));
  } catch (err) {
    return { ok: false, detail: `cannot read the server certificate ${certFile}: ${(err as Error).message}` };
  }
  const host = config.HOST === "0.0.0.0" || config.HOST === "::" ? "127.0.0.1" : config.HOST;
  return new Promise((resolve) => {
    const req = https.get(
      { host, port: config.PORT, path: "/readyz", servername, ca, agent: false, timeout: timeoutMs, headers: { host: servername } },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200 ? { ok: true, detail: `ready on https://${servername}:${config.PORT}` } : { ok: false, detail: `/readyz answered ${res.statusCode}` });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (err) => resolve({ ok: false, detail: `https://${host}:${config.PORT}/readyz: ${err.message}` }));
  });
}
