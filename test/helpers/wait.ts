// Poll a condition until it holds or a deadline passes: tests wait on state, never on sleep().
export async function waitFor<T>(
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  opts: {
    timeoutMs?: number;
    intervalMs?: number;
    /** What is waited for, in the timeout's message; a function is called then, to show the last state. */
    what?: string | (() => string);
    /** Runs after every unmet check; what it throws ends the wait at once (e.g. "the process is still running"). */
    failFast?: () => void;
  } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as T;
    } catch (err) {
      last = err;
    }
    opts.failFast?.();
    if (Date.now() > deadline) {
      const what = typeof opts.what === "function" ? opts.what() : (opts.what ?? "condition");
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 25));
  }
}
