// Destination limits (issue 14, item 4), per receiving host (the MX host name, or the relay):
// at most so many sessions open to it at once and so many messages per session (Postfix's
// per-destination concurrency and smtp_connection_reuse_count_limit, KumoMTA's shaping), and
// an answer to throttling. Large receivers slow a sender down with 421 ("too many
// connections", "try again later") or a 4.7.x reply (Gmail's 421 4.7.28, Microsoft's 451
// 4.7.500, greylisting's 450 4.7.1); sending the rest of the queue straight back at them
// only makes it worse. So a throttling reply halves the sessions the host gets (additive
// increase brings them back one by one as deliveries succeed again) and pauses it: no new
// attempt goes to it until the pause ends, the deliveries that come up meanwhile are
// deferred to the pause's end without a connection, and a host that throttles again right
// after a pause is paused twice as long (up to MAX_PAUSE_MS).
//
// The limits are each worker process's own: N workers may open N times the sessions to a
// host. That is how Postfix's limits work per instance too; set the sessions per host with
// the number of workers in mind.
import type { Logger } from "pino";
import type { ReplyVerdict } from "../domain/evidence.ts";
import type { Config, DestinationRule } from "../config.ts";

const MAX_PAUSE_MS = 15 * 60_000;

export interface DestinationSettings {
  /** SMTP_DESTINATION_SESSIONS: sessions open to one host at once. */
  sessions: number;
  /** SMTP_DESTINATION_MESSAGES_PER_SESSION: messages one session carries before it is closed. */
  messagesPerSession: number;
  /** SMTP_THROTTLE_PAUSE: how long a host that throttled us gets no new attempt (doubling while it keeps at it). */
  throttlePauseMs: number;
  rules: DestinationRule[];
}

/** The settings from the configuration. */
export function destinationSettings(c: Config): DestinationSettings {
  return {
    sessions: c.SMTP_DESTINATION_SESSIONS,
    messagesPerSession: c.SMTP_DESTINATION_MESSAGES_PER_SESSION,
    throttlePauseMs: c.SMTP_THROTTLE_PAUSE,
    rules: c.SMTP_DESTINATION_LIMITS,
  };
}

export interface DestinationLimits {
  sessions: number;
  messagesPerSession: number;
}

/** A reply by which a receiver asks us to slow down, not one about a recipient or the message. */
export function isThrottling(v: Pick<ReplyVerdict, "outcome" | "replyCode" | "enhancedCode">): boolean {
  if (v.outcome !== "deferred" || v.replyCode === null) return false; // our own verdicts carry no reply code
  return v.replyCode === 421 || (v.replyCode >= 400 && v.replyCode < 500 && (v.enhancedCode?.startsWith("4.7.") ?? false));
}

const matches = (pattern: string, name: string) => (pattern.startsWith(".") ? name.endsWith(pattern) : name === pattern);

interface HostState {
  inUse: number;
  /** The sessions the host gets now: its limit, less after throttling. Null: not lowered. */
  cap: number | null;
  waiters: Array<{ limit: number; start: () => void }>;
  pausedUntil: number;
  /** Pauses in a row without a delivery in between: each doubles the next. */
  pauses: number;
}

export class DestinationGate {
  readonly #s: DestinationSettings;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #hosts = new Map<string, HostState>();

  constructor(settings: DestinationSettings, logger: Logger, now: () => number = Date.now) {
    this.#s = settings;
    this.#log = logger.child({ component: "destinations" });
    this.#now = now;
  }

  /** The limits for mail to `domain` through `host`: the longest rule naming either, else the defaults. */
  limits(domain: string, host: string): DestinationLimits {
    const [d, h] = [domain.toLowerCase(), host.toLowerCase()];
    let best: DestinationRule | undefined;
    for (const r of this.#s.rules) if ((matches(r.pattern, d) || matches(r.pattern, h)) && r.pattern.length > (best?.pattern.length ?? 0)) best = r;
    return { sessions: best?.sessions ?? this.#s.sessions, messagesPerSession: best?.messagesPerSession ?? this.#s.messagesPerSession };
  }

  /** When the host's pause ends (epoch ms), or null when it is not paused. */
  pausedUntil(host: string): number | null {
    const until = this.#hosts.get(host.toLowerCase())?.pausedUntil ?? 0;
    return until > this.#now() ? until : null;
  }

  /** Waits for a session to the host under `limit` (and under its lowered cap); call the result when the session is done. */
  async acquire(host: string, limit: number): Promise<() => void> {
    const st = this.#state(host);
    if (st.waiters.length > 0 || st.inUse >= this.#allowed(st, limit)) await new Promise<void>((start) => st.waiters.push({ limit, start }));
    else st.inUse++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      st.inUse--;
      this.#pump(st);
      // A host with nothing under way and nothing to remember is forgotten: a worker meets many hosts.
      if (st.inUse === 0 && st.waiters.length === 0 && st.cap === null && st.pauses === 0 && st.pausedUntil <= this.#now()) this.#hosts.delete(host.toLowerCase());
    };
  }

  /**
   * What the host answered in one attempt under `limit` sessions: throttling pauses it and
   * lowers its sessions; a delivery raises them again, one at a time, up to `limit`.
   */
  observe(host: string, limit: number, verdicts: Array<Pick<ReplyVerdict, "outcome" | "replyCode" | "enhancedCode">>): void {
    const st = this.#state(host);
    const now = this.#now();
    const throttle = verdicts.find(isThrottling);
    if (throttle) {
      // A throttle reply from a session that started before the pause is the same signal again, not a new one.
      if (now < st.pausedUntil) return;
      const before = st.cap ?? Infinity;
      st.cap = Math.max(1, Math.floor(Math.min(before, st.inUse) / 2));
      const pauseMs = Math.min(MAX_PAUSE_MS, this.#s.throttlePauseMs * 2 ** st.pauses);
      st.pauses++;
      st.pausedUntil = now + pauseMs;
      this.#log.warn(
        { host, replyCode: throttle.replyCode, enhancedCode: throttle.enhancedCode, sessions: st.cap, pausedUntil: new Date(st.pausedUntil).toISOString() },
        `${host} is throttling this sender (${throttle.replyCode}${throttle.enhancedCode ? ` ${throttle.enhancedCode}` : ""}): ` +
          `no new attempt to it for ${Math.round(pauseMs / 1000)} s, then at most ${st.cap} session(s) at once, more as deliveries succeed`,
      );
      return;
    }
    if (verdicts.some((v) => v.outcome === "delivered")) {
      if (now >= st.pausedUntil) st.pauses = 0; // a session from before the pause says nothing about after it
      if (st.cap !== null) {
        st.cap = st.cap + 1 >= limit ? null : st.cap + 1;
        this.#pump(st);
      }
    }
  }

  #allowed(st: HostState, limit: number): number {
    return st.cap === null ? limit : Math.min(limit, st.cap);
  }

  #state(host: string): HostState {
    const key = host.toLowerCase();
    let st = this.#hosts.get(key);
    if (!st) {
      st = { inUse: 0, cap: null, waiters: [], pausedUntil: 0, pauses: 0 };
      this.#hosts.set(key, st);
    }
    return st;
  }

  /** Starts waiting sessions, oldest first, while the host has room for them. */
  #pump(st: HostState): void {
    while (st.waiters.length > 0 && st.inUse < this.#allowed(st, st.waiters[0]!.limit)) {
      st.inUse++;
      st.waiters.shift()!.start();
    }
  }
}
