// Sending SMTP TLS reports (RFC 8460 section 3), when the operator turns it on
// (TLS_REPORTS_SEND=on): once the day is over, each recipient domain that direct delivery
// reached and that publishes `_smtp._tls` TXT "v=TLSRPTv1; rua=..." gets that day's report
// (services/tls-reports.ts), gzipped, POSTed as application/tlsrpt+gzip to each https: rua,
// with the webhook sender's safeguards (worker/webhook-http.ts: certificate verified, no
// private targets in production, no redirects, one deadline), or mailed to each mailto: rua
// as RFC 8460 section 3 says (multipart/report; report-type="tlsrpt", the gzipped report
// attached, TLS-Report-Domain and TLS-Report-Submitter headers), from TLS_REPORT_FROM,
// DKIM-signed when that domain is a verified sender domain, straight to the rua domain's MX
// hosts over STARTTLS. tls_report_submissions makes one worker send each report once, and
// retries a failed one.
import { gzipSync } from "node:zlib";
import { randomUUID } from "node:crypto";
import type pg from "pg";
import type { Logger } from "pino";
import { claimTlsReportSubmission, finishTlsReportSubmission } from "../db/tls-reports.ts";
import { tlsReports, type ReportSettings } from "../services/tls-reports.ts";
import type { TlsReport } from "../domain/tls-report.ts";
import { postWebhook } from "./webhook-http.ts";
import type { TargetPolicy } from "../security/webhook-targets.ts";
import type { MxResolution, TxtResolver } from "./mx.ts";
import type { AttemptOptions, AttemptResult } from "./smtp-attempt.ts";
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
  /** Mailing reports (mailto: rua); without it they are recorded as not sent. */
  mail?: {
    from: string;
    resolveMx(domain: string): Promise<MxResolution>;
    attempt(o: AttemptOptions): Promise<AttemptResult>;
    sign?: (raw: Buffer, fromAddress: string) => Promise<{ message: Buffer }>;
    mxPort: number;
    heloName: string;
    connectTimeoutMs: number;
  };
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
  const { reports } = await tlsReports(o.pool, { allowedDomains: ["*"] }, o.settings, { date: day }, new Date());
  const done: Submission[] = [];
  for (const report of reports) {
    const domain = report.policies[0]?.policy["policy-domain"];
    if (!domain) continue;
    const txt = await o.dns.txt(`_smtp._tls.${domain}`);
    if (txt.kind !== "records") continue;
    for (const rua of ruaOf(txt.records)) {
      const key = { day, domain, rua, reportId: report["report-id"] };
      if (!(await claimTlsReportSubmission(o.pool, key, { leaseMs: LEASE_MS, maxAttempts: MAX_ATTEMPTS }))) continue;
      const gz = gzipSync(JSON.stringify(report));
      const result = rua.toLowerCase().startsWith("https:")
        ? await post(o, new URL(rua), gz)
        : o.mail
          ? await mail(o.mail, decodeURIComponent(rua.slice("mailto:".length).split("?")[0]!), report, gz, day)
          : { state: "skipped" as const, status: null, error: "mailto: rua need TLS_REPORT_FROM" };
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

/** The message RFC 8460 section 3 describes: the report gzipped in a multipart/report of type tlsrpt. */
function reportMessage(o: { from: string; to: string; report: TlsReport; gz: Buffer; day: string }): Buffer {
  const domain = o.report.policies[0]?.policy["policy-domain"] ?? "";
  const submitter = o.report["organization-name"];
  const boundary = `tlsrpt-${randomUUID()}`;
  const start = Math.floor(Date.parse(`${o.day}T00:00:00Z`) / 1000);
  const filename = `${submitter}!${domain}!${start}!${start + 86_399}.json.gz`;
  const lines = [
    `From: <${o.from}>`,
    `To: <${o.to}>`,
    `Subject: Report Domain: ${domain} Submitter: ${submitter} Report-ID: <${o.report["report-id"]}>`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <${randomUUID()}@${o.from.split("@")[1]}>`,
    `TLS-Report-Domain: ${domain}`,
    `TLS-Report-Submitter: ${submitter}`,
    "MIME-Version: 1.0",
    `Content-Type: multipart/report; report-type="tlsrpt"; boundary="${boundary}"`,
    "",
    `--${boundary}`,
    "Content-Type: text/plain; charset=us-ascii",
    "",
    `This is an aggregate TLS report (RFC 8460) from ${submitter} for ${domain}, ${o.day} (UTC).`,
    "",
    `--${boundary}`,
    `Content-Type: application/tlsrpt+gzip; name="${filename}"`,
    "Content-Transfer-Encoding: base64",
    `Content-Disposition: attachment; filename="${filename}"`,
    "",
    ...(o.gz.toString("base64").match(/.{1,76}/g) ?? []),
    "",
    `--${boundary}--`,
    "",
  ];
  return Buffer.from(lines.join("\r\n"));
}

async function mail(m: NonNullable<TlsReportSenderOptions["mail"]>, to: string, report: TlsReport, gz: Buffer, day: string): Promise<Omit<Submission, "domain" | "rua">> {
  const at = to.lastIndexOf("@");
  if (at <= 0) return { state: "skipped", status: null, error: `${to} is not an address` };
  const raw = reportMessage({ from: m.from, to, report, gz, day });
  const message = m.sign ? (await m.sign(raw, m.from)).message : raw;
  const mx = await m.resolveMx(to.slice(at + 1).toLowerCase());
  if (mx.kind !== "hosts") return { state: mx.kind === "bounce" ? "skipped" : "failed", status: null, error: mx.reason };
  let last: Omit<Submission, "domain" | "rua"> = { state: "failed", status: null, error: "no MX host" };
  for (const h of mx.hosts.slice(0, 3)) for (const ip of h.addresses.slice(0, 2)) {
    const r = await m.attempt({
      target: { host: h.host, ip, port: m.mxPort }, policy: "opportunistic", heloName: m.heloName, connectTimeoutMs: m.connectTimeoutMs,
      envelope: { from: m.from, to: [to] }, message,
    });
    const v = r.recipients[0]!;
    if (v.outcome === "delivered") return { state: "sent", status: v.replyCode, error: null };
    last = { state: v.outcome === "bounced" ? "skipped" : "failed", status: v.replyCode, error: v.replyText };
    if (!r.tryNextHost) return last;
  }
  return last;
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
