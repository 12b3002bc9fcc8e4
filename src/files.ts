// Writing files other processes read while we write them: the development CA and key,
// the development data key, the worker's heartbeat. A reader sees the old file or the
// new one, never half of one.
import { randomBytes } from "node:crypto";
import { linkSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

const tmpName = (file: string) => `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;

/** Replace `file` by writing a temporary file beside it and renaming it into place. */
export function writeAtomic(file: string, data: string, mode: number): void {
  const tmp = tmpName(file);
  writeFileSync(tmp, data, { mode, flag: "wx" });
  renameSync(tmp, file);
}

/**
 * Creates `file` with `content` unless it exists, atomically: the content is written
 * to a temporary file and hard-linked into place, which fails if the name is taken.
 * A rename would silently replace a key another process (API and worker starting
 * together) had just created and begun encrypting with. Returns whether we created it.
 */
export function createOnce(file: string, content: string): boolean {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = tmpName(file);
  writeFileSync(tmp, content, { mode: 0o600, flag: "wx" });
  try {
    linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
}
