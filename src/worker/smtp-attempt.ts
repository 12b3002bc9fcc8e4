// One SMTP delivery attempt to one host under the STARTTLS policy (ARCHITECTURE.md, "Strictest-of TLS policy").
// What the policy means for the attempt is decided once, by tlsPlan() (tls-plan.ts); this
// file carries the plan out. nodemailer's SMTPConnection speaks the protocol; the plan is
// applied here from the error codes and the TLS socket it exposes, never from reply text.
import net from "node:net";
import { randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { TLSSocket, type ConnectionOptions } from "node:tls";
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js";
import type { NodemailerError } from "nodemailer/lib/errors.js";
import type { TlsPolicy } from "../domain/tls-policy.ts";
import { meetsMinVersion, tlsPlan, type TlsPlan } from "./tls-plan.ts";
import { CLEARTEXT_REASON, cleartextEvidence, evidenceOf, presentedChain, sniName, trustContext } from "./smtp-evidence.ts";
import type { AttemptEvidence, ReplyVerdict, TlsEvidence } from "../domain/evidence.ts";
import { classifySend, defaultEnhanced, errorName, LOCAL_STATUS, localVerdict, parseReply, type RecipientVerdict } from "./smtp-reply.ts";

export type { AttemptEvidence, TlsEvidence } from "../domain/evidence.ts";

export type { TlsPolicy } from "../domain/tls-policy.ts";

interface SmtpTarget {
  /** MX or relay host name: used for SNI and the certificate name check. */
  host: string;
  /** Connect here. */
  ip: string;
  port: number;
}

export interface AttemptOptions {
  target: SmtpTarget;
  policy: TlsPolicy;
  /** smtps:// relay (port 465 style): TLS from the first byte, no STARTTLS. */
  implicitTls?: boolean;
  /** Relay AUTH: never sent before TLS is verified, whatever the policy. */
  auth?: { user: string; pass: string };
  heloName: string;
  /** Extra trusted CA PEMs (SMTP_CA_FILE); the system roots stay trusted too. */
  ca?: string[];
  connectTimeoutMs: number;
  envelope: Envelope;
  /** The full RFC 5322 message, already built. */
  message: Buffer;
  /** Messages a pooled session to this host carries before it is closed (destinations.ts); default: the pool's. */
  sessionMessageLimit?: number;
  /**
   * Decides `verified` instead of the trusted-CA-and-name check: a pinned fingerprint of the
   * policy map, or DANE's TLSA records (policy-layers.ts). Only with policy `required`.
   */
  peerCheck?: PeerCheck;
}

/** A check of the peer's certificate that replaces the PKIX one (policy-layers.ts). */
export interface PeerCheck {
  /** What it checks, stable across calls: part of the session pool's key. */
  readonly key: string;
  readonly by: "fingerprint" | "dane";
  /** TLS is required but an unverified certificate is used (DANE with only unusable records). */
  readonly acceptUnverified?: boolean;
  /** The certificate chain as the server presented it, leaf first (DER). */
  check(chain: Buffer[], host: string): { verified: boolean; error: string | null; matched: string | null };
}

interface Envelope {
  from: string;
  to: string[];
  /**
   * Ask for REQUIRETLS (RFC 8689) when the server advertises it over TLS: every later hop
   * must then use verified TLS too. A server that does not advertise it gets the message
   * without it (this hop's own policy still holds).
   */
  requireTls?: boolean;
}

export interface AttemptResult {
  evidence: AttemptEvidence;
  /** One per envelope.to, same order. */
  recipients: RecipientVerdict[];
  /** MAIL FROM carried REQUIRETLS. */
  requireTlsSent?: boolean;
  /**
   * True when this host could not take the message (connection, greeting, TLS policy,
   * AUTH): the deferred recipients may be tried at the next MX right away. Never after a
   * 5xx to RCPT/DATA, nor once the whole message was sent (it may have been accepted).
   */
  tryNextHost: boolean;
}

export type SessionOptions = Omit<AttemptOptions, "envelope" | "message">;

/** A session that could not be used: every recipient is deferred with this status. */
export interface SessionFailure {
  evidence: TlsEvidence;
  replyCode: number | null;
  enhancedCode: string;
  replyText: string;
}

/**
 * A connected session that passed the TLS policy (and AUTH when asked for). It can carry
 * several messages one after another, which is what a connection pool needs.
 */
export interface SmtpSession {
  readonly evidence: TlsEvidence;
  /** False once the connection is gone; a pool must then open a new one. */
  readonly usable: boolean;
  /** `messageSent`: every byte of the message was handed to the connection (the server may have it). */
  send(envelope: Envelope, message: Buffer): Promise<{ recipients: RecipientVerdict[]; tryNextHost: boolean; messageSent: boolean; requireTlsSent: boolean }>;
  /** Sends QUIT and waits for the connection to end. */
  close(): Promise<void>;
}

// RFC 5321 4.5.3.2: a client should wait up to 10 minutes for the reply to the final dot
// (5 for the other commands); this is the inactivity limit for the whole session.
const REPLY_TIMEOUT_MS = 10 * 60_000;
// QUIT is a courtesy (RFC 5321 4.1.1.10); a server that does not answer it is cut off.
const QUIT_TIMEOUT_MS = 5_000;

export async function attemptDelivery(opts: AttemptOptions): Promise<AttemptResult> {
  const startedAt = new Date();
  const opened = await openSession(opts);
  if ("failure" in opened) return failedAttempt(opened.failure, opts, startedAt);
  try {
    const { recipients, tryNextHost, requireTlsSent } = await opened.session.send(opts.envelope, opts.message);
    return { evidence: attemptEvidence(opened.session.evidence, opts, startedAt), recipients, tryNextHost, requireTlsSent };
  } finally {
    await opened.session.close();
  }
}

/** The evidence of one attempt: the session's TLS, where it went, under which policy, and when. */
export function attemptEvidence(tls: TlsEvidence, opts: SessionOptions, startedAt: Date): AttemptEvidence {
  const { host: mxHost, ip, port } = opts.target;
  return { ...tls, mxHost, ip, port, policy: opts.policy, startedAt, durationMs: Date.now() - startedAt.getTime() };
}

/** A session that could not be opened defers every recipient; the next host may take them. */
export function failedAttempt(failure: SessionFailure, opts: AttemptOptions, startedAt: Date): AttemptResult {
  const { evidence, ...status } = failure;
  return {
    evidence: attemptEvidence(evidence, opts, startedAt),
    recipients: opts.envelope.to.map((address) => ({ address, outcome: "deferred", ...status })),
    tryNextHost: true,
  };
}

/**
 * Connects, negotiates TLS as the policy says, checks it, and authenticates if asked to. The
 * evidence carries an id of the connection, which every message sent over it shares.
 */
export async function openSession(opts: SessionOptions): Promise<{ session: SmtpSession } | { failure: SessionFailure }> {
  const sessionId = randomUUID();
  const r = await negotiate(opts);
  if ("failure" in r) return { failure: { ...r.failure, evidence: { ...r.failure.evidence, sessionId } } };
  return { session: Object.assign(r.session, { evidence: { ...r.session.evidence, sessionId } }) };
}

async function negotiate(opts: SessionOptions): Promise<{ session: SmtpSession } | { failure: SessionFailure }> {
  const plan = tlsPlan(opts.policy, { auth: opts.auth !== undefined, implicitTls: opts.implicitTls === true });
  let attempt = await connect(opts, opts.implicitTls ? "implicit" : "starttls", plan);
  let cleartextReason: string | null = null;
  if ("error" in attempt && attempt.error.duringHandshake && plan.cleartextAfterFailedHandshake) {
    cleartextReason = `${CLEARTEXT_REASON.handshakeFailed}: ${errorName(attempt.error.err)}`;
    attempt = await connect(opts, "off", plan);
  }
  if ("error" in attempt) return { failure: connectFailure(attempt.error, opts.target, plan) };

  const conn = attempt.conn;
  cleartextReason ??= stayedCleartextBecause(conn);
  let evidence = evidenceOf(conn._socket, conn.secure, opts.target.host, cleartextReason);
  if (opts.peerCheck && evidence.tls && conn._socket instanceof TLSSocket) evidence = checkedPeer(evidence, opts.peerCheck, conn._socket, opts.target.host);
  const refusal = plan.strict ? tlsRefusal(evidence, opts.target, plan, opts.peerCheck?.acceptUnverified !== true) : null;
  if (refusal) {
    await closeConnection(conn);
    return { failure: { evidence, replyCode: null, ...refusal } };
  }
  if (plan.authenticate && opts.auth) {
    const err = await new Promise<NodemailerError | null>((resolve) => conn.login({ ...opts.auth }, (e) => resolve(e)));
    if (err) {
      await closeConnection(conn);
      const reply = err.response ? parseReply(err.response) : null;
      const replyText = `relay authentication failed: ${reply?.text ?? errorName(err)}`;
      return { failure: { evidence, replyCode: reply?.code ?? null, enhancedCode: reply?.enhanced ?? LOCAL_STATUS.authFailed, replyText } };
    }
  }
  return { session: createSession(conn, evidence) };
}

/** The evidence with `verified` decided by the peer check instead of PKIX. */
function checkedPeer(evidence: TlsEvidence, peerCheck: PeerCheck, socket: TLSSocket, host: string): TlsEvidence {
  const r = peerCheck.check(presentedChain(socket), host);
  return { ...evidence, verified: r.verified, verifyError: r.error, verifiedBy: peerCheck.by, matched: r.matched };
}

type TlsMode = "implicit" | "starttls" | "off";
interface ConnectError {
  err: NodemailerError;
  /** The TCP connection was up and the TLS handshake failed (or timed out). */
  duringHandshake: boolean;
  evidence: TlsEvidence;
}

async function connect(opts: SessionOptions, mode: TlsMode, plan: TlsPlan): Promise<{ conn: SMTPConnection } | { error: ConnectError }> {
  let socket: net.Socket;
  try {
    socket = await openTcp(opts.target, opts.connectTimeoutMs);
  } catch (e) {
    return { error: { err: e as NodemailerError, duringHandshake: false, evidence: cleartextEvidence(null) } };
  }
  const servername = sniName(opts.target.host);
  // rejectUnauthorized is false in every plan so that the certificate can be recorded
  // even when it is refused; the refusal happens in tlsRefusal() before any envelope or
  // credential is sent. A strict plan also refuses anything older than its minimum at handshake.
  const tlsOptions: ConnectionOptions = {
    secureContext: trustContext(opts.ca, plan.minVersion),
    rejectUnauthorized: false,
    servername,
  };
  const conn = new SMTPConnection({
    // A socket we connected ourselves: TCP errors keep Node's codes, and implicit TLS goes
    // through the same upgrade path as STARTTLS, so `upgrading` tells a handshake failure.
    connection: socket,
    secure: mode === "implicit",
    // STARTTLS whenever offered. requireTLS is never used: it would send STARTTLS to a
    // server that did not offer it; "not offered" is refused in tlsRefusal() instead.
    ignoreTLS: mode === "off",
    // A 454/5xx to STARTTLS: Postfix `may` goes on in cleartext on the same connection.
    opportunisticTLS: plan.cleartextWithoutStarttls,
    servername,
    // Not used to connect (the socket is ours): nodemailer derives the name Node checks the
    // certificate against from it, and without it a relay given as an IP literal is
    // checked against "localhost" (and "localhost" is sent as SNI).
    host: opts.target.host,
    name: opts.heloName,
    connectionTimeout: opts.connectTimeoutMs,
    greetingTimeout: opts.connectTimeoutMs,
    socketTimeout: REPLY_TIMEOUT_MS,
    logger: false,
    tls: tlsOptions,
  });
  return new Promise((resolve) => {
    let settled = false;
    // Stays attached: an 'error' without a listener would throw. Errors after the session
    // is up are also handed to the send() callback, which is where they are handled.
    conn.on("error", (err: NodemailerError) => {
      if (settled) return;
      settled = true;
      // nodemailer clears `upgrading` only when the handshake succeeds.
      const duringHandshake = conn.upgrading === true;
      const reason = duringHandshake ? `${CLEARTEXT_REASON.handshakeFailed}: ${errorName(err)}` : null;
      const established = conn.secure && !duringHandshake;
      resolve({ error: { err, duringHandshake, evidence: evidenceOf(conn._socket, established, opts.target.host, reason) } });
    });
    conn.connect((err) => {
      if (settled) return;
      settled = true;
      if (err) resolve({ error: { err, duringHandshake: false, evidence: cleartextEvidence(null) } });
      else resolve({ conn });
    });
  });
}

function openTcp(target: SmtpTarget, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.ip, port: target.port });
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(Object.assign(new Error(`no connection within ${timeoutMs} ms`), { code: "ETIMEDOUT" })), timeoutMs);
    socket.once("error", fail);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", fail);
      resolve(socket);
    });
  });
}

/** Why a connected session is in cleartext, if it is. */
function stayedCleartextBecause(conn: SMTPConnection): string | null {
  if (conn.secure) return null;
  // With opportunisticTLS nodemailer goes on after a refused STARTTLS; the refusal is
  // then the last reply it read (otherwise that is the EHLO/HELO reply).
  const last = typeof conn.lastServerResponse === "string" ? conn.lastServerResponse : "";
  const code = parseReply(last).code;
  if (code !== null && code >= 400) return `${CLEARTEXT_REASON.refused}: ${last.trim()}`;
  return CLEARTEXT_REASON.notOffered;
}

/** Under a strict plan: why this session must not be used, or null if it may. */
function tlsRefusal(evidence: TlsEvidence, target: SmtpTarget, plan: TlsPlan, mustVerify: boolean): { enhancedCode: string; replyText: string } | null {
  const need = plan.requirement;
  const peer = describePeer(target);
  if (!evidence.tls) {
    const why = evidence.verifyError?.startsWith(CLEARTEXT_REASON.refused) ? "refused STARTTLS" : "did not offer STARTTLS";
    return { enhancedCode: LOCAL_STATUS.tlsNotAvailable, replyText: `${need}, but ${peer} ${why} (${evidence.verifyError})` };
  }
  if (!meetsMinVersion(evidence.tlsVersion, plan.minVersion)) {
    return { enhancedCode: LOCAL_STATUS.tlsFailed, replyText: `${need}, but ${peer} negotiated ${evidence.tlsVersion}` };
  }
  if (!evidence.verified && mustVerify) {
    return { enhancedCode: LOCAL_STATUS.tlsFailed, replyText: `${need}, but the certificate of ${peer} did not verify (${evidence.verifyError})` };
  }
  return null;
}

function connectFailure(e: ConnectError, target: SmtpTarget, plan: TlsPlan): SessionFailure {
  const { err, evidence } = e;
  const peer = describePeer(target);
  const need = plan.requirement ? `${plan.requirement}, but ` : "";
  if (err.code === "ETLS" && err.command === "STARTTLS") {
    // Only on a strict plan: otherwise nodemailer goes on in cleartext instead.
    const reply = err.response?.trim() ?? "";
    return {
      evidence: { ...evidence, verifyError: `${CLEARTEXT_REASON.refused}: ${reply}` },
      replyCode: null,
      enhancedCode: LOCAL_STATUS.tlsNotAvailable,
      replyText: `${need}${peer} refused STARTTLS: ${reply}`,
    };
  }
  if (e.duringHandshake) {
    return { evidence, replyCode: null, enhancedCode: LOCAL_STATUS.tlsFailed, replyText: `${need}the TLS handshake with ${peer} failed (${errorName(err)})` };
  }
  if (err.response) {
    // 421 or 5xx greeting, EHLO refused: the server's own words. Still a deferral and the
    // next MX, even for 5xx: a host that will not talk to us says nothing about the
    // recipients (Postfix's smtp_skip_5xx_greeting).
    const reply = parseReply(err.response);
    const code = reply.code ?? err.responseCode ?? null;
    return { evidence, replyCode: code, enhancedCode: reply.enhanced ?? (code ? defaultEnhanced(code) : LOCAL_STATUS.noAnswer), replyText: reply.text };
  }
  return { evidence, replyCode: null, enhancedCode: LOCAL_STATUS.noAnswer, replyText: `no usable connection to ${peer}: ${errorName(err)}` };
}

const describePeer = (t: SmtpTarget) => `${t.host}[${t.ip}]:${t.port}`;

function createSession(conn: SMTPConnection, evidence: TlsEvidence): SmtpSession {
  let halfDone = false;
  return {
    evidence,
    get usable() {
      return !conn.destroyed;
    },
    async send(envelope, message) {
      // RFC 5321 4.1.1.5: RSET before reusing the connection when the last transaction
      // ended half way (MAIL or every RCPT refused, DATA refused). One that ended with the
      // reply to the final dot is over on both sides (RFC 5321 4.1.1.4), so the next MAIL
      // follows at once, as nodemailer's own pool does: a round trip less per message.
      if (halfDone && !conn.destroyed) await new Promise<void>((resolve) => conn.reset(() => resolve()));
      const r = await sendOne(conn, envelope, message);
      halfDone = !r.complete;
      return { recipients: r.recipients, tryNextHost: r.tryNextHost, messageSent: r.messageSent, requireTlsSent: r.requireTlsSent };
    },
    close: () => closeConnection(conn),
  };
}

// RFC 5321 4.1.2 mailboxes never contain controls, spaces or angle brackets; such an
// address would break the command line, so it is refused here and never sent.
const UNSENDABLE = /[\x00-\x20\x7f<>]/;

/** `complete`: the transaction ended with the server's reply to the final dot. */
async function sendOne(conn: SMTPConnection, envelope: Envelope, message: Buffer) {
  const all = (verdict: ReplyVerdict) => ({ recipients: envelope.to.map((address) => ({ address, ...verdict })), tryNextHost: false, complete: true, messageSent: false, requireTlsSent: false });
  if (UNSENDABLE.test(envelope.from)) return all(localVerdict("bounced", LOCAL_STATUS.badSender, "invalid sender address"));
  const to = [...new Set(envelope.to.filter((a) => a !== "" && !UNSENDABLE.test(a)))];
  const badAddress = localVerdict("bounced", LOCAL_STATUS.badRecipient, "invalid recipient address");
  if (to.length === 0) return all(badAddress);
  if (conn.destroyed) return all(localVerdict("deferred", LOCAL_STATUS.badConnection, "connection already closed"));

  // The message goes in as a stream only to learn whether all of it was handed to the
  // connection: after that, a lost connection may still mean the server has it.
  let messageSent = false;
  // Only over TLS and when advertised there (nodemailer refuses the send otherwise).
  const requireTlsSent = envelope.requireTls === true && conn.secure && advertises(conn, "REQUIRETLS");
  const body = Readable.from([message], { objectMode: false });
  body.once("end", () => (messageSent = true));
  const { err, info } = await new Promise<{ err: NodemailerError | null; info?: SMTPConnection.SentMessageInfo }>((resolve) => {
    conn.send({ from: envelope.from, to, size: message.length, ...(requireTlsSent ? { requireTLSExtensionEnabled: true } : {}) }, body, (e, i) => resolve({ err: e, info: i }));
  });
  const { verdicts, tryNextHost } = classifySend({ to, err, info, rcptErrors: rcptErrorsOf(conn), messageSent });
  const recipients = envelope.to.map((address) => ({ address, ...(verdicts.get(address) ?? badAddress) }));
  return { recipients, tryNextHost, complete: err === null, messageSent, requireTlsSent };
}

// nodemailer keeps the per-recipient RCPT errors on its private `_envelope` and copies them
// onto the result or the all-rejected error only; after a refused DATA or a lost connection
// this is the one place that still says which recipients the server already refused.
function rcptErrorsOf(conn: SMTPConnection): NodemailerError[] {
  const envelope = (conn as unknown as { _envelope?: { rejectedErrors?: NodemailerError[] } | false })._envelope;
  return (envelope && envelope.rejectedErrors) || [];
}

// nodemailer keeps the EHLO keywords on its private `_supportedExtensions` (it reads REQUIRETLS there itself).
function advertises(conn: SMTPConnection, keyword: string): boolean {
  const ext = (conn as unknown as { _supportedExtensions?: string[] })._supportedExtensions;
  return Array.isArray(ext) && ext.includes(keyword);
}

function closeConnection(conn: SMTPConnection): Promise<void> {
  if (conn.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      conn.close();
      resolve();
    }, QUIT_TIMEOUT_MS);
    conn.once("end", () => {
      clearTimeout(timer);
      resolve();
    });
    conn.quit();
  });
}
