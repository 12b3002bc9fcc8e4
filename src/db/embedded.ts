// Embedded Postgres for `npm start` on a machine with nothing installed: PGlite
// (Postgres compiled to WASM) with its data under DATA_DIR, exposed on a loopback
// port by PGliteSessionServer (pglite-server.ts) so that the same pg.Pool + adapter-pg
// path serves it.
//
// PGlite is a single session: the server gives it to one client connection at a time,
// from a query's first message to the ReadyForQuery that ends it, and for the whole of
// a transaction block. Code must therefore never wait on another connection's query
// while it holds a transaction open (that query cannot run until the transaction ends).
//
// Only one process may open a PGlite data directory. The process that opens it writes
// DATA_DIR/pglite.lock with its pid and port; another sealpost process (say `keys
// create` while `npm start` runs) finds the lock and connects to that port instead of
// opening the files a second time.
import { mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PGliteSessionServer } from "./pglite-server.ts";

export interface EmbeddedDatabase {
  url: string;
  dataDir: string;
  /** False when this process is a client of another process's embedded database. */
  owner: boolean;
  stop(): Promise<void>;
}

const urlFor = (port: number) => `postgresql://postgres@127.0.0.1:${port}/postgres?sslmode=disable`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readLock(file: string): { pid: number; port: number | null } | null {
  try {
    const v = JSON.parse(readFileSync(file, "utf8")) as { pid?: unknown; port?: unknown };
    return typeof v.pid === "number" ? { pid: v.pid, port: typeof v.port === "number" ? v.port : null } : null;
  } catch {
    return null;
  }
}

export async function startEmbeddedDatabase(
  dataDir: string,
  opts: { maxConnections?: number; onError?: (err: Error) => void } = {},
): Promise<EmbeddedDatabase> {
  const root = resolve(dataDir);
  const dir = join(root, "pglite");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const lockFile = join(root, "pglite.lock");
  const deadline = Date.now() + 30_000;
  for (;;) {
    let fd: number;
    try {
      fd = openSync(lockFile, "wx", 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const lock = readLock(lockFile);
      if (lock && alive(lock.pid) && lock.pid !== process.pid) {
        if (lock.port !== null) return { url: urlFor(lock.port), dataDir: dir, owner: false, async stop() {} };
      } else if (!lock || !alive(lock.pid)) {
        rmSync(lockFile, { force: true }); // left by a process that died
        continue;
      }
      if (Date.now() > deadline) throw new Error(`the embedded database in ${dir} is locked by process ${lock?.pid} which has not opened it`);
      await new Promise((r) => setTimeout(r, 100)); // the owner is still starting
      continue;
    }
    writeSync(fd, JSON.stringify({ pid: process.pid, port: null }));
    closeSync(fd);
    try {
      const db = await PGlite.create({ dataDir: dir });
      const server = new PGliteSessionServer(db, { maxConnections: opts.maxConnections ?? 64, onError: opts.onError });
      const port = await server.listen("127.0.0.1", 0);
      writeFileSync(lockFile, JSON.stringify({ pid: process.pid, port }), { mode: 0o600 });
      return {
        url: urlFor(port),
        dataDir: dir,
        owner: true,
        async stop() {
          await server.stop();
          await db.close();
          rmSync(lockFile, { force: true });
        },
      };
    } catch (err) {
      rmSync(lockFile, { force: true });
      throw err;
    }
  }
}
