// The operator's TLS policy map through the API (/tls-policies): rules that make delivery to
// a recipient domain stricter (domain/tls-policy-map.ts). They apply to every tenant's mail,
// so only an admin key that is not limited to some sender domains may add or remove one;
// SMTP_TLS_POLICY_MAP's rules are listed beside them, read-only.
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { deleteTlsPolicyRule, findTlsPolicyRule, findTlsPolicyRules, insertTlsPolicyRule, findTlsPolicyRuleByPattern, type TlsPolicyRuleRow } from "../db/tls-policies.ts";
import { AppError } from "../domain/errors.ts";
import { coversEveryDomain } from "../domain/sender-domain.ts";
import { FINGERPRINT_SHAPE, MX_PATTERN_SHAPE, normalizeFingerprint, normalizeMxPattern, normalizePattern, RULE_PATTERN_SHAPE, type TlsMapRule } from "../domain/tls-policy-map.ts";

const fieldError = (path: string, message: string) => new AppError("invalid_request", `${path}: ${message}`, { errors: [{ path, message }] });

export interface TlsPolicyView {
  id: string | null;
  pattern: string;
  policy: "required";
  mx: string[];
  fingerprints: string[];
  origin: "config" | "api";
  description: string | null;
  created_at: string | null;
}

const view = (r: TlsPolicyRuleRow): TlsPolicyView => ({
  id: r.id, pattern: r.pattern, policy: "required", mx: r.mx ?? [], fingerprints: r.fingerprints ?? [], origin: "api", description: r.description, created_at: r.created_at.toISOString(),
});

const configView = (r: TlsMapRule): TlsPolicyView => ({
  id: null, pattern: r.pattern, policy: "required", mx: r.mx, fingerprints: r.fingerprints, origin: "config", description: null, created_at: null,
});

/** The map's rules apply to everyone's mail: changing them is the operator's, not a tenant's. */
function assertOperator(allowedDomains: readonly string[]): void {
  if (!coversEveryDomain(allowedDomains)) {
    throw new AppError("forbidden", "the TLS policy map applies to every sender's mail: only an admin key not limited to some sender domains may change it");
  }
}

export async function listTlsPolicies(pool: pg.Pool, configRules: readonly TlsMapRule[]): Promise<{ data: TlsPolicyView[] }> {
  return { data: [...configRules.map(configView), ...(await findTlsPolicyRules(pool)).map(view)] };
}

export interface NewTlsPolicy {
  pattern: string;
  mx?: string[] | undefined;
  fingerprints?: string[] | undefined;
  description?: string | undefined;
}

export async function addTlsPolicy(pool: pg.Pool, actor: { keyId: string; allowedDomains: readonly string[] }, configRules: readonly TlsMapRule[], body: NewTlsPolicy): Promise<TlsPolicyView> {
  assertOperator(actor.allowedDomains);
  const pattern = normalizePattern(body.pattern);
  if (!pattern) throw fieldError("pattern", `must be ${RULE_PATTERN_SHAPE}`);
  const mx = (body.mx ?? []).map((m, i) => {
    const v = normalizeMxPattern(m);
    if (!v) throw fieldError(`mx[${i}]`, `must be one of ${MX_PATTERN_SHAPE}`);
    return v;
  });
  const fingerprints = (body.fingerprints ?? []).map((f, i) => {
    const v = normalizeFingerprint(f);
    if (!v) throw fieldError(`fingerprints[${i}]`, `must be one of ${FINGERPRINT_SHAPE}`);
    return v;
  });
  if (configRules.some((r) => r.pattern === pattern)) throw new AppError("conflict", `SMTP_TLS_POLICY_MAP has a rule for ${pattern} already; change it there`);
  const row = await insertTlsPolicyRule(pool, { id: randomUUID(), pattern, mx, fingerprints, description: body.description ?? null, createdByKeyId: actor.keyId });
  if (!row) {
    const existing = await findTlsPolicyRuleByPattern(pool, pattern);
    throw new AppError("conflict", `a rule for ${pattern} exists already${existing ? ` (${existing.id}); remove it first to change it` : ""}`);
  }
  return view(row);
}

export async function removeTlsPolicy(pool: pg.Pool, actor: { allowedDomains: readonly string[] }, id: string): Promise<{ id: string; deleted: true }> {
  assertOperator(actor.allowedDomains);
  const existing = await findTlsPolicyRule(pool, id);
  if (!existing || !(await deleteTlsPolicyRule(pool, id))) throw new AppError("not_found", "no TLS policy rule with this id");
  return { id, deleted: true };
}
