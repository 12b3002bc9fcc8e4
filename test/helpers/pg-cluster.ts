// A private Postgres cluster (initdb + pg_ctl on a free loopback port) for tests that do
// to a database what must never be done to the shared one: freeze every process of it
// (SIGSTOP), shut it down, or fill its disk (a tmpfs tablespace). Run as root, the server
// programs run as the `postgres` user (initdb refuses root). Everything lives under a
// temporary directory that `destroy()` unmounts and removes.
import { execFile } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

/** Runs a server program as `postgres` when we are root, else as ourselves. */
function asServerUser(cmd: string, args: string[]) {
  return isRoot ? run("runuser", ["-u", "postgres", "--", cmd, ...args]) : run(cmd, args);
}

async function serverUserIds(): Promise<{ uid: number; gid: number }> {
  const [uid, gid] = await Promise.all([run("id", ["-u", "postgres"]), run("id", ["-g", "postgres"])]);
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen({ host: "127.0.0.1", port: 0 }, resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

export interface PgCluster {
  readonly port: number;
  /** The temporary directory (data directory, socket, log). */
  readonly dir: string;
  url(database?: string): string;
  /** Stops (SIGSTOP) or resumes (SIGCONT) the postmaster and every process it started. */
  freeze(): void;
  thaw(): void;
  /** `pg_ctl stop -m smart` without waiting: new connections are refused (57P03), sessions go on. */
  beginSmartShutdown(): Promise<void>;
  /**
   * Mounts a tmpfs of `sizeBytes` at `<dir>/<name>`, owned by the server (a tablespace
   * that fills up for real); `error` when this machine does not allow it (mount needs root).
   */
  mountTmpfs(name: string, sizeBytes: number): Promise<{ path: string } | { error: string }>;
  /** Stops the server at once (thawing it first), unmounts and removes its files. */
  destroy(): Promise<void>;
}

export async function startPgCluster(): Promise<PgCluster> {
  const dir = mkdtempSync(join(tmpdir(), "sp-pg-"));
  chmodSync(dir, 0o755);
  const ids = isRoot ? await serverUserIds() : null;
  if (ids) chownSync(dir, ids.uid, ids.gid);
  const data = join(dir, "data");
  await asServerUser("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
  const port = await freePort();
  const opts = `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir} -c fsync=off -c max_connections=40 -c shared_buffers=16MB`;
  await asServerUser("pg_ctl", ["-D", data, "-l", join(dir, "log"), "-w", "-t", "30", "-o", opts, "start"]);
  const postmaster = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);

  /** The postmaster and its children (backends, checkpointer, WAL writer...). */
  const processes = (): number[] => {
    const children = readdirSync("/proc").filter((p) => /^\d+$/.test(p)).flatMap((p) => {
      try {
        // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
        const stat = readFileSync(`/proc/${p}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === postmaster ? [Number(p)] : [];
      } catch {
        return []; // the process ended while we looked
      }
    });
    return [postmaster, ...children];
  };
  const signal = (sig: NodeJS.Signals) => {
    for (const pid of processes()) {
      try {
        process.kill(pid, sig);
      } catch {
        // gone already
      }
    }
  };

  let frozen = false;
  const mounts: string[] = [];
  const freeze = () => {
    frozen = true;
    signal("SIGSTOP");
  };
  const thaw = () => {
    signal("SIGCONT");
    frozen = false;
  };
  return {
    port,
    dir,
    url: (database = "postgres") => `postgresql://postgres@127.0.0.1:${port}/${database}`,
    freeze,
    thaw,
    async beginSmartShutdown() {
      await asServerUser("pg_ctl", ["-D", data, "-m", "smart", "-W", "stop"]);
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
      if (ids) chownSync(path, ids.uid, ids.gid);
      chmodSync(path, 0o700);
      return { path };
    },
    async destroy() {
      if (frozen) thaw();
      await asServerUser("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]).catch(() => {});
      for (const m of mounts) await run("umount", [m]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
