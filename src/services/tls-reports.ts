// GET /tls-reports: RFC 8460 aggregate reports of one UTC day, one per recipient domain
// direct delivery reached (domain/tls-report.ts). They describe every sender's sessions to
// a domain, so they are the operator's: an admin key not limited to some sender domains.
import type pg from "pg";
import { findDayAttemptGroups, findMtaStsMaxAges } from "../db/tls-reports.ts";
import { AppError } from "../domain/errors.ts";
import { coversEveryDomain } from "../domain/sender-domain.ts";
import { buildReport, type AttemptGroup, type TlsReport } from "../domain/tls-report.ts";
import { heloName, type Config } from "../config.ts";

export interface ReportSettings {
  organization: string;
  contact: string;
  /** The host name reports are made by (report ids end with it). */
  reporter: string;
  /** SMTP_SOURCE_IPS[0], when there is one sending address. */
  sendingIp?: string | undefined;
}

/** Who the reports say they are from: TLS_REPORT_ORGANIZATION and TLS_REPORT_CONTACT, else the HELO name's. */
export function reportSettings(config: Config): ReportSettings {
  const helo = heloName(config).toLowerCase();
  return {
    organization: config.TLS_REPORT_ORGANIZATION ?? helo,
    contact: config.TLS_REPORT_CONTACT ?? `mailto:postmaster@${helo}`,
    reporter: helo,
    sendingIp: config.SMTP_SOURCE_IPS?.length === 1 ? config.SMTP_SOURCE_IPS[0] : undefined,
  };
}

/** The last whole UTC day before `now`, as YYYY-MM-DD. */
function previousDay(now: Date): string {
  return new Date(now.getTime() - 86_400_000).toISOString().slice(0, 10);
}

export async function tlsReports(
  pool: pg.Pool, actor: { allowedDomains: readonly string[] }, settings: ReportSettings, q: { date?: string | undefined; domain?: string | undefined }, now: Date,
): Promise<{ date: string; reports: TlsReport[] }> {
  if (!coversEveryDomain(actor.allowedDomains)) {
    throw new AppError("forbidden", "TLS reports describe every sender's mail to a recipient domain: only an admin key not limited to some sender domains may read them");
  }
  const date = q.date ?? previousDay(now);
  const groups = await findDayAttemptGroups(pool, new Date(`${date}T00:00:00Z`), q.domain?.toLowerCase() ?? null);
  const byDomain = new Map<string, AttemptGroup[]>();
  for (const g of groups) byDomain.set(g.domain, [...(byDomain.get(g.domain) ?? []), g]);
  const maxAges = await findMtaStsMaxAges(pool, [...byDomain.keys()]);
  const reports = [...byDomain].map(([domain, gs]) =>
    buildReport({ domain, day: date, groups: gs, ...settings, maxAgeOf: (id) => maxAges.get(`${domain}\0${id}`) }),
  );
  return { date, reports };
}
