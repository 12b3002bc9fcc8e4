// One pg.Pool per process, shared by Prisma (through @prisma/adapter-pg) and by the
// few hot-path statements that use $queryRaw. Timeouts are set so that a database
// outage turns into a fast 503 instead of a hung request.
import pg from "pg";
import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient, type Prisma } from "../generated/prisma/client.ts";

export type Db = InstanceType<typeof PrismaClient>;
/** The client inside `db.$transaction(async (tx) => ...)`: repositories take `Db | Tx`. */
export type Tx = Prisma.TransactionClient;

/**
 * How long past the statement timeout node-postgres waits for an answer before giving
 * up on its own (query_timeout): the server cancels a slow statement itself at the
 * statement timeout, so this only fires when the server cannot answer at all (a frozen
 * host, a partition). Short, because a request waits it out in full; long enough for the
 * server's own cancellation to arrive over any sane network first.
 */
export const QUERY_TIMEOUT_SLACK_MS = 500;

export interface DatabaseOptions {
  url: string;
  poolMax: number;
  statementTimeoutMs: number;
  connectTimeoutMs: number;
  /** The embedded database: one session that every connection takes turns on. */
  singleSession?: boolean;
  onPoolError?: (err: Error) => void;
}

/** The process's pg.Pool and the Prisma client over it (`Db` is the Prisma client alone). */
export interface DatabaseHandle {
  prisma: Db;
  pool: pg.Pool;
  /** The statement timeout in force (the embedded database raises the configured one). */
  statementTimeoutMs: number;
  singleSession: boolean;
  close(): Promise<void>;
}

export function openDatabase(opts: DatabaseOptions): DatabaseHandle {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolMax,
    // Bounds both opening a connection and waiting for a free one when all are busy
    // ("timeout exceeded when trying to connect"): a request never queues for the pool
    // longer than this.
    connectionTimeoutMillis: opts.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    // statement_timeout bounds every query; lock_timeout keeps a blocked row lock
    // from holding a request longer than the client would wait anyway.
    options: `-c statement_timeout=${opts.statementTimeoutMs} -c lock_timeout=${opts.statementTimeoutMs}`,
    query_timeout: opts.statementTimeoutMs + QUERY_TIMEOUT_SLACK_MS,
    keepAlive: true,
  });
  // An idle client losing its connection (database restart) emits 'error' on the
  // pool; without a listener that would crash the process.
  pool.on("error", (err) => opts.onPoolError?.(err));
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  let closed = false;
  return {
    prisma,
    pool,
    statementTimeoutMs: opts.statementTimeoutMs,
    singleSession: opts.singleSession ?? false,
    async close() {
      if (closed) return;
      closed = true;
      await prisma.$disconnect().catch(() => {});
      await pool.end().catch(() => {});
    },
  };
}
