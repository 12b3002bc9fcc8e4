// A loopback STARTTLS sink that injects faults and counts every copy it receives by
// Message-ID, for the fault suite (scripts/fault-suite.ts) and its tests.
//
// Two kinds of fault:
//   - per message, chosen by the message's `X-Fault` header (sent through the API as a
//     custom header), applied to the final dot:
//       451 | 552                 reply with that code instead of 250
//       drop-after-dot            take the whole message, then close without a reply
//       slow-dot:<ms>             hold the 250 for <ms> (the client waits for it)
//     each optionally followed by ` x<n>`: only the first n copies of that Message-ID
//     get the fault, later ones are accepted (a receiver that recovers);
//   - per connection, chosen by the listener (a loopback address that a recipient
//     domain's MX points to), because a greeting comes before any message is known:
//       421-greeting              answer the connection with 421 and close it
//       silent                    accept the connection and never say anything
//     again optionally for the first n connections only.
// Every listener shares one port (SMTP_MX_PORT) and one certificate from the test CA.
import type { TLSSocket } from "node:tls";
import { SMTPServer, type SMTPServerSession } from "smtp-server";
import { issueCertificate } from "../../src/tls/certificates.ts";
import { testCa } from "./smtp-peers.ts";
import { trackOpen } from "./leak-guard.ts";

export const FAULT_HEADER = "X-Fault";

export type MessageFault =
  | { kind: "451" | "552" | "drop-after-dot"; times?: number }
  | { kind: "slow-dot"; ms: number; times?: number };

interface ConnectionFault {
  kind: "421-greeting" | "silent";
  times?: number;
}

/** The X-Fault header value for a fault, e.g. "451 x1" or "slow-dot:3000". */
export function faultHeaderValue(f: MessageFault): string {
  const base = f.kind === "slow-dot" ? `slow-dot:${f.ms}` : f.kind;
  return f.times === undefined ? base : `${base} x${f.times}`;
}

/** Parses an X-Fault header value; throws on anything else, so a typo cannot pass as "no fault". */
export function parseFault(value: string): MessageFault {
  const m = /^\s*(451|552|drop-after-dot|slow-dot:(\d+))(?:\s+x(\d+))?\s*$/.exec(value);
  if (!m) throw new Error(`unknown ${FAULT_HEADER} value ${JSON.stringify(value)}`);
  const times = m[3] === undefined ? {} : { times: Number(m[3]) };
  if (m[2] !== undefined) return { kind: "slow-dot", ms: Number(m[2]), ...times };
  return { kind: m[1] as "451" | "552" | "drop-after-dot", ...times };
}

export interface SinkListener {
  /** Loopback address to bind, e.g. 127.0.0.1, 127.0.0.2 ... */
  ip: string;
  /** The MX host name this address stands for (named in the certificate). */
  host: string;
  fault?: ConnectionFault;
}

/** One complete copy of a message (the final dot arrived). */
export interface SinkCopy {
  messageId: string | null;
  to: string[];
  ip: string;
  /** The X-Fault value applied to this copy; null when none was asked for or its `times` were spent. */
  fault: string | null;
  receivedAt: number;
  /** The reply the sink gives or means to give: 250, 451 or 552; null when it drops the connection. */
  reply: number | null;
  /** What became of the reply: held (slow-dot, not yet due), sent, client gone (by the time it was due), dropped. */
  answer: "held" | "sent" | "client gone" | "dropped";
  /** When the reply was sent. */
  answeredAt: number | null;
  /**
   * The sink took the message (it answers, or meant to answer, 250): a receiving MTA would
   * now hold it, whether or not the sender heard the 250. Rejected and dropped copies are not kept.
   */
  kept: boolean;
  secure: boolean;
}

interface SinkConnection {
  ip: string;
  at: number;
  /** The connection fault applied, or null. */
  fault: ConnectionFault["kind"] | null;
}

export interface FaultSink {
  port: number;
  listeners: SinkListener[];
  copies: SinkCopy[];
  connections: SinkConnection[];
  /** Copies whose reply the sink is holding (slow-dot) on a connection still open. */
  pendingReplies(): SinkCopy[];
  /** Kept copies per Message-ID. */
  keptByMessageId(): Map<string, number>;
  /** Kept copies beyond one per Message-ID. */
  duplicates(): number;
  close(): Promise<void>;
}

function headerOf(raw: Buffer, name: string): string | null {
  const head = raw.toString("utf8").split(/\r?\n\r?\n/, 1)[0] ?? "";
  const unfolded = head.replace(/\r?\n[ \t]+/g, " ");
  const re = new RegExp(`^${name}:[ \\t]*(.*)$`, "im");
  return re.exec(unfolded)?.[1]?.trim() ?? null;
}

export async function startFaultSink(listeners: SinkListener[], opts: { port?: number } = {}): Promise<FaultSink> {
  if (listeners.length === 0) throw new Error("a fault sink needs at least one listener");
  const pem = issueCertificate({ names: [...new Set(listeners.map((l) => l.host))], ca: testCa() });
  const copies: SinkCopy[] = [];
  const connections: SinkConnection[] = [];
  const seen = new Map<string, number>(); // copies per Message-ID so far, for `times`
  const timers = new Set<NodeJS.Timeout>();
  const servers: SMTPServer[] = [];
  const held = new Map<SinkCopy, SMTPServerSession>();

  const make = (l: SinkListener) => {
    let connectionFaults = 0;
    const server: SMTPServer = new SMTPServer({
      key: pem.key,
      cert: pem.cert,
      name: l.host,
      logger: false,
      disableReverseLookup: true,
      hideENHANCEDSTATUSCODES: false,
      disabledCommands: ["AUTH"],
      authOptional: true,
      closeTimeout: 500,
      onConnect(_session, callback) {
        const f = l.fault && (l.fault.times === undefined || connectionFaults < l.fault.times) ? l.fault : undefined;
        if (f) connectionFaults++;
        connections.push({ ip: l.ip, at: Date.now(), fault: f?.kind ?? null });
        if (f?.kind === "421-greeting") return callback(Object.assign(new Error("4.3.2 Service not available, try again later"), { responseCode: 421 }));
        if (f?.kind === "silent") return; // no greeting, ever: the client must time out
        callback();
      },
      onData(stream, session, callback) {
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => {
          const raw = Buffer.concat(chunks);
          const messageId = headerOf(raw, "Message-ID");
          const asked = headerOf(raw, FAULT_HEADER);
          let fault: MessageFault | null = null;
          try {
            fault = asked === null ? null : parseFault(asked);
          } catch (err) {
            return callback(Object.assign(err as Error, { responseCode: 554 }));
          }
          const n = messageId === null ? 0 : (seen.get(messageId) ?? 0);
          if (messageId !== null) seen.set(messageId, n + 1);
          if (fault && fault.times !== undefined && n >= fault.times) fault = null;
          const reply = fault?.kind === "451" ? 451 : fault?.kind === "552" ? 552 : fault?.kind === "drop-after-dot" ? null : 250;
          const copy: SinkCopy = {
            messageId,
            to: session.envelope.rcptTo.map((r) => r.address),
            ip: l.ip,
            fault: fault ? faultHeaderValue(fault) : null,
            receivedAt: Date.now(),
            reply,
            answer: "held",
            answeredAt: null,
            kept: reply === 250,
            secure: session.secure,
          };
          copies.push(copy);
          const conn = () => [...server.connections].find((c) => c.session === session);
          if (fault?.kind === "drop-after-dot") {
            copy.answer = "dropped";
            conn()?._socket.destroy();
            return;
          }
          const answer = () => {
            held.delete(copy);
            const c = conn();
            if (!c || c._socket.destroyed) {
              copy.answer = "client gone"; // nobody to answer
              return;
            }
            copy.answer = "sent";
            copy.answeredAt = Date.now();
            if (reply === 250) return callback();
            callback(Object.assign(new Error(reply === 451 ? "4.3.0 Temporary failure, try again" : "5.3.4 Message too big"), { responseCode: reply }));
          };
          if (fault?.kind !== "slow-dot") return answer();
          held.set(copy, session);
          const timer = setTimeout(() => {
            timers.delete(timer);
            answer();
          }, fault.ms);
          timers.add(timer);
        });
      },
    });
    server.on("error", () => {}); // client resets are part of the faults
    return server;
  };

  const listen = (server: SMTPServer, ip: string, port: number) =>
    new Promise<number>((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(port, ip, () => {
        server.server.off("error", reject);
        resolve((server.server.address() as { port: number }).port);
      });
    });

  // Every listener on one port: the first picks a free one, the others take the same one
  // on their own address; if that is taken there, start over on another port.
  let port = opts.port ?? 0;
  for (let tries = 0; ; tries++) {
    servers.length = 0;
    try {
      for (const l of listeners) {
        const s = make(l);
        servers.push(s);
        port = await listen(s, l.ip, port);
      }
      break;
    } catch (err) {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      if (opts.port !== undefined || tries >= 5 || (err as { code?: string }).code !== "EADDRINUSE") throw err;
      port = 0;
    }
  }

  const closed = trackOpen(`fault sink on port ${port}`, "startFaultSink");
  const keptByMessageId = () => {
    const m = new Map<string, number>();
    for (const c of copies) if (c.kept && c.messageId) m.set(c.messageId, (m.get(c.messageId) ?? 0) + 1);
    return m;
  };
  return {
    port,
    listeners,
    copies,
    connections,
    pendingReplies: () =>
      [...held.keys()].filter((c) => {
        const s = held.get(c)!;
        return [...servers].some((srv) => [...srv.connections].some((x) => x.session === s && !x._socket.destroyed));
      }),
    keptByMessageId,
    duplicates: () => [...keptByMessageId().values()].reduce((a, n) => a + n - 1, 0),
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              for (const c of s.connections) (c._socket as TLSSocket).destroy();
              s.close(() => resolve());
            }),
        ),
      );
      closed();
    },
  };
}
