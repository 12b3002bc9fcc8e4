// A private Postgres cluster for fault injection: made with initdb in a temporary
// directory, on its own port and socket directory, so it can be stopped, frozen
// (SIGSTOP) or given a full disk without touching the shared cluster on 5432.
// Run as root (CI, this machine), initdb and pg_ctl run as the `postgres` user through
// runuser, because Postgres refuses to run as root; as anyone else they run as that user.
import { execFile } from "node:child_process";
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "./cli-process.ts";
import { trackOpen } from "./leak-guard.ts";

const run = promisify(execFile);

const PG_BIN = process.env.PG_BIN ?? "/usr/lib/postgresql/15/bin";

export interface PrivateCluster {
  readonly port: number;
  readonly dir: string;
  readonly dataDir: string;
  /** postgresql://postgres[:password]@127.0.0.1:<port>/<db> */
  url(db?: string): string;
  /** Run one statement on a fresh connection to `db` (default postgres). */
  query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[], db?: string): Promise<pg.QueryResult<T>>;
  running(): boolean;
  start(): Promise<void>;
  /** pg_ctl stop -m fast (what an operator's restart does: sessions are terminated). */
  stop(mode?: "fast" | "immediate"): Promise<void>;
  /** SIGSTOP the postmaster and every backend: a hung host, not a down one. */
  freeze(): void;
  thaw(): void;
  readonly frozen: boolean;
  /** A directory the cluster's owner may use (for a tablespace), owned by it. */
  ownedDir(name: string): string;
  /** `pg_ctl stop -m smart` without waiting: new connections are refused (57P03), sessions go on. */
  beginSmartShutdown(): Promise<void>;
  /**
   * Mounts a tmpfs of `sizeBytes` at `<dir>/<name>`, owned by the server (a tablespace
   * that fills up for real); `error` when this machine does not allow it (mount needs root).
   */
  mountTmpfs(name: string, sizeBytes: number): Promise<{ path: string } | { error: string }>;
  /** Stop (immediately) and delete everything. Safe to call twice and after a failure. */
  destroy(): Promise<void>;
}

const isRoot = () => process.getuid?.() === 0;

/** Runs a Postgres binary as the cluster owner. */
async function asOwner(bin: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const [cmd, argv] = isRoot() ? ["runuser", ["-u", "postgres", "--", join(PG_BIN, bin), ...args]] : [join(PG_BIN, bin), args];
  try {
    const { stdout } = await run(cmd, argv, { timeout: opts.timeoutMs ?? 60_000, cwd: "/" });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${bin} ${args.join(" ")} failed: ${e.stderr?.trim() || e.message}`);
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      // the process ended between readdir and read
    }
  }
  return out;
}

/**
 * `password`: the superuser `postgres` has it and every connection must give it
 * (scram-sha-256); by default the cluster trusts every local connection, like the shared one.
 */
export async function createPrivateCluster(opts: { port?: number; settings?: Record<string, string>; password?: string } = {}): Promise<PrivateCluster> {
  if (!existsSync(join(PG_BIN, "initdb"))) throw new Error(`no initdb in ${PG_BIN} (set PG_BIN to the Postgres binaries)`);
  const dir = mkdtempSync(join(tmpdir(), "sp-pg-"));
  const dataDir = join(dir, "data");
  const owner = isRoot() ? ownerIds() : null;
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const port = opts.port ?? (await freePort());
  let frozen = false;
  let destroyed = false;
  const mounts: string[] = [];

  let auth = ["-A", "trust"];
  if (opts.password !== undefined) {
    const pwfile = join(dir, "password");
    writeFileSync(pwfile, `${opts.password}\n`, { mode: 0o600 });
    if (owner) chownSync(pwfile, owner.uid, owner.gid);
    auth = ["-A", "scram-sha-256", `--pwfile=${pwfile}`];
  }
  await asOwner("initdb", ["-D", dataDir, "-U", "postgres", ...auth, "--no-sync", "--no-instructions", "-E", "UTF8"]);
  const settings = {
    listen_addresses: "'127.0.0.1'",
    port: String(port),
    unix_socket_directories: `'${dir}'`,
    // Durability is not under test here (nothing crashes the host); speed is what keeps the suite short.
    fsync: "off",
    full_page_writes: "off",
    max_connections: "200",
    ...opts.settings,
  };
  const conf = Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join("\n");
  appendFileSync(join(dataDir, "postgresql.conf"), `\n${conf}\n`);

  const postmasterPid = (): number | null => {
    try {
      return Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]) || null;
    } catch {
      return null;
    }
  };
  const signalAll = (sig: NodeJS.Signals) => {
    const pm = postmasterPid();
    if (!pm) return;
    // The postmaster first when freezing, so it cannot notice or restart its children.
    const pids = sig === "SIGSTOP" ? [pm, ...childrenOf(pm)] : [...childrenOf(pm), pm];
    for (const p of pids) {
      try {
        process.kill(p, sig);
      } catch {
        // gone meanwhile
      }
    }
  };

  const cluster: PrivateCluster = {
    port,
    dir,
    dataDir,
    url: (db = "postgres") =>
      `postgresql://postgres${opts.password === undefined ? "" : `:${encodeURIComponent(opts.password)}`}@127.0.0.1:${port}/${db}`,
    async query(sql, params, db) {
      const c = new pg.Client({ connectionString: cluster.url(db), connectionTimeoutMillis: 5000 });
      await c.connect();
      try {
        return await c.query(sql, params);
      } finally {
        await c.end();
      }
    },
    running: () => postmasterPid() !== null,
    async start() {
      await asOwner("pg_ctl", ["-D", dataDir, "-l", join(dir, "postgres.log"), "-w", "-t", "60", "start"]);
    },
    async stop(mode = "fast") {
      if (frozen) cluster.thaw();
      await asOwner("pg_ctl", ["-D", dataDir, "-m", mode, "-w", "-t", "60", "stop"]);
    },
    freeze() {
      signalAll("SIGSTOP");
      frozen = true;
    },
    thaw() {
      signalAll("SIGCONT");
      frozen = false;
    },
    get frozen() {
      return frozen;
    },
    ownedDir(name) {
      const p = join(dir, name);
      mkdirSync(p, { recursive: true });
      if (owner) chownSync(p, owner.uid, owner.gid);
      return p;
    },
    async beginSmartShutdown() {
      await asOwner("pg_ctl", ["-D", dataDir, "-m", "smart", "-W", "stop"]);
    },
    async mountTmpfs(name, sizeBytes) {
      const path = join(dir, name);
      mkdirSync(path);
      try {
        await run("mount", ["-t", "tmpfs", "-o", `size=${sizeBytes}`, "tmpfs", path]);
      } catch (err) {
        return { error: String((err as { stderr?: string }).stderr || err).trim().split("\n")[0]! };
      }
      mounts.push(path);
      if (owner) chownSync(path, owner.uid, owner.gid);
      chmodSync(path, 0o700);
      return { path };
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      destroyedNow();
      if (frozen) cluster.thaw();
      if (cluster.running()) await cluster.stop("immediate").catch(() => undefined);
      for (const m of mounts) await run("umount", [m]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const destroyedNow = trackOpen(`private Postgres cluster on port ${port} in ${dir}`, "createPrivateCluster", "destroy()");
  try {
    await cluster.start();
  } catch (err) {
    destroyedNow();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return cluster;
}

function ownerIds(): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("running as root needs a `postgres` user to own the private cluster");
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}
