// The operator's per-domain TLS policy map (issue 15, ARCHITECTURE.md "Strictest-of TLS
// policy"): rules from SMTP_TLS_POLICY_MAP and from /tls-policies. A rule names a recipient
// domain ("example.com") or the domains under one (".example.com") and can only make
// delivery stricter: TLS is required, and optionally only the MX hosts listed are tried
// ("mail.example.com", "*.example.com" for one label, as MTA-STS patterns) or only a
// certificate whose SHA-256 fingerprint is listed is accepted (Postfix's `fingerprint`).

export interface TlsMapRule {
  /** "example.com" (that domain) or ".example.com" (the domains under it), lower case. */
  pattern: string;
  /** MX host patterns; empty: any MX. */
  mx: string[];
  /** SHA-256 certificate fingerprints, upper-case hex with colons as the evidence shows them; empty: a trusted CA and the MX name. */
  fingerprints: string[];
  origin: "config" | "api";
}

const LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const PATTERN = new RegExp(`^\\.?${LABEL}(?:\\.${LABEL})+$`);
const MX_PATTERN = new RegExp(`^(?:\\*\\.)?${LABEL}(?:\\.${LABEL})+$`);

export const RULE_PATTERN_SHAPE = 'a domain ("example.com") or a leading dot for the domains under it (".example.com")';
export const MX_PATTERN_SHAPE = 'host names such as "mail.example.com", or "*.example.com" for any one label under it';
export const FINGERPRINT_SHAPE = "SHA-256 certificate fingerprints: 64 hex digits, with or without colons between the bytes";

export function normalizePattern(p: string): string | null {
  const v = p.trim().toLowerCase().replace(/\.$/, "");
  return PATTERN.test(v) ? v : null;
}

export function normalizeMxPattern(p: string): string | null {
  const v = p.trim().toLowerCase().replace(/\.$/, "");
  return MX_PATTERN.test(v) ? v : null;
}

/** "ab:cd:…" or "abcd…" (32 bytes) to "AB:CD:…", as certificate fingerprints are shown; null when it is not one. */
export function normalizeFingerprint(f: string): string | null {
  const hex = f.trim().replace(/:/g, "").toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) return null;
  return hex.match(/../g)!.join(":");
}

/** The most specific rule for a recipient domain: an exact name beats a leading dot, a longer one a shorter; config before API on a tie. */
export function ruleFor(rules: readonly TlsMapRule[], domain: string): TlsMapRule | null {
  const d = domain.toLowerCase().replace(/\.$/, "");
  let best: TlsMapRule | null = null;
  let bestScore = -1;
  for (const r of rules) {
    const exact = !r.pattern.startsWith(".");
    const matches = exact ? d === r.pattern : d.endsWith(r.pattern) && d.length > r.pattern.length;
    if (!matches) continue;
    const score = r.pattern.length * 2 + (exact ? 1 : 0);
    if (score > bestScore || (score === bestScore && best?.origin === "api" && r.origin === "config")) {
      best = r;
      bestScore = score;
    }
  }
  return best;
}

/**
 * One SMTP_TLS_POLICY_MAP rule: `<pattern> required [mx=<host>|<host>…] [fingerprint=<sha256>|<sha256>…]`,
 * fields separated by spaces. Returns the rule or why it is not one.
 */
export function parseMapRule(text: string): TlsMapRule | { error: string } {
  const [rawPattern = "", policy, ...options] = text.trim().split(/\s+/);
  const pattern = normalizePattern(rawPattern);
  if (!pattern) return { error: `${JSON.stringify(rawPattern)} is not ${RULE_PATTERN_SHAPE}` };
  if (policy !== "required") return { error: `the policy after ${pattern} must be "required" (a rule can only make delivery stricter)` };
  const rule: TlsMapRule = { pattern, mx: [], fingerprints: [], origin: "config" };
  for (const o of options) {
    const m = /^(mx|fingerprint)=(.+)$/.exec(o);
    if (!m) return { error: `${JSON.stringify(o)} is not mx=<hosts> or fingerprint=<sha256s>` };
    for (const v of m[2]!.split("|")) {
      if (m[1] === "mx") {
        const mx = normalizeMxPattern(v);
        if (!mx) return { error: `mx ${JSON.stringify(v)} is not one of ${MX_PATTERN_SHAPE}` };
        rule.mx.push(mx);
      } else {
        const fp = normalizeFingerprint(v);
        if (!fp) return { error: `fingerprint ${JSON.stringify(v)} is not one of ${FINGERPRINT_SHAPE}` };
        rule.fingerprints.push(fp);
      }
    }
  }
  return rule;
}
