-- Sending SMTP TLS reports (RFC 8460 section 3) to the rua a recipient domain publishes in
-- _smtp._tls, once a day when TLS_REPORTS_SEND=on: one row per day, domain and rua, so that
-- of several workers exactly one sends each report, and a failed submission is retried.
CREATE TABLE "tls_report_submissions" (
    -- The UTC day the report covers, YYYY-MM-DD.
    "day" TEXT NOT NULL CHECK ("day" ~ '^\d{4}-\d{2}-\d{2}$'),
    "domain" TEXT NOT NULL,
    -- The rua URI as published: https: is posted to, mailto: is recorded as not sent.
    "rua" TEXT NOT NULL,
    "report_id" TEXT NOT NULL,
    -- sending (a worker holds it until lease_until), sent, failed (retried until attempts run out), skipped.
    "state" TEXT NOT NULL CHECK ("state" IN ('sending', 'sent', 'failed', 'skipped')),
    "attempts" INTEGER NOT NULL DEFAULT 1,
    "lease_until" TIMESTAMPTZ(3),
    "last_status" INTEGER,
    "last_error" TEXT,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT now(),

    CONSTRAINT "tls_report_submissions_pkey" PRIMARY KEY ("day", "domain", "rua")
);
