// Retry schedule for deferred deliveries: exponential from SMTP_RETRY_MIN, capped at
// SMTP_RETRY_MAX, with +-20% jitter so a destination that was down does not get every
// queued message back at the same instant (Postfix does the same with its queue run
// spread). Pure.
export function nextRetryDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const base = Math.min(maxMs, minMs * 2 ** Math.max(0, attempt - 1));
  const jitter = 0.8 + 0.4 * random();
  return Math.max(1, Math.round(Math.min(maxMs, base * jitter)));
}
