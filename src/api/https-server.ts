// The HTTPS server behind the API's one port. A client that speaks plain HTTP to it
// (`http://host:8443`, a common first mistake) would otherwise get a TLS alert that its
// HTTP parser reports as an empty reply; instead it gets a short 400 that says to use
// https://, as nginx answers "The plain HTTP request was sent to HTTPS port".
//
// Nothing is served in cleartext: each new connection is told apart by its first byte
// before TLS sees it. A request that starts like HTTP is answered with that one fixed
// response and closed, without being parsed; everything else (a TLS ClientHello, or
// garbage) is handed, bytes untouched, to the TLS server, which accepts or refuses it
// exactly as it would without this check.
import { randomUUID } from "node:crypto";
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type net from "node:net";
import type { SecureContextOptions } from "node:tls";
import { problem } from "./problem.ts";

export interface HttpsServerTimeouts {
  /** Idle time allowed on a kept-alive connection between requests. */
  keepAliveTimeoutMs: number;
  /** Time allowed to receive a whole request. */
  requestTimeoutMs: number;
  /** Inactivity on a socket after which it is closed; also bounds the wait for the first byte. */
  connectionTimeoutMs: number;
}

// An HTTP/1.x request starts with its method, a token (RFC 9112 3, RFC 9110 9.1) that in
// practice is upper-case ASCII letters; a TLS connection starts with a record header
// whose content type is 22, handshake (RFC 8446 5.1). Only the first is answered here.
const startsLikeHttp = (firstByte: number): boolean => firstByte >= 0x41 && firstByte <= 0x5a;

// After the answer, what the client still sends is read and dropped for a moment before
// the socket closes: closing with unread data makes the kernel send a reset, and a
// reset can destroy the answer before the client reads it (nginx's lingering close).
const LINGER_MS = 2_000;

function plainHttpAnswer(): Buffer {
  const body = JSON.stringify(
    problem("invalid_request", "this port speaks HTTPS only: use https:// instead of http:// (nothing is served over plain HTTP)", randomUUID(), {
      status: 400,
    }),
  );
  return Buffer.from(
    "HTTP/1.1 400 Bad Request\r\n" +
      "Content-Type: application/problem+json; charset=utf-8\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      "Cache-Control: no-store\r\n" +
      "Connection: close\r\n" +
      "\r\n" +
      body,
    "latin1",
  );
}

function answerPlainHttp(socket: net.Socket): void {
  socket.setTimeout(LINGER_MS, () => socket.destroy());
  socket.end(plainHttpAnswer());
  socket.resume(); // discard the rest of the request; 'end' from the client then closes the socket
}

/**
 * Waits for the first byte of a new connection, then either answers plain HTTP or puts
 * the byte back and hands the untouched socket to `toTls`.
 */
function routeByFirstByte(socket: net.Socket, toTls: () => void, timeoutMs: number, waiting: Set<net.Socket>): void {
  const drop = (): void => {
    socket.destroy();
  };
  waiting.add(socket);
  socket.once("close", () => waiting.delete(socket));
  socket.on("error", drop); // a reset before the first byte: nothing to report
  socket.setTimeout(timeoutMs, drop);
  socket.once("data", (chunk: Buffer) => {
    waiting.delete(socket);
    socket.pause();
    socket.setTimeout(0);
    if (startsLikeHttp(chunk[0]!)) {
      answerPlainHttp(socket);
      return;
    }
    socket.removeListener("error", drop);
    // The TLS socket built on this one reads what is buffered in it first (Node's
    // TLSSocket "emulates receiving" a wrapped socket's readable buffer), so the bytes
    // put back here are the start of the handshake it sees.
    socket.unshift(chunk);
    toTls();
  });
}

/**
 * An https.Server with the plain-HTTP answer in front of TLS. It is an ordinary
 * https.Server in every other way: listen, close, setSecureContext (certificate
 * reload) and the timeouts work as usual.
 */
export function createHttpsServer(
  tlsOptions: SecureContextOptions,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  timeouts: HttpsServerTimeouts,
): https.Server {
  const server = https.createServer(tlsOptions, handler);
  server.keepAliveTimeout = timeouts.keepAliveTimeoutMs;
  server.requestTimeout = timeouts.requestTimeoutMs;
  server.setTimeout(timeouts.connectionTimeoutMs);
  // tls.Server starts TLS on a socket from its 'connection' listener; run the first-byte
  // check before it.
  const startTls = server.listeners("connection") as Array<(socket: net.Socket) => void>;
  if (startTls.length === 0) throw new Error("https.Server has no 'connection' listener to put the plain-HTTP check in front of");
  server.removeAllListeners("connection");
  const waiting = new Set<net.Socket>();
  server.on("connection", (socket: net.Socket) =>
    routeByFirstByte(socket, () => {
      for (const listener of startTls) listener.call(server, socket);
    }, timeouts.connectionTimeoutMs, waiting),
  );
  // A connection that has not sent a byte yet is idle: close() (which calls this) and a
  // graceful shutdown then do not wait for it to time out.
  const closeIdle = server.closeIdleConnections.bind(server);
  server.closeIdleConnections = () => {
    for (const socket of waiting) socket.destroy();
    closeIdle();
  };
  return server;
}
