// Tell "the database is unreachable" (retry later: 503) from every other failure.
// Decided from error codes along the cause chain, never from message text alone.
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EHOSTUNREACH", "EAI_AGAIN",
  "57P01", "57P02", "57P03", // admin shutdown, crash shutdown, cannot connect now
  "53300", // too many connections
  "08000", "08001", "08003", "08004", "08006", // connection exceptions
  "57014", // statement timeout (query_canceled): the database is too slow to answer in time
  "55P03", // lock not available (lock_timeout)
  "P1001", "P1002", "P1008", "P1017", "P2024", // Prisma: unreachable, timed out, server closed, pool timeout
]);
const UNAVAILABLE_KINDS = new Set(["DatabaseNotReachable", "ConnectionClosed", "SocketTimeout", "TooManyConnections", "DatabaseDoesNotExist"]);

export function isDatabaseUnavailable(err: unknown): boolean {
  const seen = new Set<unknown>();
  let e: unknown = err;
  while (e && typeof e === "object" && !seen.has(e)) {
    seen.add(e);
    const o = e as { code?: unknown; kind?: unknown; cause?: unknown; message?: unknown; originalCode?: unknown };
    if (typeof o.code === "string" && UNAVAILABLE_CODES.has(o.code)) return true;
    if (typeof o.originalCode === "string" && UNAVAILABLE_CODES.has(o.originalCode)) return true;
    if (typeof o.kind === "string" && UNAVAILABLE_KINDS.has(o.kind)) return true;
    // node-postgres reports its own pool and connect timeouts only as messages.
    if (typeof o.message === "string" && /timeout exceeded when trying to connect|Connection terminated|Query read timeout/.test(o.message)) return true;
    e = o.cause;
  }
  return false;
}

/** SQLSTATE 42501: the database role lacks a privilege (least-privilege deployments). */
export function isPermissionDenied(err: unknown): boolean {
  const seen = new Set<unknown>();
  let e: unknown = err;
  while (e && typeof e === "object" && !seen.has(e)) {
    seen.add(e);
    const o = e as { code?: unknown; originalCode?: unknown; cause?: unknown };
    if (o.code === "42501" || o.originalCode === "42501") return true;
    e = o.cause;
  }
  return false;
}
