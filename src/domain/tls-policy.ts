// The two delivery policies (ARCHITECTURE.md, "Strictest-of TLS policy") and how they combine. `opportunistic`
// is Postfix's `may`, `required` is Postfix's `verify`. The effective policy is the
// strictest of the server setting, the API key's default and the message's own
// field, so no layer can weaken a stricter one.
export const TLS_POLICIES = ["opportunistic", "required"] as const;
export type TlsPolicy = (typeof TLS_POLICIES)[number];

const RANK: Record<TlsPolicy, number> = { opportunistic: 0, required: 1 };

export function strictest(...policies: Array<TlsPolicy | null | undefined>): TlsPolicy {
  let best: TlsPolicy = "opportunistic";
  for (const p of policies) if (p && RANK[p] > RANK[best]) best = p;
  return best;
}
