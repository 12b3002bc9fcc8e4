// A Postgres wire-protocol server (protocol 3.0, PostgreSQL docs chapter 55 "Frontend/
// Backend Protocol") in front of ONE PGlite session, for any number of client
// connections.
//
// PGlite is a single backend session, and session state is not only the transaction:
// the unnamed prepared statement and portal of the extended query protocol live from a
// client's Parse until its Sync is answered. Switching clients at any message boundary
// (what @electric-sql/pglite-socket 0.2.x does outside a transaction block) lets one
// client's Bind run against another client's Parse ("bind message supplies 29
// parameters, but prepared statement "" requires 3"). So the session is handed to one
// connection at a time and taken back only where the session is idle:
//   - after a ReadyForQuery (the answer to a Sync or a simple Query) with status 'I';
//   - never while it reports 'T' (in a transaction block) or 'E' (failed transaction):
//     that connection keeps the session until it is back to 'I'.
// Other connections' messages wait, in arrival order, and a connection that has used
// its turn goes to the back of the line. A connection that goes away while it holds the
// session gets a Sync and, inside a transaction, a ROLLBACK, so it never leaves the
// session half-used.
//
// Consequence for callers (as with one Postgres connection): code must never wait for
// another connection's query while it holds a transaction open; that query cannot run
// until the transaction ends. A connection idle inside a transaction for longer than
// `idleInTransactionTimeoutMs` is ended with 25P03, as Postgres'
// idle_in_transaction_session_timeout does, so such a mistake fails instead of hanging.
//
// Named prepared statements are session-wide here (two connections preparing the same
// name would collide); sealpost's clients (node-postgres through adapter-pg) use the
// unnamed statement only.
import net from "node:net";
import type { PGlite } from "@electric-sql/pglite";

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const PROTOCOL_3_0 = 196608;
const MAX_STARTUP_LENGTH = 10_000; // MAX_STARTUP_PACKET_LENGTH in postgres
const MAX_MESSAGE_LENGTH = 0x3fffffff; // MaxAllocSize - 1: postgres refuses longer messages too

export class ProtocolError extends Error {
  override name = "ProtocolError";
}

export type FrontendMessage =
  | { kind: "ssl-request" | "gssenc-request" | "cancel-request" | "startup"; bytes: Buffer }
  | { kind: "message"; type: string; bytes: Buffer };

/**
 * Cuts a client's byte stream into whole protocol messages. TCP delivers a message in
 * as many pieces as it likes (a 1 MB Bind arrives in dozens), and one piece can hold
 * several messages; nothing is passed on until a message is complete.
 */
export class FrontendFramer {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #startupPhase = true;

  push(chunk: Buffer): FrontendMessage[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const out: FrontendMessage[] = [];
    for (;;) {
      if (this.#startupPhase) {
        // Before the startup message: untyped packets, int32 length (itself included) then an int32 code.
        if (this.#buffered < 8) break;
        const head = this.#peek(8);
        const length = head.readInt32BE(0);
        const code = head.readInt32BE(4);
        if (length < 8 || length > MAX_STARTUP_LENGTH) throw new ProtocolError(`invalid startup packet length ${length}`);
        if (this.#buffered < length) break;
        const bytes = this.#take(length);
        if (code === SSL_REQUEST) out.push({ kind: "ssl-request", bytes });
        else if (code === GSSENC_REQUEST) out.push({ kind: "gssenc-request", bytes });
        else if (code === CANCEL_REQUEST) out.push({ kind: "cancel-request", bytes });
        else if (code === PROTOCOL_3_0) {
          out.push({ kind: "startup", bytes });
          this.#startupPhase = false;
        } else throw new ProtocolError(`unsupported frontend protocol ${code >> 16}.${code & 0xffff}`);
        continue;
      }
      // Typed messages: one byte of type, int32 length (itself included, not the type), body.
      if (this.#buffered < 5) break;
      const head = this.#peek(5);
      const length = head.readInt32BE(1);
      if (length < 4 || length > MAX_MESSAGE_LENGTH) throw new ProtocolError(`invalid message length ${length}`);
      if (this.#buffered < 1 + length) break;
      out.push({ kind: "message", type: String.fromCharCode(head[0]!), bytes: this.#take(1 + length) });
    }
    return out;
  }

  /** The first n buffered bytes (n is small: a header), without consuming them. */
  #peek(n: number): Buffer {
    const first = this.#chunks[0]!;
    if (first.length >= n) return first;
    return Buffer.concat(this.#chunks, n); // copies only the first n bytes
  }

  /** Consume exactly n bytes, copying only when a message spans chunks. */
  #take(n: number): Buffer {
    this.#buffered -= n;
    const first = this.#chunks[0]!;
    if (first.length === n) return this.#chunks.shift()!;
    if (first.length > n) {
      this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[0]!;
      const part = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, part);
      filled += part;
      if (part === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(part);
    }
    return out;
  }
}

/**
 * Follows the backend's answer, in whatever pieces it comes, far enough to see each
 * ReadyForQuery ('Z', length 5, one status byte: 'I' idle, 'T' in a transaction block,
 * 'E' in a failed transaction block).
 */
export class ReadyForQueryScanner {
  /** Status of the last ReadyForQuery seen, or null if none yet. */
  status: "I" | "T" | "E" | null = null;
  #header = Buffer.alloc(5);
  #headerFilled = 0;
  #skip = 0; // body bytes of the current message still to pass over
  #readyBody = false; // the current body is a ReadyForQuery's status byte

  push(data: Uint8Array): void {
    let i = 0;
    while (i < data.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, data.length - i);
        if (this.#readyBody) this.status = String.fromCharCode(data[i]!) as "I" | "T" | "E";
        this.#readyBody = false;
        this.#skip -= n;
        i += n;
        continue;
      }
      this.#header[this.#headerFilled++] = data[i++]!;
      if (this.#headerFilled < 5) continue;
      this.#headerFilled = 0;
      this.#skip = this.#header.readInt32BE(1) - 4;
      this.#readyBody = this.#header[0] === 0x5a && this.#skip === 1; // 'Z'
    }
  }
}

interface Connection {
  socket: net.Socket;
  framer: FrontendFramer;
  /** Complete messages not yet given to the session. */
  pending: Buffer[];
  /** True while nothing this connection started is still alive in the session (last ReadyForQuery said 'I'). */
  idle: boolean;
  closed: boolean;
}

export interface SessionServerOptions {
  maxConnections?: number;
  /** End a connection that holds the session inside a transaction without sending anything for this long (0: never). */
  idleInTransactionTimeoutMs?: number;
  /** Told about failures of the session itself (never about a client's SQL errors, which go to that client). */
  onError?: (err: Error) => void;
}

const SYNC = Buffer.from([0x53, 0, 0, 0, 4]);

function simpleQuery(sql: string): Buffer {
  const text = Buffer.from(`${sql}\0`);
  const head = Buffer.alloc(5);
  head[0] = 0x51; // 'Q'
  head.writeInt32BE(4 + text.length, 1);
  return Buffer.concat([head, text]);
}

/** A FATAL ErrorResponse, sent before closing a connection the server will not serve. */
function fatal(sqlstate: string, message: string): Buffer {
  const fields = Buffer.from(`SFATAL\0VFATAL\0C${sqlstate}\0M${message}\0\0`);
  const head = Buffer.alloc(5);
  head[0] = 0x45; // 'E'
  head.writeInt32BE(4 + fields.length, 1);
  return Buffer.concat([head, fields]);
}

export class PGliteSessionServer {
  readonly #db: PGlite;
  readonly #maxConnections: number;
  readonly #idleInTransactionTimeoutMs: number;
  readonly #onError: (err: Error) => void;
  readonly #server: net.Server;
  readonly #connections = new Set<Connection>();
  #owner: Connection | null = null;
  #waiting: Connection[] = [];
  #pumping: Promise<void> | null = null;
  #idleTimer: NodeJS.Timeout | null = null;
  #stopped = false;

  constructor(db: PGlite, opts: SessionServerOptions = {}) {
    this.#db = db;
    this.#maxConnections = opts.maxConnections ?? 64;
    this.#idleInTransactionTimeoutMs = opts.idleInTransactionTimeoutMs ?? 60_000;
    this.#onError = opts.onError ?? (() => {});
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  /** Listen on host:port (0 for any free port); resolves to the port. */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(port, host, () => {
        this.#server.off("error", reject);
        this.#server.on("error", (err) => this.#onError(err));
        resolve((this.#server.address() as net.AddressInfo).port);
      });
    });
  }

  /** Stop accepting, close every connection, and wait until the session is idle again (then PGlite may be closed). */
  async stop(): Promise<void> {
    this.#stopped = true;
    const closed = new Promise<void>((r) => this.#server.close(() => r()));
    for (const c of this.#connections) c.socket.destroy();
    for (const c of this.#connections) this.#drop(c);
    this.#kick();
    await this.#pumping;
    this.#clearIdleTimer();
    await closed;
  }

  #accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    if (this.#stopped || this.#connections.size >= this.#maxConnections) {
      socket.end(fatal("53300", this.#stopped ? "the embedded database is shutting down" : "sorry, too many clients already"));
      return;
    }
    const conn: Connection = { socket, framer: new FrontendFramer(), pending: [], idle: true, closed: false };
    this.#connections.add(conn);
    socket.on("data", (chunk: Buffer) => this.#receive(conn, chunk));
    socket.on("error", () => this.#drop(conn)); // a client that went away; 'close' follows
    socket.on("close", () => this.#drop(conn));
  }

  #receive(conn: Connection, chunk: Buffer): void {
    if (conn.closed) return;
    let messages: FrontendMessage[];
    try {
      messages = conn.framer.push(chunk);
    } catch (err) {
      conn.socket.end(fatal("08P01", (err as Error).message));
      this.#drop(conn);
      return;
    }
    for (const m of messages) {
      if (m.kind === "ssl-request" || m.kind === "gssenc-request") conn.socket.write("N"); // no encryption on loopback
      else if (m.kind === "cancel-request") {
        // A cancel arrives on a connection of its own. One session cannot be interrupted
        // mid-statement, so like postgres for an unknown key, answer nothing and close.
        conn.socket.end();
        this.#drop(conn);
        return;
      } else if (m.kind === "message" && m.type === "X") {
        conn.socket.end(); // Terminate
        this.#drop(conn);
        return;
      } else conn.pending.push(m.bytes);
    }
    if (conn.pending.length > 0) {
      if (conn === this.#owner) this.#clearIdleTimer();
      else if (!this.#waiting.includes(conn)) this.#waiting.push(conn);
      this.#kick();
    }
  }

  #drop(conn: Connection): void {
    if (conn.closed) return;
    conn.closed = true;
    conn.pending = [];
    this.#connections.delete(conn);
    this.#waiting = this.#waiting.filter((c) => c !== conn);
    if (conn === this.#owner) this.#kick(); // the pump gives the session back cleanly
  }

  #kick(): void {
    if (this.#pumping) return;
    this.#pumping = this.#pump().finally(() => {
      this.#pumping = null;
    });
  }

  async #pump(): Promise<void> {
    // Re-check after each await: new messages, closed connections and timeouts arrive meanwhile.
    for (;;) {
      let owner = this.#owner;
      if (!owner) {
        owner = this.#waiting.shift() ?? null;
        if (!owner) return;
        this.#owner = owner;
      }
      if (owner.closed) {
        await this.#release(owner);
        this.#owner = null;
        continue;
      }
      const message = owner.pending.shift();
      if (!message) {
        // The owner is inside a transaction or between the messages of one query: the
        // session stays its own until it sends the rest.
        this.#startIdleTimer(owner);
        return;
      }
      try {
        const status = await this.#run(message, (data) => {
          if (!owner.closed) owner.socket.write(data);
        });
        owner.idle = status === "I";
      } catch (err) {
        this.#onError(err as Error);
        owner.socket.destroy();
        this.#drop(owner);
        continue;
      }
      if (owner.idle) {
        this.#owner = null;
        if (owner.pending.length > 0) this.#waiting.push(owner);
      }
    }
  }

  /** Runs one message on the session; returns the status of the ReadyForQuery it produced, or null (mid-query). */
  async #run(message: Buffer, onData: (data: Buffer) => void): Promise<"I" | "T" | "E" | null> {
    const scanner = new ReadyForQueryScanner();
    await this.#db.runExclusive(() =>
      this.#db.execProtocolRawStream(message, {
        onRawData: (data: Uint8Array) => {
          const copy = Buffer.from(data); // a view into PGlite's memory, reused by the next call
          scanner.push(copy);
          onData(copy);
        },
      }),
    );
    return scanner.status;
  }

  /** A connection that left while holding the session: end its query and its transaction. */
  async #release(conn: Connection): Promise<void> {
    if (conn.idle) return;
    try {
      let status = await this.#run(SYNC, () => {});
      if (status === "T" || status === "E") status = await this.#run(simpleQuery("ROLLBACK"), () => {});
      if (status !== "I") throw new Error(`the embedded database session did not return to idle (status ${status})`);
    } catch (err) {
      this.#onError(err as Error);
    }
    conn.idle = true;
  }

  #startIdleTimer(owner: Connection): void {
    this.#clearIdleTimer();
    if (this.#idleInTransactionTimeoutMs <= 0) return;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = null;
      if (this.#owner !== owner || owner.closed || owner.pending.length > 0) return;
      owner.socket.end(fatal("25P03", "terminating connection due to idle-in-transaction timeout"));
      this.#drop(owner);
    }, this.#idleInTransactionTimeoutMs);
    this.#idleTimer.unref();
  }

  #clearIdleTimer(): void {
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
  }
}
