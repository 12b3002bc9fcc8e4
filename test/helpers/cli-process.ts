// The sealpost CLI as a real child process, launched as users launch it (`node src/cli.ts`,
// `node bin/sealpost.js`, `npm start`), with its output collected line by line so a test
// can wait for a line (readiness, "stopped") with a deadline instead of sleeping.
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, resolve } from "node:path";
import net from "node:net";
import { trackOpen } from "./leak-guard.ts";

export const ROOT = resolve(import.meta.dirname, "../..");

export interface CliProcess {
  child: ChildProcess;
  /** Every line of stdout and stderr so far, in arrival order. */
  lines: string[];
  output(): string;
  /** The first line (already seen or still to come) matching `re`; fails on the deadline or on exit. */
  waitForLine(re: RegExp, what: string, timeoutMs?: number): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running (for t.after). */
  kill(): Promise<void>;
}

/**
 * An environment for a child: the test's own minus everything that would change what
 * sealpost does, plus `env`. This Node goes first on PATH so `npm start` runs it too.
 */
export function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(base)) if (/^(DATABASE_|SEALPOST_|TLS_|SMTP_|WORKER_|DNS_|NODE_TEST_CONTEXT$|PORT$|HOST$|DATA_DIR$|CERTS_DIR$|MIGRATE_ON_START$|SHUTDOWN_GRACE$|LOG_LEVEL$)/.test(k)) delete base[k];
  return {
    ...base,
    PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`,
    NODE_ENV: "test",
    LOG_LEVEL: "info",
    // npm must not look for its own updates (network, and a notice in the output).
    npm_config_update_notifier: "false",
    npm_config_fund: "false",
    ...env,
  };
}

export function spawnCli(command: string, args: string[], env: Record<string, string>, opts: { detached?: boolean } = {}): CliProcess {
  const child = spawn(command, args, { cwd: ROOT, env: childEnv(env), stdio: ["ignore", "pipe", "pipe"], detached: opts.detached ?? false });
  const gone = trackOpen(`process ${[command, ...args].join(" ")} (pid ${child.pid})`, "spawnCli", "kill(), or wait for `exited`");
  if (child.pid === undefined) gone(); // it never started ('error' follows)
  else child.once("exit", gone);
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  const partial = { stdout: "", stderr: "" };
  const take = (stream: "stdout" | "stderr") => (chunk: string) => {
    const parts = (partial[stream] + chunk).split("\n");
    partial[stream] = parts.pop()!;
    lines.push(...parts);
    for (const w of waiters) w();
  };
  child.stdout!.setEncoding("utf8").on("data", take("stdout"));
  child.stderr!.setEncoding("utf8").on("data", take("stderr"));
  let done = false;
  const closed = new Promise<void>((res) => child.once("close", () => res()));
  // Exit, then the rest of the output: 'close' comes once the pipes are drained, unless
  // a process left behind (an orphan) still holds them, which must not hide the exit.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.once("exit", async (code, signal) => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, 2000)))]);
      clearTimeout(timer);
      for (const s of ["stdout", "stderr"] as const) if (partial[s]) lines.push(partial[s]);
      done = true;
      for (const w of waiters) w();
      res({ code, signal });
    }),
  );
  const output = () => lines.join("\n");
  return {
    child,
    lines,
    output,
    exited,
    waitForLine(re, what, timeoutMs = 60_000) {
      return new Promise((res, rej) => {
        const check = () => {
          const hit = lines.find((l) => re.test(l));
          if (hit !== undefined) finish(() => res(hit));
          else if (done) finish(() => rej(new Error(`the process ended before ${what}:\n${output()}`)));
        };
        const timer = setTimeout(() => finish(() => rej(new Error(`timed out waiting for ${what}:\n${output()}`))), timeoutMs);
        const finish = (f: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    async kill() {
      // A detached launcher is the leader of its own process group: kill the whole group,
      // even after the launcher exited, so that a node it left behind (the bug these tests
      // catch) cannot outlive the test and keep its pipes, and this process, open.
      try {
        if (opts.detached) process.kill(-child.pid!, "SIGKILL");
        else if (!done) child.kill("SIGKILL");
      } catch {
        // already gone
      }
      if (child.exitCode === null && child.signalCode === null) await exited;
      child.stdout?.destroy();
      child.stderr?.destroy();
    },
  };
}

/** The exit of `p`, failing if it takes longer than `ms`; returns how long it took. */
export async function exitWithin(p: CliProcess, ms: number, what: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; tookMs: number }> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    p.exited,
    new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} did not exit within ${ms} ms:\n${p.output()}`)), ms))),
  ]).finally(() => clearTimeout(timer));
  return { ...r, tookMs: Date.now() - started };
}

/** Whether a process with this pid exists (a zombie counts). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => res(port));
    });
  });
}

/** True when this process can listen on 127.0.0.1:port, i.e. nothing else does. */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.createServer();
    s.once("error", () => res(false));
    s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
  });
}

/** The lines that are stack frames ("    at fn (file:line)"). */
export const stackFrames = (text: string) => text.split("\n").filter((l) => /^\s+at /.test(l));
