// Real SMTP peers on loopback for tests: smtp-server with certificates from a private test
// CA, in the variants a sender meets in the wild (no STARTTLS, STARTTLS refused or broken,
// bad certificates, old TLS, scripted replies, AUTH). Options compose: a peer is "TLS 1.2
// only + 550 for one address + AUTH required" by passing the three options together.
import type { TLSSocket } from "node:tls";
import { SMTPServer, type SMTPServerSession } from "smtp-server";
import { createCa, issueCertificate, type Pem } from "../../src/tls/certificates.ts";
import { trackOpen } from "./leak-guard.ts";
import { waitFor } from "./wait.ts";
import type { AttemptOptions, TlsPolicy } from "../../src/worker/smtp-attempt.ts";

/** The MX host name tests use: certificates name it, target.host is it, the IP is 127.0.0.x. */
export const TEST_MX_HOST = "mx.example.test";

let ca: Pem | undefined;
/** The test CA, made once per process. Trust it with `ca: [testCa().cert]`. */
export function testCa(): Pem {
  return (ca ??= createCa("sealpost test CA"));
}

export type CertificateKind = "ca-signed" | "self-signed" | "expired" | "wrong-name" | "untrusted-ca";

const certificates = new Map<string, Pem>();
let untrustedCa: Pem | undefined;
/** A server certificate for `host` (RSA keys are slow to make, so each is made once). */
export function peerCertificate(kind: CertificateKind, host = TEST_MX_HOST): Pem {
  const key = `${kind}:${host}`;
  let pem = certificates.get(key);
  if (!pem) {
    const day = 86_400_000;
    pem = {
      "ca-signed": () => issueCertificate({ names: [host], ca: testCa() }),
      "self-signed": () => issueCertificate({ names: [host] }),
      expired: () => issueCertificate({ names: [host], ca: testCa(), notBefore: new Date(Date.now() - 30 * day), notAfter: new Date(Date.now() - day) }),
      "wrong-name": () => issueCertificate({ names: ["other.example.test"], ca: testCa() }),
      "untrusted-ca": () => issueCertificate({ names: [host], ca: (untrustedCa ??= createCa("untrusted test CA")) }),
    }[kind]();
    certificates.set(key, pem);
  }
  return pem;
}

/** AttemptOptions aimed at `peer` as TEST_MX_HOST, trusting the test CA; `extra` overrides any field. */
export function attemptOptionsFor(peer: { host: string; port: number }, policy: TlsPolicy, extra: Partial<AttemptOptions> = {}): AttemptOptions {
  return {
    target: { host: TEST_MX_HOST, ip: peer.host, port: peer.port },
    policy,
    heloName: "sender.test",
    ca: [testCa().cert],
    connectTimeoutMs: 5000,
    envelope: { from: "bounces@sender.test", to: ["rcpt@example.test"] },
    message: Buffer.from("From: bounces@sender.test\r\nTo: rcpt@example.test\r\nSubject: test\r\n\r\nhello\r\n"),
    ...extra,
  };
}

interface ScriptedReply {
  code: number;
  message: string;
  /**
   * Give this reply to the first `times` commands it matches only, then carry on as if it
   * were not set: a server that recovers (greylisting, a busy spell). Default: every time.
   */
  times?: number;
}

/** Close the connection after the final dot without replying, for the first `times` messages (default: all). */
interface DropAfterData {
  drop: true;
  times?: number;
}

export interface PeerOptions {
  /** Address to bind; default 127.0.0.1. Several peers can share a port on 127.0.0.2, .3 ... */
  ip?: string;
  /** Default 0 (any free port). */
  port?: number;
  /**
   * What happens to STARTTLS: offered and working (default), not offered at all
   * (disabledCommands, so the server also refuses it if sent), answered 454, or answered
   * 220 followed by bytes that are not TLS.
   */
  starttls?: "offer" | "none" | "refuse" | "broken";
  /** TLS from the first byte (smtps, port 465 style) instead of STARTTLS. */
  implicitTls?: boolean;
  /** The certificate presented; default a CA-signed one for TEST_MX_HOST. */
  certificate?: CertificateKind | Pem;
  /** E.g. "TLSv1.2" for a peer that cannot do TLS 1.3. */
  maxTlsVersion?: "TLSv1.2" | "TLSv1.3";
  /** Refuse the session at the greeting, e.g. { code: 421, message: "try later" }. */
  greeting?: ScriptedReply;
  /** Replies to RCPT TO by (lower-case) address; others are accepted. */
  rcpt?: Record<string, ScriptedReply>;
  /** Announce this SIZE limit in EHLO (RFC 1870). */
  size?: number;
  /** Reply after the final dot; "drop" closes the connection without replying. Default 250. */
  data?: ScriptedReply | "drop" | DropAfterData;
  /**
   * Hold the reply to the final dot for `ms` (first `times` messages; default all): the
   * message is in `received` at once, so a test can act while the client waits for it.
   */
  dataDelay?: { ms: number; times?: number };
  /** Require AUTH with these credentials before MAIL. */
  auth?: { user: string; pass: string };
  /** Accept AUTH in cleartext (the server would take credentials we must never send it). */
  allowInsecureAuth?: boolean;
  /** Advertise REQUIRETLS (RFC 8689) after STARTTLS; smtp-server does not by default. */
  requireTls?: boolean;
}

interface ReceivedMessage {
  from: string;
  to: string[];
  data: Buffer;
  secure: boolean;
  tlsProtocol?: string;
  /** MAIL FROM carried REQUIRETLS (RFC 8689). */
  requireTls: boolean;
  /**
   * The reply the peer gave after the final dot; null when it dropped the connection, or
   * while a delayed reply is pending (it stays null if the client left before it was sent).
   */
  reply: number | null;
}

/** One connection as the peer saw it; `secure` and `tlsProtocol` are updated by STARTTLS. */
interface PeerSession {
  /** Date.now() when the connection came in. */
  connectedAt: number;
  secure: boolean;
  tlsProtocol?: string;
  /** SNI name the client asked for. */
  servername?: string;
  mailFrom: string[];
  rcptTo: string[];
  authAttempts: number;
  /** MAIL/RCPT/AUTH seen while the connection was still in cleartext. */
  cleartextCommands: string[];
}

export interface SmtpPeer {
  host: string;
  port: number;
  received: ReceivedMessage[];
  sessions: PeerSession[];
  /** Connections still open on the peer side. */
  openConnections(): number;
  /** The most connections that were open at once since the peer started. */
  peakConnections(): number;
  /** Resolves once every connection has been closed (polls with a deadline). */
  waitForIdle(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startPeer(opts: PeerOptions = {}): Promise<SmtpPeer> {
  const received: ReceivedMessage[] = [];
  const sessions: PeerSession[] = [];
  const bySession = new Map<string, PeerSession>();
  const starttls = opts.starttls ?? "offer";
  const pem = typeof opts.certificate === "object" ? opts.certificate : peerCertificate(opts.certificate ?? "ca-signed");
  const record = (session: SMTPServerSession) => bySession.get(session.id)!;
  const scripted = (reply: ScriptedReply) => Object.assign(new Error(reply.message), { responseCode: reply.code });
  const noteCleartext = (session: SMTPServerSession, command: string) => {
    if (!session.secure) record(session).cleartextCommands.push(command);
  };
  // How many times each one-shot script (`times`) was used; undefined once it is spent.
  const uses = new Map<object, number>();
  function active<T extends { times?: number }>(script: T | undefined): T | undefined {
    if (!script) return undefined;
    const n = uses.get(script) ?? 0;
    if (script.times !== undefined && n >= script.times) return undefined;
    uses.set(script, n + 1);
    return script;
  }
  const dataScript: ScriptedReply | DropAfterData | undefined = opts.data === "drop" ? { drop: true } : opts.data;
  const delayedReplies = new Set<NodeJS.Timeout>();
  let open = 0;
  let peak = 0;

  const server: SMTPServer = new SMTPServer({
    secure: opts.implicitTls ?? false,
    key: pem.key,
    cert: pem.cert,
    ...(opts.maxTlsVersion ? { maxVersion: opts.maxTlsVersion } : {}),
    ...(opts.size ? { size: opts.size } : {}),
    name: TEST_MX_HOST,
    logger: false,
    disableReverseLookup: true,
    hideENHANCEDSTATUSCODES: false, // replies carry RFC 3463 codes, like Postfix's
    ...(opts.requireTls ? { hideREQUIRETLS: false } : {}),
    // Disabled, not just hidden: with hideSTARTTLS the server still upgrades when asked.
    disabledCommands: [...(starttls === "none" ? ["STARTTLS"] : []), ...(opts.auth ? [] : ["AUTH"])],
    authOptional: !opts.auth,
    allowInsecureAuth: opts.allowInsecureAuth ?? false,
    closeTimeout: 1000,
    onConnect(session, callback) {
      const peerSession: PeerSession = { connectedAt: Date.now(), secure: session.secure, mailFrom: [], rcptTo: [], authAttempts: 0, cleartextCommands: [] };
      open++;
      peak = Math.max(peak, open);
      bySession.set(session.id, peerSession);
      sessions.push(peerSession);
      const greeting = active(opts.greeting);
      if (greeting) return callback(scripted(greeting));
      if (starttls === "refuse" || starttls === "broken") overrideStarttls(connectionOf(session), starttls);
      callback();
    },
    onSecure(socket, session, callback) {
      const peerSession = record(session);
      peerSession.secure = true;
      const protocol = (socket as TLSSocket).getProtocol?.();
      if (protocol) peerSession.tlsProtocol = protocol;
      if (session.servername) peerSession.servername = session.servername;
      callback();
    },
    onClose() {
      open--;
    },
    onAuth(auth, session, callback) {
      noteCleartext(session, "AUTH");
      record(session).authAttempts++;
      if (opts.auth && auth.username === opts.auth.user && auth.password === opts.auth.pass) return callback(null, { user: auth.username });
      callback(Object.assign(new Error("Invalid credentials"), { responseCode: 535 }));
    },
    onMailFrom(address, session, callback) {
      noteCleartext(session, "MAIL");
      record(session).mailFrom.push(address.address);
      callback();
    },
    onRcptTo(address, session, callback) {
      noteCleartext(session, "RCPT");
      record(session).rcptTo.push(address.address);
      const reply = active(opts.rcpt?.[address.address.toLowerCase()]);
      callback(reply ? scripted(reply) : null);
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const peerSession = record(session);
        const script = active(dataScript);
        const drop = script !== undefined && "drop" in script;
        const reply = drop ? null : (script?.code ?? 250);
        const delay = active(opts.dataDelay);
        const entry: ReceivedMessage = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          data: Buffer.concat(chunks),
          secure: session.secure,
          ...(peerSession.tlsProtocol ? { tlsProtocol: peerSession.tlsProtocol } : {}),
          requireTls: (session.envelope.mailFrom ? (session.envelope.mailFrom as { args?: Record<string, unknown> }).args?.REQUIRETLS : undefined) === true,
          reply: delay ? null : reply,
        };
        received.push(entry);
        const answer = () => {
          const conn = openConnectionOf(session);
          if (!conn || conn._socket.destroyed) return; // the client is gone: nobody to answer
          // The whole message arrived; vanish before acknowledging it (at-least-once test).
          if (drop) return conn._socket.destroy();
          entry.reply = reply;
          if (script) return callback(scripted(script));
          callback();
        };
        if (!delay) return answer();
        const timer = setTimeout(() => {
          delayedReplies.delete(timer);
          answer();
        }, delay.ms);
        delayedReplies.add(timer);
      });
    },
  });

  // smtp-server has no hook for STARTTLS itself: it dispatches each command to a
  // `handler_<VERB>` method of the connection, so the peer replaces that one method.
  function connectionOf(session: SMTPServerSession) {
    const c = openConnectionOf(session);
    if (!c) throw new Error(`no connection for session ${session.id}`);
    return c;
  }
  function openConnectionOf(session: SMTPServerSession) {
    for (const c of server.connections) if (c.session === session) return c;
    return undefined;
  }
  function overrideStarttls(conn: ReturnType<typeof connectionOf>, how: "refuse" | "broken") {
    conn.handler_STARTTLS = function (_command, callback) {
      if (how === "refuse") {
        this.send(454, "TLS not available due to temporary reason");
        return callback();
      }
      // "Go ahead", then an answer to the ClientHello that is not TLS: the client's
      // handshake fails and it hangs up. Sent only once the ClientHello arrived, because a
      // client must drop whatever came in cleartext with the 220 (RFC 3207 section 6); the
      // socket stays open (a close could reach the client as a reset instead); and the
      // callback is never called, so the ClientHello is not parsed as commands.
      this.send(220, "Ready to start TLS");
      this._socket.once("data", () => this._socket.write("this is not a TLS ServerHello\r\n"));
    };
  }

  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(opts.port ?? 0, opts.ip ?? "127.0.0.1", () => resolve());
  });
  const address = server.server.address();
  if (!address || typeof address === "string") throw new Error("peer did not bind a TCP port");

  const openConnections = () => server.connections.size;
  const closed = trackOpen(`SMTP peer on ${address.address}:${address.port}`, "startPeer");
  return {
    host: address.address,
    port: address.port,
    received,
    sessions,
    openConnections,
    peakConnections: () => peak,
    async waitForIdle(timeoutMs = 5000) {
      await waitFor(() => openConnections() === 0, {
        timeoutMs,
        intervalMs: 10,
        what: () => `the peer to have no open connection (still ${openConnections()})`,
      });
    },
    close: () => {
      for (const timer of delayedReplies) clearTimeout(timer);
      delayedReplies.clear();
      return new Promise<void>((resolve) => server.close(() => resolve())).then(closed);
    },
  };
}
