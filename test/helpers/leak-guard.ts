// Fails a test file that leaves something open when its tests end: an app, a worker, an
// SMTP peer, a server, a socket, a child process or a timer (graphile-worker's guard
// against unreleased workers, applied to every resource). scripts/run-tests.mjs preloads
// this module into every test file's process (`--import`); it then
//   - records every handle and timer created (async_hooks), with the stack that created it;
//   - keeps a register of what the helpers opened (trackOpen, called by startTestApp,
//     startPeer, startTestWorker ...), with the line of the test that asked for it;
//   - after the file's own `after` hooks, waits briefly for closes in progress, and fails
//     the file naming each thing still open, the helper that made it and the test line.
// It is inert outside the test runner (scripts that use the helpers load it as a register).
import { AsyncResource, createHook } from "node:async_hooks";
import { basename, relative } from "node:path";
import { after, beforeEach } from "node:test";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait.ts";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const SELF = fileURLToPath(import.meta.url);
/** How long closes already under way (a socket's close event, a server's last connection) may take. */
const GRACE_MS = Number(process.env.LEAK_GUARD_GRACE_MS ?? 2000);

// ---- the register of what the helpers opened ------------------------------------------

interface Opened {
  what: string;
  by: string;
  at: string;
  closeWith: string;
}
const opened = new Map<number, Opened>();
let nextOpened = 0;

/**
 * Records that helper `by` opened `what` (e.g. "SMTP peer on 127.0.0.1:2525"); call the
 * returned function once it is closed. `closeWith` says how a test closes it.
 */
export function trackOpen(what: string, by: string, closeWith = "close()"): () => void {
  const id = nextOpened++;
  opened.set(id, { what, by, at: callers(captureStack()).find((f) => !f.includes("test/helpers/")) ?? "an unknown place", closeWith });
  return () => void opened.delete(id);
}

// ---- handles and timers -----------------------------------------------------------------

// Handle types that keep a process alive or hold a port, a file or a child (see
// async_hooks "Type"); requests (connect, write, DNS queries) end by themselves.
const TRACKED = new Set([
  "TCPWRAP", "TCPSERVERWRAP", "PIPEWRAP", "PIPESERVERWRAP", "UDPWRAP", "PROCESSWRAP", "TTYWRAP",
  "SIGNALWRAP", "FSEVENTWRAP", "STATWATCHER", "WORKER", "Timeout",
]);

/**
 * Where something was made: the stack that made it and, when that stack has no frame of
 * ours, what it was made in the callback of. A server listening on a host is made in a
 * DNS lookup's or a tick's callback, the http server's connection check in a tick the
 * server scheduled, a socket's timer in the socket's callback.
 */
interface Origin {
  stack: Error;
  parent: Origin | undefined;
  depth: number;
}
interface Live extends Origin {
  type: string;
  // The handle wrap (or Timeout) itself: read for its address, pid or delay when reported.
  resource: any;
  trigger: number;
}
const live = new Map<number, Live>();
/** Servers ever seen, to name the server a leftover accepted connection came from. */
const servers = new Map<number, Live>();
/** Lookups and ticks not run yet. */
const scheduled = new Map<number, Origin>();

function originIn(trigger: number, stack: Error): Origin {
  const parent = scheduled.get(trigger) ?? live.get(trigger) ?? servers.get(trigger);
  // A short chain reaches the caller; a long one would only hold memory.
  return parent && parent.depth < 6 ? { stack, parent, depth: parent.depth + 1 } : { stack, parent: undefined, depth: 0 };
}
/** Sockets and child processes opened by a file in test/unit/, which must not open any (test/README.md). */
const unitViolations: Live[] = [];
const NEEDS_INTEGRATION: Record<string, string> = {
  TCPWRAP: "a TCP socket",
  TCPSERVERWRAP: "a TCP server",
  UDPWRAP: "a UDP socket",
  PIPESERVERWRAP: "a Unix socket server",
  PROCESSWRAP: "a child process",
};

function captureStack(): Error {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 60;
  const err = new Error("created here");
  Error.stackTraceLimit = limit;
  return err;
}

/** The frames of `err` in this repository (not node_modules, not Node, not this file), repo-relative. */
function callers(err: Error): string[] {
  const out: string[] = [];
  for (const line of (err.stack ?? "").split("\n").slice(1)) {
    const m = /^\s*at (?:async )?(?:(.*?) \()?(?:file:\/\/)?([^()\s]+?):(\d+):\d+\)?$/.exec(line);
    if (!m) continue;
    const [, fn, file, lineNo] = m;
    if (!file!.startsWith(REPO) || file!.includes("/node_modules/") || file === SELF) continue;
    const where = `${relative(REPO, file!)}:${lineNo}`;
    const name = fn && !/^(Object|Module)\.<anonymous>$|^<anonymous>$/.test(fn) ? fn.replace(/^(?:async )?(?:Object\.)?/, "") : "";
    out.push(name ? `${name} (${where})` : where);
  }
  return out;
}

function ownerOf(resource: object): any {
  const sym = Object.getOwnPropertySymbols(resource).find((s) => s.description === "owner_symbol");
  return sym ? (resource as Record<symbol, unknown>)[sym] : undefined;
}

function address(resource: { getsockname?: (o: object) => number; getpeername?: (o: object) => number }, peer = false): string {
  const out: { address?: string; port?: number } = {};
  const fn = peer ? resource.getpeername : resource.getsockname;
  if (typeof fn !== "function" || fn.call(resource, out) !== 0 || !out.address) return "?";
  return `${out.address}:${out.port}`;
}

function describe(l: Live): string {
  const r = l.resource;
  switch (l.type) {
    case "TCPSERVERWRAP":
      return `TCP server listening on ${address(r)}`;
    case "TCPWRAP":
      return `TCP socket ${address(r)} -> ${address(r, true)}`;
    case "UDPWRAP":
      return `UDP socket on ${address(r)}`;
    case "PIPESERVERWRAP":
      return "Unix socket server";
    case "PIPEWRAP":
      return "pipe (a child process's stdio, or a Unix socket)";
    case "PROCESSWRAP": {
      const child = ownerOf(r) as { spawnargs?: string[] } | undefined;
      const [bin = "?", ...args] = child?.spawnargs ?? [];
      return `child process ${r.pid ?? "?"} (${[basename(bin), ...args.map((a) => (a.startsWith(REPO) ? relative(REPO, a) : a))].join(" ").slice(0, 120)})`;
    }
    case "Timeout": {
      const fn = (r._onTimeout as { name?: string } | undefined)?.name;
      return `${r._repeat ? "interval" : "timer"} of ${r._idleTimeout} ms${fn ? ` (${fn})` : ""}${r.hasRef() ? "" : ", unref'd"}`;
    }
    case "FSEVENTWRAP":
      return "file watcher (fs.watch)";
    case "STATWATCHER":
      return "file watcher (fs.watchFile)";
    case "SIGNALWRAP":
      return "signal listener";
    case "WORKER":
      return "worker thread";
    default:
      return l.type;
  }
}

/** Our frames on the stack that made `o`, or on the stack of what it was made in the callback of. */
function ourFrames(o: Origin | undefined): string[] {
  for (; o; o = o.parent) {
    const ours = callers(o.stack);
    if (ours.length > 0) return ours;
  }
  return [];
}

function origin(l: Live): string {
  const server = servers.get(l.trigger);
  if (server && (l.type === "TCPWRAP" || l.type === "PIPEWRAP") && callers(l.stack).length === 0) {
    return `accepted by the ${describe(server)} ${origin(server)}`;
  }
  const ours = ourFrames(l);
  if (ours.length > 0) return `created by ${ours.slice(0, 4).join(" <- ")}`;
  return "created inside Node or a dependency (no frame of this repository on its stack)";
}

function isOpen(l: Live): boolean {
  const r = l.resource;
  if (l.type === "Timeout") {
    if (r._destroyed === true || r._idleTimeout === -1) return false;
    // Housekeeping of Node or a dependency that keeps nothing alive (the HTTP date cache's
    // one-second timer, say): not something a test could close. Ours count, unref'd or not.
    return r.hasRef() || ourFrames(l).length > 0;
  }
  // The process's own stdio.
  if ((l.type === "PIPEWRAP" || l.type === "TTYWRAP") && typeof r.fd === "number" && r.fd >= 0 && r.fd <= 2) return false;
  return true;
}

/** One line per thing still open, helpers' register first. */
function openResources(): string[] {
  const lines = [...opened.values()].map((o) => `${o.what}, opened by ${o.by} at ${o.at}, was never closed (${o.closeWith})`);
  for (const l of live.values()) if (isOpen(l)) lines.push(`${describe(l)}, ${origin(l)}`);
  return lines;
}

function install(): void {
  const file = relative(REPO, process.argv[1] ?? "") || "this test file";
  const isUnit = /(^|\/)unit\//.test(file); // test/unit/ (and the guard's own fixture of it)
  createHook({
    init(asyncId, type, triggerAsyncId, resource) {
      if (type === "GETADDRINFOREQWRAP" || type === "TickObject") scheduled.set(asyncId, originIn(triggerAsyncId, captureStack()));
      if (!TRACKED.has(type)) return;
      const l: Live = { type, resource, trigger: triggerAsyncId, ...originIn(triggerAsyncId, captureStack()) };
      live.set(asyncId, l);
      if (type === "TCPSERVERWRAP" || type === "PIPESERVERWRAP") servers.set(asyncId, l);
      if (isUnit && type in NEEDS_INTEGRATION) unitViolations.push(l);
    },
    destroy(asyncId) {
      live.delete(asyncId);
      scheduled.delete(asyncId);
    },
  }).enable();

  const check = async () => {
    if (unitViolations.length > 0) {
      const what = unitViolations.map((l) => `  - ${NEEDS_INTEGRATION[l.type]}, ${origin(l)}`);
      throw new Error(`leak guard: ${file} opens sockets or child processes; such tests belong in test/integration/ (test/README.md):\n${[...new Set(what)].join("\n")}`);
    }
    // Its own poll timers have fired (and count as closed) by the time it looks again.
    await waitFor(() => openResources().length === 0, { timeoutMs: GRACE_MS, intervalMs: 20 }).catch(() => undefined);
    const found = openResources();
    if (found.length > 0) {
      throw new Error(`leak guard: ${file} left ${found.length} thing(s) open when its tests ended:\n${found.map((f) => `  - ${f}`).join("\n")}`);
    }
  };

  // The check must run after the file's own top-level `after` hooks, which run in the
  // order they were registered: so it registers when the first test starts (the file has
  // been evaluated by then), bound to this module's context so it lands on the root.
  const registerAtRoot = AsyncResource.bind((fn: () => Promise<void>) => after(fn));
  let registered = false;
  beforeEach(() => {
    if (registered) return;
    registered = true;
    registerAtRoot(check);
  });
}

if (process.env.NODE_TEST_CONTEXT && process.env.LEAK_GUARD !== "off") install();
