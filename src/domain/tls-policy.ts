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

/**
 * The layers a delivery's policy can come from (ARCHITECTURE.md, "Strictest-of TLS policy"),
 * in the order a source is named: the operator's server setting, the API key's default, the
 * message's own field, the operator's per-domain map, then what the recipient domain
 * publishes (MTA-STS, DANE). `default`: every layer left it opportunistic.
 */
export const POLICY_SOURCES = ["default", "server", "key", "message", "map", "mta-sts", "dane"] as const;
export type PolicySource = (typeof POLICY_SOURCES)[number];

/** The layers fixed when a message is accepted, as messages.tls_policy_source names them. */
export type AcceptSource = Extract<PolicySource, "default" | "server" | "key" | "message">;

/**
 * The strictest of the layers and the first layer (in the order given) that holds it: the
 * layer that made the policy what it is. All opportunistic: `default`.
 */
export function strictestLayer<S extends string>(layers: Array<{ policy: TlsPolicy | null | undefined; source: S }>): { policy: TlsPolicy; source: S | "default" } {
  const policy = strictest(...layers.map((l) => l.policy));
  if (policy === "opportunistic") return { policy, source: "default" };
  return { policy, source: layers.find((l) => l.policy === policy)!.source };
}
