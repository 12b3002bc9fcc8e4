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

type ErrorLike = { code?: unknown; kind?: unknown; cause?: unknown; message?: unknown; originalCode?: unknown };

/** The error and its causes (Prisma and the driver adapter wrap the pg error), each once. */
function* causeChain(err: unknown): Generator<ErrorLike> {
  const seen = new Set<unknown>();
  for (let e = err; e && typeof e === "object" && !seen.has(e); e = (e as ErrorLike).cause) {
    seen.add(e);
    yield e as ErrorLike;
  }
}

const hasCode = (o: ErrorLike, codes: ReadonlySet<string>) =>
  (typeof o.code === "string" && codes.has(o.code)) || (typeof o.originalCode === "string" && codes.has(o.originalCode));

export function isDatabaseUnavailable(err: unknown): boolean {
  for (const o of causeChain(err)) {
    if (hasCode(o, UNAVAILABLE_CODES)) return true;
    if (typeof o.kind === "string" && UNAVAILABLE_KINDS.has(o.kind)) return true;
    // node-postgres reports its own pool and connect timeouts only as messages.
    if (typeof o.message === "string" && /timeout exceeded when trying to connect|Connection terminated|Query read timeout/.test(o.message)) return true;
  }
  return false;
}

const PERMISSION_DENIED = new Set(["42501"]);

/** SQLSTATE 42501: the database role lacks a privilege (least-privilege deployments). */
export function isPermissionDenied(err: unknown): boolean {
  for (const o of causeChain(err)) if (hasCode(o, PERMISSION_DENIED)) return true;
  return false;
}
