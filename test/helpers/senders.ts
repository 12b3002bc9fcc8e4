// Concurrent API clients for the fault suite: each sends one message at a time over
// HTTPS with its own Idempotency-Key, retries 503s (after Retry-After, capped) and
// unanswered requests with the same key, and records every answer it got.
import { request } from "./https-client.ts";
import type { SendResponseView } from "../../src/api/schemas.ts";

export interface Answer {
  /** HTTP status; 0 when no answer came (connection refused or reset, timeout). */
  status: number;
  ms: number;
  retryAfter: string | null;
  error?: string;
}

export interface SentMessage {
  key: string;
  /** Sequence number across all senders (what the body was built from). */
  n: number;
  answers: Answer[];
  /** The message id of the 202 (first or replayed). */
  id: string | null;
  /** The last status: 202, or what the sender gave up on. */
  final: number;
}

export interface SendersOptions {
  url: string;
  ca: string;
  apiKey: string;
  senders: number;
  /** The request body of message n (its key is given too, e.g. to put in metadata). */
  body(n: number, key: string): Record<string, unknown>;
  /** Pause between one sender's messages (paces the load). */
  paceMs?: number;
  /** Messages per sender at most (default: until stop()). */
  perSender?: number;
  /** Give up retrying one message after this long (default 60 s). */
  giveUpMs?: number;
  httpTimeoutMs?: number;
  /** Longest wait a Retry-After may impose (default 2 s), and the wait without one. */
  maxRetryWaitMs?: number;
  keyPrefix?: string;
}

export interface Senders {
  messages: SentMessage[];
  /** Stop starting new messages; resolves when every sender finished its current one. */
  stop(): Promise<void>;
  /** Resolves when every sender sent perSender messages (or was stopped). */
  done: Promise<void>;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function startSenders(o: SendersOptions): Senders {
  const messages: SentMessage[] = [];
  let stopped = false;
  let next = 0;
  const prefix = o.keyPrefix ?? `k${Date.now().toString(36)}`;
  const maxWait = o.maxRetryWaitMs ?? 2000;

  const sendOne = async (n: number): Promise<void> => {
    const key = `${prefix}-${n}`;
    const m: SentMessage = { key, n, answers: [], id: null, final: 0 };
    messages.push(m);
    const body = o.body(n, key);
    const giveUp = Date.now() + (o.giveUpMs ?? 60_000);
    for (;;) {
      const started = Date.now();
      let a: Answer;
      let id: string | null = null;
      try {
        const r = await request(`${o.url}/send`, {
          method: "POST",
          headers: { authorization: `Bearer ${o.apiKey}`, "idempotency-key": key },
          body,
          ca: o.ca,
          timeoutMs: o.httpTimeoutMs ?? 30_000,
        });
        const ra = r.headers["retry-after"];
        a = { status: r.status, ms: Date.now() - started, retryAfter: typeof ra === "string" ? ra : null };
        if (r.status === 202) id = (r.json() as SendResponseView).id;
      } catch (err) {
        a = { status: 0, ms: Date.now() - started, retryAfter: null, error: (err as { code?: string }).code ?? (err as Error).message };
      }
      m.answers.push(a);
      m.final = a.status;
      if (id) m.id = id;
      if ((a.status !== 503 && a.status !== 0) || Date.now() > giveUp) return;
      const seconds = a.retryAfter !== null && /^\d+$/.test(a.retryAfter) ? Number(a.retryAfter) * 1000 : 500;
      await pause(Math.min(Math.max(seconds, 100), maxWait));
    }
  };

  const loop = async () => {
    for (let i = 0; !stopped && (o.perSender === undefined || i < o.perSender); i++) {
      await sendOne(next++);
      if (o.paceMs) await pause(o.paceMs);
    }
  };
  const done = Promise.all(Array.from({ length: o.senders }, loop)).then(() => undefined);
  return {
    messages,
    done,
    async stop() {
      stopped = true;
      await done;
    },
  };
}
