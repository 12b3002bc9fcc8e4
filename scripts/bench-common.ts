// Measurement helpers shared by the benchmark scripts.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";

/** CPU ms used so far by every Postgres process (Linux /proc, USER_HZ 100; 0 elsewhere). */
export function postgresCpuMs(): number {
  let ticks = 0;
  for (const pid of existsSync("/proc") ? readdirSync("/proc").filter((d) => /^\d+$/.test(d)) : []) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      if (!stat.includes("(postgres)")) continue;
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15 of proc(5))
    } catch {
      // the process ended between readdir and read
    }
  }
  return ticks * 10;
}

/** Idle CPU share of the whole machine over `ms`: other work on the box skews every figure. */
export async function idleShare(ms = 1000): Promise<number> {
  const sum = () => cpus().reduce((a, c) => ({ idle: a.idle + c.times.idle, all: a.all + Object.values(c.times).reduce((x, y) => x + y, 0) }), { idle: 0, all: 0 });
  const a = sum();
  await new Promise((r) => setTimeout(r, ms));
  const b = sum();
  return (b.idle - a.idle) / (b.all - a.all);
}
