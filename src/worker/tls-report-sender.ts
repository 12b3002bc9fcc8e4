// Sending SMTP TLS reports (RFC 8460 section 3), when the operator turns it on
// (TLS_REPORTS_SEND=on): once the day is over, each recipient domain that direct delivery
// reached and that publishes `_smtp._tls` TXT "v=TLSRPTv1; rua=..." gets that day's report
// (services/tls-reports.ts), gzipped, POSTed as application/tlsrpt+gzip to each https: rua,
// with the webhook sender's safeguards (worker/webhook-http.ts: certificate verified, no
// private targets in production, no redirects, one deadline). tls_report_submissions makes
// one worker send each report once, and retries a failed one. mailto: rua are recorded as
// not sent: mailing reports is not built yet.
import { gzipSync } from "node:zlib";
import type pg from "pg";
import type { Logger } from "pino";
import { claimTlsReportSubmission, finishTlsReportSubmission } from "../db/tls-reports.ts";
import { tlsReports, type ReportSettings } from "../services/tls-reports.ts";
import { postWebhook } from "./webhook-http.ts";
import type { TargetPolicy } from "../security/webhook-targets.ts";
import type { TxtResolver } from "./mx.ts";
import { errorFields } from "../logger.ts";

export interface TlsReportSenderOptions {
  pool: pg.Pool;
  logger: Logger;
  settings: ReportSettings;
  /** DNS_SERVERS' resolver: the _smtp._tls TXT record and the rua host's addresses. */
  dns: Pick<TxtResolver, "txt" | "resolve">;
  policy: TargetPolicy;
  /** Trusted CAs for the rua's certificate: the system's and SMTP_CA_FILE's. */
  ca: string[];
  timeoutMs: number;
}

export interface Submission {
  domain: string;
  rua: string;
  state: "sent" | "failed" | "skipped";
  status: number | null;
  error: string | null;
}

const MAX_ATTEMPTS = 5;
const LEASE_MS = 10 * 60_000;

/** The rua URIs of a domain's TLSRPT record (RFC 8460 section 3): none unless exactly one v=TLSRPTv1 record. */
export function ruaOf(records: string[]): string[] {
  const mine = records.filter((r) => /^v=TLSRPTv1\s*(;|$)/.test(r.trim()));
  if (mine.length !== 1) return [];
  const rua = /(?:^|;)\s*rua=([^;]*)/.exec(mine[0]!)?.[1] ?? "";
  return rua.split(",").map((u) => u.trim()).filter((u) => /^(https:|mailto:)/i.test(u)).slice(0, 10);
}

/** Sends the reports of `day` (YYYY-MM-DD) to the rua of each domain; what was done, for the log and the tests. */
export async function sendTlsReports(o: TlsReportSenderOptions, day: string): Promise<Submission[]> {
  const { reports } = await tlsReports(o.pool, { allowedDomains: [] }, o.settings, { date: day }, new Date());
  const done: Submission[] = [];
  for (const report of reports) {
    const domain = report.policies[0]?.policy["policy-domain"];
    if (!domain) continue;
    const txt = await o.dns.txt(`_smtp._tls.${domain}`);
    if (txt.kind !== "records") continue;
    for (const rua of ruaOf(txt.records)) {
      const key = { day, domain, rua, reportId: report["report-id"] };
      if (!(await claimTlsReportSubmission(o.pool, key, { leaseMs: LEASE_MS, maxAttempts: MAX_ATTEMPTS }))) continue;
      const result = rua.toLowerCase().startsWith("https:")
        ? await post(o, new URL(rua), gzipSync(JSON.stringify(report)))
        : { state: "skipped" as const, status: null, error: "mailto: rua are not sent yet; only https: ones are" };
      await finishTlsReportSubmission(o.pool, key, result);
      done.push({ domain, rua, ...result });
      o.logger.info({ component: "tls-reports", day, domain, rua, ...result }, `TLS report for ${domain} ${result.state}`);
    }
  }
  return done;
}

async function post(o: TlsReportSenderOptions, url: URL, body: Buffer): Promise<Omit<Submission, "domain" | "rua">> {
  const resolveAll = async (host: string) => {
    const [a, aaaa] = await Promise.all(["A", "AAAA"].map((t) => o.dns.resolve(host, t).then((x) => x as string[], () => [] as string[])));
    return [...a!.map((address) => ({ address, family: 4 })), ...aaaa!.map((address) => ({ address, family: 6 }))];
  };
  const r = await postWebhook(url, { "content-type": "application/tlsrpt+gzip" }, body, { policy: o.policy, timeoutMs: o.timeoutMs, ca: o.ca, resolveAll });
  const ok = r.status !== null && r.status >= 200 && r.status < 300;
  return { state: ok ? "sent" : "failed", status: r.status, error: ok ? null : (r.error ?? `answered ${r.status}`) };
}

/** Every hour, the reports of the day before (UTC) not sent yet; returns a stop function. */
export function startTlsReportSender(o: TlsReportSenderOptions): () => void {
  const run = async () => {
    const day = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    try {
      await sendTlsReports(o, day);
    } catch (err) {
      o.logger.warn({ component: "tls-reports", day, err: errorFields(err) }, "sending TLS reports failed; trying again within the hour");
    }
  };
  const timer = setInterval(run, 3_600_000);
  timer.unref();
  const first = setTimeout(run, 60_000);
  first.unref();
  return () => {
    clearInterval(timer);
    clearTimeout(first);
  };
}
