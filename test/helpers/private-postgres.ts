// A Postgres cluster of the test's own (initdb on a free port), for what the shared
// server on 5432 cannot show: it trusts every local connection, so a wrong password is
// accepted there. This one asks for scram-sha-256 passwords.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./cli-process.ts";

export interface PrivatePostgres {
  port: number;
  /** A URL for `user` with `password` on the `postgres` database. */
  url(user: string, password: string): string;
  stop(): void;
}

function pgBin(name: string): string {
  const bindir = execFileSync("pg_config", ["--bindir"], { encoding: "utf8" }).trim();
  return join(bindir, name);
}

/** Starts a cluster whose superuser `postgres` has `password`. Root runs the server as the postgres user. */
export async function startPrivatePostgres(password: string): Promise<PrivatePostgres> {
  const dir = mkdtempSync(join(tmpdir(), "sealpost-pg-"));
  const data = join(dir, "data");
  const asRoot = process.getuid?.() === 0;
  const run = (file: string, args: string[]) => {
    const [cmd, argv] = asRoot ? ["runuser", ["-u", "postgres", "--", file, ...args]] : [file, args];
    execFileSync(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
  };
  const pwfile = join(dir, "pw");
  writeFileSync(pwfile, password + "\n");
  chmodSync(dir, 0o700);
  if (asRoot) execFileSync("chown", ["-R", "postgres:", dir]);
  run(pgBin("initdb"), ["-D", data, "-U", "postgres", "--auth=scram-sha-256", `--pwfile=${pwfile}`, "--no-sync", "-E", "UTF8"]);
  const port = await freePort();
  run(pgBin("pg_ctl"), ["-D", data, "-w", "-t", "60", "-l", join(dir, "log"), "-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, "start"]);
  return {
    port,
    url: (user, pw) => `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(pw)}@127.0.0.1:${port}/postgres`,
    stop() {
      try {
        run(pgBin("pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
