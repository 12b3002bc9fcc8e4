// Which data keys the stored content needs, checked when a process starts, so that a
// process given the wrong keys refuses to start with one line instead of failing every
// read and delivery later.
//
// The data_keys table has one row per key id sealpost has seen. `check_value` is a fixed
// text encrypted under that key (ContentCipher.checkValue): it decrypts only under the
// same key, so a different key given under a known id is caught, and the key itself is
// never stored. `encrypting_since` is set when a process that writes content (serve,
// start) starts with the key first in SEALPOST_DATA_KEY; `retired_at` when
// `keys rotate-data` has re-encrypted everything that used it.
//
// The ids a process must hold are those of rows that encrypt or have encrypted and are
// not retired: every value stored under a key id was written by a process that recorded
// that id first. This is read from the small table, not by scanning the content columns
// of every message at every start (a full read of the largest table). Content written
// before the table existed is covered by the migration, which recorded the key ids found
// in it; the first process holding such a key proves it against a stored value.
//
// Rotation (README "Rotating the data key"): a key may encrypt only once some process
// has held it while another key encrypted (it was "introduced": every process should be
// restarted with it listed second before it goes first), and `keys rotate-data` runs
// only once a serving process encrypts with its first key. The table shows that these
// steps happened, not that every running process was restarted; that stays the
// operator's part, and a process that missed it is refused at its next start.
import type { Db } from "../db/client.ts";
import { findContentSamplesUnderKey, findKeyIdsInUse } from "../db/content.ts";
import { fillCheckValue, findDataKeys, insertDataKeys, markKeyEncrypting, retireKeysNotIn, type DataKeyRow } from "../db/data-keys.ts";
import { contentAad, ContentDecryptError, type ContentCipher } from "./content-cipher.ts";
import { DataKeyError } from "./data-keys.ts";
import { MigrationError } from "../db/migrate.ts";

/** "encrypts": a process that writes content (serve, start); "decrypts": one that only reads it (worker). */
export type DataKeyRole = "encrypts" | "decrypts";

const list = (ids: string[]) => ids.join(", ");

/**
 * Whether the key held under `id` decrypts content stored under that id before the
 * table existed. A few values are tried, so one tampered row does not condemn the key;
 * true when nothing is stored under the id any more.
 */
async function provesAgainstContent(db: Db, cipher: ContentCipher, id: string): Promise<boolean> {
  const samples = await findContentSamplesUnderKey(db, id);
  if (samples.length === 0) return true;
  return samples.some((s) => {
    try {
      cipher.decrypt(s.v, contentAad(s.id, s.col));
      return true;
    } catch (err) {
      if (err instanceof ContentDecryptError) return false;
      throw err;
    }
  });
}

/** Problems with the held keys against the recorded ones, each a clause of one line. */
async function problemsWith(db: Db, cipher: ContentCipher, rows: DataKeyRow[]): Promise<{ problems: string[]; proven: string[] }> {
  const held = new Set(cipher.keyIds);
  const wrong: string[] = [];
  const proven: string[] = []; // recorded without a check value, and this process's key decrypts the content
  for (const r of rows) {
    if (!held.has(r.id)) continue;
    if (r.checkValue) {
      if (!cipher.matchesCheckValue(r.id, r.checkValue)) wrong.push(r.id);
    } else if (r.encryptingSince) {
      if (await provesAgainstContent(db, cipher, r.id)) proven.push(r.id);
      else wrong.push(r.id);
    }
  }
  const missing = rows.filter((r) => r.encryptingSince && !r.retiredAt && !held.has(r.id)).map((r) => r.id);
  const problems: string[] = [];
  if (missing.length > 0)
    problems.push(`stored content is encrypted under data key${missing.length > 1 ? "s" : ""} ${list(missing)}, which SEALPOST_DATA_KEY does not hold: add ${missing.length > 1 ? "them" : "it"} to SEALPOST_DATA_KEY (id:base64, comma-separated, the first encrypts new content)`);
  if (wrong.length > 0)
    problems.push(`SEALPOST_DATA_KEY holds a different key under id ${list(wrong)} than the one stored content was encrypted with (its check value does not decrypt): set the original key for ${wrong.length > 1 ? "these ids" : "that id"}, or give a new key a new id`);
  return { problems, proven };
}

/** The recorded keys; a database that was not migrated to this version is an operator's one-line error, not a crash. */
async function recordedKeys(db: Db): Promise<DataKeyRow[]> {
  try {
    return await findDataKeys(db);
  } catch (err) {
    if ((err as { code?: string }).code === "P2021") // Prisma: the table does not exist
      throw new MigrationError("the database has no data_keys table: it is not migrated to this version of sealpost; run `sealpost migrate` as the database owner");
    throw err;
  }
}

/** The key that encrypts in the deployment as recorded: the latest to start encrypting, not retired. */
function deployedKey(rows: DataKeyRow[]): DataKeyRow | undefined {
  return rows.filter((r) => r.encryptingSince && !r.retiredAt).sort((a, b) => b.encryptingSince!.getTime() - a.encryptingSince!.getTime())[0];
}

/**
 * Run at the start of serve, worker and start: throws DataKeyError (one line naming the
 * key ids and SEALPOST_DATA_KEY) when the held keys cannot read what is stored, else
 * records the held keys' check values and, for a process that encrypts, its first key.
 */
export async function checkDataKeys(db: Db, cipher: ContentCipher, role: DataKeyRole): Promise<void> {
  const rows = await recordedKeys(db);
  const { problems, proven } = await problemsWith(db, cipher, rows);
  const current = cipher.currentKeyId;
  if (role === "encrypts" && rows.length > 0 && !rows.some((r) => r.id === current)) {
    const deployed = deployedKey(rows)?.id ?? "<current id>";
    problems.push(`data key ${current} is first in SEALPOST_DATA_KEY, so it would encrypt new content, but no sealpost process has held it yet: first restart every process with it listed after ${deployed} (SEALPOST_DATA_KEY=${deployed}:...,${current}:...) so all of them can read it, then put it first (README, "Rotating the data key")`);
  }
  if (problems.length > 0) throw new DataKeyError(problems.join("; "));

  const checkValue = (id: string) => new Uint8Array(cipher.checkValue(id)); // Prisma's Bytes is a Uint8Array over an ArrayBuffer
  const known = new Set(rows.map((r) => r.id));
  const fresh = cipher.keyIds.filter((id) => !known.has(id));
  if (fresh.length > 0) await insertDataKeys(db, fresh.map((id) => ({ id, checkValue: checkValue(id) })));
  for (const id of proven) await fillCheckValue(db, id, checkValue(id));
  // Another process may have recorded one of these ids between the read and the insert.
  const mine = await findDataKeys(db, cipher.keyIds);
  const clash = mine.filter((r) => r.checkValue && !cipher.matchesCheckValue(r.id, r.checkValue)).map((r) => r.id);
  if (clash.length > 0)
    throw new DataKeyError(`another sealpost process recorded a different key under id ${list(clash)} just now: give every process the same SEALPOST_DATA_KEY`);
  if (role === "encrypts") {
    await markKeyEncrypting(db, current);
  }
}

/**
 * `keys rotate-data` re-encrypts stored content under the first key of SEALPOST_DATA_KEY.
 * Refuses unless the held keys pass the start check and that key already encrypts in the
 * deployment (a serving process started with it first), so the serving processes can
 * read what the rotation writes.
 */
export async function assertRotationAllowed(db: Db, cipher: ContentCipher): Promise<void> {
  const rows = await recordedKeys(db);
  const { problems } = await problemsWith(db, cipher, rows);
  if (problems.length > 0) throw new DataKeyError(`keys rotate-data: ${problems.join("; ")}`);
  const current = cipher.currentKeyId;
  const target = rows.find((r) => r.id === current);
  // Nothing recorded: no serving process has started on this database since the table
  // was created, and the migration recorded the keys of any older content; so nothing
  // is stored that the rotation could make unreadable to a running process.
  if (rows.length === 0) return;
  if (!target?.encryptingSince || target.retiredAt) {
    const deployed = deployedKey(rows)?.id;
    const from = deployed && deployed !== current ? deployed : "<current id>";
    throw new DataKeyError(
      `keys rotate-data: data key ${current} does not encrypt new content yet, so the running processes may not be able to read it: ` +
        `first restart every process with SEALPOST_DATA_KEY=${from}:...,${current}:..., then every process with ${current}:...,${from}:..., ` +
        `then run keys rotate-data with that same value (README, "Rotating the data key")`,
    );
  }
}

/** After a rotation: keys other than `current` that no stored value uses any more are marked retired. Returns their ids. */
export async function retireUnusedKeys(db: Db, current: string): Promise<string[]> {
  const retired = await retireKeysNotIn(db, current, await findKeyIdsInUse(db));
  return retired.sort();
}
