// Structured logs (pino). Redaction is a second line of defence: the code never
// passes keys or content to the logger in the first place.
import pino, { type Logger } from "pino";

const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  "headers.authorization",
  "authorization",
  "apiKey",
  "key",
  "secret",
  "password",
  "pass",
  "subject",
  "text",
  "html",
  "attachments",
  "body",
  "*.subject",
  "*.text",
  "*.html",
  "*.password",
  "*.pass",
  "*.authorization",
  "SMTP_RELAY_URL",
  "*.SMTP_RELAY_URL",
  "SEALPOST_DATA_KEY",
  "*.SEALPOST_DATA_KEY",
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      base: { service: "sealpost" },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination as pino.DestinationStream | undefined,
  );
}

/** What of an error goes into a log line: its message and code, never the object (causes may carry data). */
export function errorFields(err: unknown): { message: string; code?: string } {
  const e = err as { message?: unknown; code?: unknown };
  return { message: typeof e?.message === "string" ? e.message : String(err), ...(typeof e?.code === "string" ? { code: e.code } : {}) };
}
