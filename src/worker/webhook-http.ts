// One webhook POST, with what keeps it from being turned against the network it runs in
// (issue 12, "Safe outbound HTTP"): HTTPS with certificate verification (plain http only
// to loopback, and only outside production); every address the name resolves to checked
// before connecting and the connection made to the address checked, so a DNS answer that
// changes between check and connect (rebinding) cannot redirect it; redirects never
// followed; the response read up to a small limit; one deadline for the whole exchange.
import { lookup as dnsLookup } from "node:dns/promises";
import http from "node:http";
import https from "node:https";
import type { LookupFunction } from "node:net";
import { refusedAddress, refusedUrl, unmapped, type TargetPolicy } from "../security/webhook-targets.ts";

export interface PostResult {
  status: number | null;
  /** Seconds the receiver asked us to wait (Retry-After), when it did. */
  retryAfterSeconds: number | null;
  /** Why there is no usable answer: refused target, DNS, TLS, timeout, a redirect. */
  error: string | null;
  ip: string | null;
}

export interface PostOptions {
  policy: TargetPolicy;
  timeoutMs: number;
  /** Extra trusted CAs (WEBHOOK_CA_FILE) beside Node's own. */
  ca?: string[] | undefined;
  /** How much of the response body to read at most; the rest is dropped. */
  maxBodyBytes?: number;
  /** Every address of a name; the system resolver (getaddrinfo, /etc/hosts included) by default. */
  resolveAll?: (hostname: string) => Promise<Array<{ address: string; family: number }>>;
}

export async function postWebhook(url: URL, headers: Record<string, string>, body: string | Buffer, o: PostOptions): Promise<PostResult> {
  const refused = refusedUrl(url, o.policy);
  if (refused) return { status: null, retryAfterSeconds: null, error: `target refused: ${refused}`, ip: null };
  let connectedTo: string | null = null;
  // Resolve every address, refuse if any is off limits, and connect to the first checked one.
  // (net.connect asks for every address, `all`, when it tries address families in turn.)
  const lookup = ((hostname: string, opts: { all?: boolean }, cb: (err: NodeJS.ErrnoException | null, address: unknown, family?: number) => void) => {
    (o.resolveAll ?? ((h: string) => dnsLookup(h, { all: true })))(hostname).then(
      (addrs) => {
        const bad = addrs.map((a) => refusedAddress(a.address, o.policy)).find((r) => r !== null);
        if (bad) return cb(Object.assign(new Error(`target refused: ${hostname} resolves to ${bad}`), { code: "ETARGETREFUSED" }), "");
        const first = addrs[0];
        if (!first) return cb(Object.assign(new Error(`${hostname} has no address`), { code: "ENOTFOUND" }), "");
        if (opts.all) cb(null, [first]);
        else cb(null, first.address, first.family);
      },
      (err: NodeJS.ErrnoException) => cb(err, ""),
    );
  }) as unknown as LookupFunction;
  const client = url.protocol === "https:" ? https : http;
  return new Promise<PostResult>((resolve) => {
    const done = (r: PostResult) => {
      clearTimeout(timer);
      resolve({ ...r, ip: r.ip ?? connectedTo });
    };
    const req = client.request(url, {
      method: "POST",
      headers: { ...headers, "content-length": String(Buffer.byteLength(body)) },
      lookup,
      agent: false,
      ...(url.protocol === "https:" && o.ca ? { ca: o.ca } : {}),
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${o.timeoutMs} ms`)), o.timeoutMs);
    req.on("socket", (s) => s.on("connect", () => {
      connectedTo = unmapped(s.remoteAddress ?? "");
      const bad = refusedAddress(connectedTo, o.policy);
      if (bad) req.destroy(new Error(`target refused: connected to ${bad}`));
    }));
    req.on("error", (err) => done({ status: null, retryAfterSeconds: null, error: err.message, ip: null }));
    req.on("response", (res) => {
      let read = 0;
      res.on("data", (chunk: Buffer) => {
        read += chunk.length;
        if (read > (o.maxBodyBytes ?? 4096)) res.destroy(); // enough: the status is what counts
      });
      const finish = () => {
        const status = res.statusCode ?? null;
        const redirect = status !== null && status >= 300 && status < 400;
        done({ status, retryAfterSeconds: retryAfter(res.headers["retry-after"]), error: redirect ? `redirect to ${res.headers.location ?? "?"} not followed` : null, ip: null });
      };
      res.on("end", finish);
      res.on("close", finish);
      res.on("error", finish);
    });
    req.end(body);
  });
}

/** Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3). */
function retryAfter(v: string | undefined): number | null {
  if (!v) return null;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
