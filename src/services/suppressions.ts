// The suppression list (issue 13) as a key sees it: the entries of the sender domains the
// key may send from (every domain for a key allowed "*"), newest first; a manual entry for
// one of those domains; removing an address from them.
import type { Db } from "../db/client.ts";
import { addManualSuppression, findSuppressions, removeSuppression, type SuppressionRow } from "../db/suppressions.ts";
import { parseAddress, parseDomain } from "../domain/address.ts";
import { AppError } from "../domain/errors.ts";
import { keyCoversDomain } from "../domain/sender-domain.ts";
import type { SuppressionReason } from "../domain/suppression.ts";

/** Who asks: the domains its key may send from ("*": any); the owner (CLI) has no key. */
export interface SuppressionActor {
  keyId: string | null;
  allowedDomains: readonly string[];
}

const domainsOf = (a: SuppressionActor): string[] | null => (a.allowedDomains.includes("*") ? null : [...a.allowedDomains]);

function suppressionView(r: SuppressionRow) {
  return {
    address: r.address,
    domain: r.senderDomain,
    reason: r.reason as SuppressionReason,
    created_at: r.createdAt.toISOString(),
    message_id: r.messageId,
    reply: r.replyCode !== null || r.enhancedCode !== null || r.replyText !== null
      ? { code: r.replyCode, enhanced_code: r.enhancedCode, text: r.replyText }
      : null,
    description: r.description,
  };
}

const invalid = (path: string, message: string) => new AppError("invalid_request", `${path}: ${message}`, { errors: [{ path, message }] });

/** An address as the list stores it (lower case), or a 422 naming `path`. */
function listAddress(input: string, path: string): string {
  const a = parseAddress(input.trim());
  if (!a.ok) throw invalid(path, `${a.message}, such as "alice@example.com"`);
  return a.value.toLowerCase();
}

/** A domain the key may send from, as `path` names it, or 422 / 403. */
function ownDomain(actor: SuppressionActor, input: string, path: string): string {
  const d = parseDomain(input.trim().toLowerCase());
  if (!d.ok) throw invalid(path, `${d.message}, such as "shop.example"`);
  if (!keyCoversDomain(actor.allowedDomains, d.value))
    throw new AppError("forbidden", `this key may not send from ${d.value}, so it has no suppression list there (its domains: ${actor.allowedDomains.join(", ")})`);
  return d.value;
}

export async function listSuppressions(
  db: Db, actor: SuppressionActor, f: { limit: number; cursor?: string | undefined; reason?: SuppressionReason | undefined; address?: string | undefined; domain?: string | undefined },
) {
  const beforeId = f.cursor === undefined ? undefined : decodeCursor(f.cursor);
  const domains = f.domain !== undefined ? [ownDomain(actor, f.domain, "query.domain")] : domainsOf(actor);
  const rows = await findSuppressions(db, {
    domains, reason: f.reason, address: f.address === undefined ? undefined : listAddress(f.address, "query.address"), beforeId, limit: f.limit,
  });
  const page = rows.slice(0, f.limit);
  const last = page[page.length - 1];
  return { data: page.map(suppressionView), next_cursor: rows.length > f.limit && last ? Buffer.from(String(last.id)).toString("base64url") : null };
}

function decodeCursor(cursor: string): bigint {
  const raw = Buffer.from(cursor, "base64url").toString("utf8");
  if (!/^[1-9]\d{0,18}$/.test(raw)) throw invalid("query.cursor", "not a cursor returned by this API");
  return BigInt(raw);
}

/**
 * Adds `address` to the list of `domain` (or of the key's one domain, when it may send
 * from exactly one). An address already listed keeps its entry and its reason.
 */
export async function addSuppression(db: Db, actor: SuppressionActor, input: { address: string; domain?: string | undefined; description?: string | undefined }) {
  const address = listAddress(input.address, "address");
  let domain: string;
  if (input.domain !== undefined) domain = ownDomain(actor, input.domain, "domain");
  else if (actor.allowedDomains.length === 1 && actor.allowedDomains[0] !== "*") domain = actor.allowedDomains[0]!;
  else
    throw invalid("domain", `required: the sender domain whose list the address goes on, such as "${actor.allowedDomains.find((d) => d !== "*") ?? "shop.example"}" (this key may send from ${actor.allowedDomains.includes("*") ? "any domain" : actor.allowedDomains.join(", ")})`);
  const { row, created } = await addManualSuppression(db, { senderDomain: domain, address, apiKeyId: actor.keyId, description: input.description ?? null });
  return { created, view: suppressionView(row) };
}

/** Removes `address` from `domain`'s list, or from every list the key may see; 404 when it is on none. */
export async function deleteSuppression(db: Db, actor: SuppressionActor, input: { address: string; domain?: string | undefined }) {
  const address = listAddress(input.address, "address");
  const domains = input.domain !== undefined ? [ownDomain(actor, input.domain, "query.domain")] : domainsOf(actor);
  const removed = await removeSuppression(db, address, domains);
  if (removed.length === 0) throw new AppError("not_found", `${address} is not on the suppression list of ${domains ? domains.join(", ") : "any domain"}`);
  return { address, removed_from: removed };
}
