// Where a webhook may go (issue 12, "Safe outbound HTTP"): in production not to loopback,
// private, link-local (cloud metadata), CGNAT, multicast or reserved addresses, unless an
// operator allows a network with WEBHOOK_ALLOWED_NETWORKS; and only over https. Checked
// when an endpoint is registered (services/webhooks.ts) and on every connection the
// worker makes (worker/webhook-http.ts).
import { BlockList, isIP } from "node:net";
import type { Config } from "../config.ts";

/** Addresses a webhook may not reach unless allowed: loopback, private, link-local (cloud metadata), CGNAT, multicast, unspecified. */
const BLOCKED = new BlockList();
for (const [net, prefix] of [["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 4], ["240.0.0.0", 4]] as const) BLOCKED.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of [["::", 128], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["64:ff9b::", 96], ["2001:db8::", 32]] as const)
  BLOCKED.addSubnet(net, prefix, "ipv6");

export interface TargetPolicy {
  /** Production: private targets refused unless allowed; plain http refused. */
  production: boolean;
  /** WEBHOOK_ALLOWED_NETWORKS: CIDRs an operator lets webhooks reach although private. */
  allowed: BlockList;
}

/** The target policy of the configuration: production refuses private targets outside WEBHOOK_ALLOWED_NETWORKS. */
export function webhookTargetPolicy(c: Pick<Config, "NODE_ENV" | "WEBHOOK_ALLOWED_NETWORKS">): TargetPolicy {
  const allowed = new BlockList();
  for (const cidr of c.WEBHOOK_ALLOWED_NETWORKS ?? []) {
    const [ip, bits] = cidr.split("/") as [string, string];
    allowed.addSubnet(ip, Number(bits), isIP(ip) === 6 ? "ipv6" : "ipv4");
  }
  return { production: c.NODE_ENV === "production", allowed };
}

const family = (ip: string) => (isIP(ip) === 6 ? "ipv6" : "ipv4");
export const unmapped = (ip: string) => (ip.toLowerCase().startsWith("::ffff:") && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip);

/** Why `ip` may not be reached, or null. Outside production everything may. */
export function refusedAddress(ip: string, policy: TargetPolicy): string | null {
  if (!policy.production) return null;
  const a = unmapped(ip);
  if (policy.allowed.check(a, family(a))) return null;
  return BLOCKED.check(a, family(a)) ? `${a} is a loopback, private, link-local or reserved address (allow it with WEBHOOK_ALLOWED_NETWORKS)` : null;
}

const isLoopback = (host: string) => host === "localhost" || /^127\./.test(host) || host === "[::1]" || host === "::1";

/** Why `url` may not be a webhook endpoint, judged without DNS; null when it may. */
export function refusedUrl(url: URL, policy: TargetPolicy): string | null {
  if (url.protocol !== "https:" && !(url.protocol === "http:" && !policy.production && isLoopback(url.hostname)))
    return policy.production ? "must be an https:// URL" : "must be an https:// URL (http:// only to localhost, outside production)";
  if (url.username || url.password) return "must not carry a user name or password";
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (isIP(host)) return refusedAddress(host, policy);
  if (policy.production && (host === "localhost" || host.endsWith(".localhost"))) return `${host} is loopback (allow it with WEBHOOK_ALLOWED_NETWORKS)`;
  return null;
}

