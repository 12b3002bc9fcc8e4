// Tell "the database is unavailable" (retry later: 503) from every other failure, for
// any error Prisma, @prisma/adapter-pg or node-postgres throws. Decided from codes found
// anywhere in the error, never from Prisma's message text.
//
// Where the driver's error ends up depends on the call (measured on Prisma 7.10):
//   - a raw query ($queryRaw*, the message writer) fails as PrismaClientKnownRequestError
//     P2010, a model query as P2039, both with the DriverAdapterError under
//     `meta.driverAdapterError` and the SQLSTATE on that error's `cause` (`code`,
//     `originalCode`) or, for socket errors, only a `kind` (DatabaseNotReachable...);
//   - Prisma's own connection codes (P1001, P1017, P2024...) are on the outer `code`,
//     and PrismaClientInitializationError carries `errorCode`;
//   - errors the adapter does not convert (node-postgres pool and read timeouts, a
//     connection that ends) come out as plain Errors, their cause on `.cause`.
// So every path is followed: `.cause`, `meta.driverAdapterError` and AggregateError's
// `errors` (a connect to "localhost" tries both address families).

/** SQLSTATEs (PostgreSQL Appendix A) that say "retry later", not "this request is wrong". */
const UNAVAILABLE_SQLSTATES = new Set([
  "57014", // query_canceled: statement_timeout (also a lock wait that outlives it)
  "55P03", // lock_not_available: lock_timeout
  "57P01", "57P02", "57P03", // admin shutdown (pg_terminate_backend), crash shutdown, cannot connect now (starting, stopping)
  "57P05", // idle_session_timeout
  "25006", // read_only_sql_transaction: connected to a standby (after a failover) or a read-only database
  "40001", "40P01", // serialization failure, deadlock: the transaction was rolled back and may be retried
  "58000", "58030", // system_error, io_error: the server's storage failed
]);
/** Whole SQLSTATE classes: 08 connection exception, 53 insufficient resources (53100 disk full, 53300 too many connections...). */
const UNAVAILABLE_SQLSTATE_CLASSES = ["08", "53"];
/** Node socket errors (connect, read, DNS). */
const UNAVAILABLE_SOCKET_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN",
]);
/** Prisma: P1001 unreachable, P1002 timed out, P1008 operation timed out, P1017 server closed the connection,
 *  P2024 connection pool timeout, P2034 write conflict or deadlock. */
const UNAVAILABLE_PRISMA_CODES = new Set(["P1001", "P1002", "P1008", "P1017", "P2024", "P2034"]);
/** @prisma/adapter-pg `kind`s for socket errors and the SQLSTATEs it names instead of passing on. */
const UNAVAILABLE_KINDS = new Set([
  "DatabaseNotReachable", "ConnectionClosed", "SocketTimeout", "TooManyConnections", "TransactionWriteConflict", "DatabaseDoesNotExist",
]);
/** node-postgres reports its own timeouts and dead connections only as messages. */
const UNAVAILABLE_PG_MESSAGES =
  /^(timeout exceeded when trying to connect|Connection terminated|Query read timeout|Client has encountered a connection error and is not queryable|Client was closed and is not queryable)/;

type ErrorLike = {
  code?: unknown; originalCode?: unknown; errorCode?: unknown; kind?: unknown; message?: unknown;
  cause?: unknown; meta?: { driverAdapterError?: unknown }; errors?: unknown;
};

/** The error and everything it wraps (`.cause`, Prisma's driver error, AggregateError's errors), each once. */
export function* errorChain(err: unknown): Generator<ErrorLike> {
  const seen = new Set<unknown>();
  const todo: unknown[] = [err];
  while (todo.length > 0) {
    const e = todo.shift();
    if (!e || typeof e !== "object" || seen.has(e)) continue;
    seen.add(e);
    const o = e as ErrorLike;
    yield o;
    todo.push(o.cause);
    if (o.meta && typeof o.meta === "object") todo.push(o.meta.driverAdapterError);
    if (Array.isArray(o.errors)) todo.push(...o.errors);
  }
}

const isSqlState = (c: string) => /^[0-9A-Z]{5}$/.test(c);

function unavailableCode(c: unknown): boolean {
  if (typeof c !== "string") return false;
  if (UNAVAILABLE_SOCKET_CODES.has(c) || UNAVAILABLE_PRISMA_CODES.has(c)) return true;
  return isSqlState(c) && (UNAVAILABLE_SQLSTATES.has(c) || UNAVAILABLE_SQLSTATE_CLASSES.includes(c.slice(0, 2)));
}

/**
 * Why `err` means the database is unavailable for now (the code, kind or node-postgres
 * message that says so, for logs), or null when it is some other failure.
 */
export function databaseUnavailableReason(err: unknown): string | null {
  for (const o of errorChain(err)) {
    if (o instanceof DatabaseUnavailableError) return o.name;
    for (const c of [o.code, o.originalCode, o.errorCode]) if (unavailableCode(c)) return c as string;
    if (typeof o.kind === "string" && UNAVAILABLE_KINDS.has(o.kind)) return o.kind;
    if (typeof o.message === "string" && UNAVAILABLE_PG_MESSAGES.test(o.message)) return o.message;
  }
  return null;
}

/**
 * True when `err`, thrown by Prisma, @prisma/adapter-pg or node-postgres (or by this
 * code on their behalf), means the database is unreachable, too slow, shutting down,
 * out of resources or read-only: the same request may succeed later (HTTP 503).
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  return databaseUnavailableReason(err) !== null;
}

/**
 * The database could not take the work in time, and it was never sent to it: raised by
 * this code (the message writer's queue), classified like the driver's own outages.
 */
export class DatabaseUnavailableError extends Error {
  override name = "DatabaseUnavailableError";
}

const PERMISSION_DENIED = new Set(["42501"]);

/** SQLSTATE 42501: the database role lacks a privilege (least-privilege deployments). */
export function isPermissionDenied(err: unknown): boolean {
  for (const o of errorChain(err)) {
    for (const c of [o.code, o.originalCode]) if (typeof c === "string" && PERMISSION_DENIED.has(c)) return true;
  }
  return false;
}

/** A unique constraint refused the row (Prisma P2002, SQLSTATE 23505): it exists already. */
export function isUniqueViolation(err: unknown): boolean {
  for (const o of errorChain(err)) {
    for (const c of [o.code, o.originalCode]) if (c === "P2002" || c === "23505") return true;
  }
  return false;
}
