// How long a deferred delivery keeps being retried: SMTP_MAX_RETRY (Postfix's
// maximal_queue_lifetime) counted from when the delivery first became due, which is
// its created_at: the time the message was accepted, or send_at for scheduled mail.
// The worker decides with isPastLifetime and the message view shows lifetimeEnd as
// expires_at, so what the API announces is the rule the worker applies. Pure.

/** From this time on, an attempt that is deferred fails the recipient instead. */
export function lifetimeEnd(firstDueAt: Date, maxRetryMs: number): Date {
  return new Date(firstDueAt.getTime() + maxRetryMs);
}

/** Whether a deferral decided at `now` is final. */
export function isPastLifetime(firstDueAt: Date, maxRetryMs: number, now: Date): boolean {
  return now.getTime() >= lifetimeEnd(firstDueAt, maxRetryMs).getTime();
}
