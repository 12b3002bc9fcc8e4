// Embedded Postgres for `npm start` on a machine with nothing installed: PGlite
// (Postgres compiled to WASM) with its data under DATA_DIR, exposed on a loopback
// port by pglite-socket so that the same pg.Pool + adapter-pg path serves it.
//
// PGlite is a single session: pglite-socket queues statements from all connections
// and, while one connection is inside a transaction, runs only that connection's
// statements. Code must therefore never wait on another connection's query while it
// holds a transaction open (it would wait forever).
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

export interface EmbeddedDatabase {
  url: string;
  dataDir: string;
  stop(): Promise<void>;
}

export async function startEmbeddedDatabase(dataDir: string, maxConnections = 16): Promise<EmbeddedDatabase> {
  const dir = resolve(join(dataDir, "pglite"));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const db = await PGlite.create({ dataDir: dir });
  const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections });
  await server.start();
  const conn = server.getServerConn(); // "127.0.0.1:PORT"
  return {
    url: `postgresql://postgres@${conn}/postgres?sslmode=disable`,
    dataDir: dir,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}
