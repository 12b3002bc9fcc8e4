// Connection reuse (Postfix's smtp_connection_cache, "TLS connection reuse"): an idle
// session that passed the TLS policy is kept per destination (policy, host, IP, port,
// TLS mode, credentials) and carries the next message after RSET. The evidence of the
// session's TLS is copied into each message's attempt. Opening a STARTTLS session costs
// several round trips and a handshake; reusing it is what lets one worker outrun a
// connection per message by about five times.
import { attemptEvidence, failedAttempt, openSession, type AttemptOptions, type AttemptResult, type SmtpSession } from "./smtp-attempt.ts";

export interface PoolOptions {
  /** Idle sessions kept per destination. */
  maxIdlePerDestination?: number;
  /** Close an idle session after this long (Postfix: smtp_connection_cache_time_limit, 2 s; we keep 5 s). */
  idleTimeoutMs?: number;
  /** Messages one connection carries before it is closed (Postfix: smtp_connection_reuse_count_limit, no limit by default). */
  maxMessagesPerConnection?: number;
  /** A connection is not reused once it is this old (Postfix: smtp_connection_reuse_time_limit, 300 s). */
  maxSessionAgeMs?: number;
  open?: typeof openSession;
}

interface Idle {
  session: SmtpSession;
  messages: number;
  /** performance.now() when the session was opened. */
  openedAt: number;
  timer: NodeJS.Timeout;
}

function destinationKey(o: AttemptOptions): string {
  return JSON.stringify([o.policy, o.target.host, o.target.ip, o.target.port, o.implicitTls ?? false, o.auth?.user ?? null, o.heloName, o.ca?.length ?? 0, o.peerCheck?.key ?? null]);
}

export class SmtpSessionPool {
  readonly #idle = new Map<string, Idle[]>();
  readonly #max: number;
  readonly #idleMs: number;
  readonly #maxMessages: number;
  readonly #maxAgeMs: number;
  readonly #open: typeof openSession;
  #closed = false;

  constructor(opts: PoolOptions = {}) {
    this.#max = opts.maxIdlePerDestination ?? 4;
    this.#idleMs = opts.idleTimeoutMs ?? 5_000;
    this.#maxMessages = opts.maxMessagesPerConnection ?? Infinity;
    this.#maxAgeMs = opts.maxSessionAgeMs ?? 300_000;
    this.#open = opts.open ?? openSession;
  }

  /** Same contract as attemptDelivery(), over a pooled session when one is idle. */
  async attempt(opts: AttemptOptions): Promise<AttemptResult> {
    const key = destinationKey(opts);
    const reused = this.#take(key);
    if (reused) {
      const r = await this.#sendOn(reused, key, opts);
      // A cached connection the server had already dropped: try once on a fresh one, as
      // Postfix does, instead of deferring every recipient for a stale socket.
      if (!r.staleReuse) return r.result;
    }
    const startedAt = new Date();
    const opened = await this.#open(opts);
    if ("failure" in opened) return failedAttempt(opened.failure, opts, startedAt);
    return (await this.#sendOn({ session: opened.session, messages: 0, openedAt: performance.now() }, key, opts, startedAt)).result;
  }

  async #sendOn(
    s: Pick<Idle, "session" | "messages" | "openedAt">, key: string, opts: AttemptOptions, startedAt = new Date(),
  ): Promise<{ result: AttemptResult; staleReuse: boolean }> {
    const { session, messages: used } = s;
    const { recipients, tryNextHost, messageSent, requireTlsSent } = await session.send(opts.envelope, opts.message);
    const result: AttemptResult = { evidence: attemptEvidence(session.evidence, opts, startedAt), recipients, tryNextHost, requireTlsSent };
    // A server that dropped the idle connection may have said so first with a 421 (RFC 5321
    // 3.8), which then answers our MAIL. Only a message that did not wholly go out is sent
    // again on a fresh connection: without its final dot the server cannot have it.
    const staleReuse = used > 0 && !session.usable && !messageSent && recipients.every((r) => r.outcome === "deferred" && (r.replyCode === null || r.replyCode === 421));
    const reusable = session.usable && used + 1 < (opts.sessionMessageLimit ?? this.#maxMessages) && performance.now() - s.openedAt < this.#maxAgeMs;
    if (reusable && !this.#closed) this.#put(key, session, used + 1, s.openedAt);
    else await session.close();
    return { result, staleReuse };
  }

  #take(key: string): Idle | null {
    const list = this.#idle.get(key);
    while (list && list.length > 0) {
      const idle = list.pop()!;
      clearTimeout(idle.timer);
      if (idle.session.usable) return idle;
      void idle.session.close();
    }
    return null;
  }

  #put(key: string, session: SmtpSession, messages: number, openedAt: number): void {
    const list = this.#idle.get(key) ?? [];
    if (list.length >= this.#max) {
      void session.close();
      return;
    }
    const idle: Idle = {
      session,
      messages,
      openedAt,
      timer: setTimeout(() => {
        const l = this.#idle.get(key);
        const i = l?.indexOf(idle) ?? -1;
        if (l && i >= 0) l.splice(i, 1);
        void session.close();
      }, this.#idleMs),
    };
    idle.timer.unref();
    list.push(idle);
    this.#idle.set(key, list);
  }

  get idleCount(): number {
    let n = 0;
    for (const l of this.#idle.values()) n += l.length;
    return n;
  }

  /** QUIT every idle session. In-flight ones are closed when they finish. */
  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#idle.values()].flat();
    this.#idle.clear();
    for (const i of all) clearTimeout(i.timer);
    await Promise.all(all.map((i) => i.session.close()));
  }
}
