// Real sealpost processes (`node src/cli.ts serve|worker`) for the fault suite, so they
// can be stopped with SIGTERM or killed with SIGKILL for real. Their output goes to a log
// file; lines are also kept in memory to wait on (e.g. "API listening").
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { trackOpen } from "./leak-guard.ts";
import { waitFor } from "./wait.ts";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const CLI = join(REPO, "src", "cli.ts");

export interface SealpostProcess {
  readonly name: string;
  readonly command: "serve" | "worker" | "start";
  readonly child: ChildProcess;
  readonly logFile: string;
  /** Output lines so far (stdout and stderr). */
  readonly lines: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  /** Resolves with the first line matching `pattern`; rejects if the process exits first or after timeoutMs. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGTERM and wait for the exit (SIGKILL after timeoutMs). */
  terminate(timeoutMs?: number): Promise<void>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
  /** The last lines of output, for error messages. */
  tail(n?: number): string;
}

export function spawnSealpost(command: "serve" | "worker" | "start", env: Record<string, string>, opts: { name: string; logDir: string }): SealpostProcess {
  const logFile = join(opts.logDir, `${opts.name}.log`);
  const log = createWriteStream(logFile, { flags: "a" });
  // The V8 heap flags the image and bin/sealpost.js run with, so RSS is measured as deployed.
  const child = spawn(process.execPath, ["--max-semi-space-size=8", "--heap-growing-percent=50", CLI, command], {
    cwd: REPO,
    // Only what is given: the suite's own environment (DATABASE_URL of the shared
    // cluster, say) must not leak into a process under test.
    env: { PATH: process.env.PATH ?? "", ...(process.env.BENCH_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_NODE_OPTIONS } : {}), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const onData = (buf: Buffer) => {
    log.write(buf);
    for (const l of buf.toString("utf8").split("\n")) if (l) lines.push(l.length > 2000 ? l.slice(0, 2000) : l);
    if (lines.length > 5000) lines.splice(0, lines.length - 5000);
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const gone = trackOpen(`sealpost ${command} process ${opts.name} (pid ${child.pid})`, "spawnSealpost", "terminate() or kill()");
  const exited = once(child, "exit").then(([code, signal]) => {
    log.end();
    gone();
    return { code: code as number | null, signal: signal as NodeJS.Signals | null };
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const p: SealpostProcess = {
    name: opts.name,
    command,
    child,
    logFile,
    lines,
    exited,
    running,
    waitForLine(pattern, timeoutMs = 30_000) {
      return waitFor(() => lines.find((l) => pattern.test(l)), {
        timeoutMs,
        intervalMs: 50,
        what: () => `${opts.name} to print ${pattern} (${timeoutMs} ms):\n${p.tail(5)}`,
        // An exit fails at once, not after the deadline.
        failFast: () => {
          if (!running()) throw new Error(`${opts.name} exited before printing ${pattern}:\n${p.tail(5)}`);
        },
      });
    },
    async terminate(timeoutMs = 40_000) {
      if (!running()) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (!running()) return;
      child.kill("SIGKILL");
      await exited;
    },
    tail(n = 10) {
      return lines.slice(-n).join("\n");
    },
  };
  return p;
}
