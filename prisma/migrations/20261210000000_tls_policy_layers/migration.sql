-- Policies that hold against a network attacker (issue 15): which layer made each delivery's
-- TLS policy what it was, the MTA-STS policies workers share, and the operator's per-domain map.

-- The layer that made the policy fixed at acceptance what it is: 'server' (SMTP_TLS_POLICY),
-- 'key' (the API key's default), 'message' (its "tls" field), or 'default' (opportunistic
-- everywhere). NULL for messages accepted before this column.
ALTER TABLE "messages" ADD COLUMN "tls_policy_source" TEXT
    CHECK ("tls_policy_source" IN ('default', 'server', 'key', 'message'));

-- Each attempt's policy: the layer it came from ('default', 'server', 'key', 'message',
-- 'map', 'mta-sts', 'dane'), and what every layer said (JSON: the map rule, the MTA-STS mode
-- and id, the DANE state and matching TLSA record, the MX-name check). NULL before this column.
ALTER TABLE "delivery_attempts" ADD COLUMN "policy_source" TEXT,
                                ADD COLUMN "policy_detail" JSONB;

-- MTA-STS policies (RFC 8461) as fetched, one per recipient domain, shared by every worker.
-- A policy is used until expires_at (fetch time + max_age), whatever DNS or HTTPS say
-- meanwhile (RFC 8461 section 5.1); a new TXT id makes workers fetch it again.
CREATE TABLE "mta_sts_policies" (
    "domain" TEXT NOT NULL,
    -- The id of the _mta-sts TXT record the policy was fetched under.
    "policy_id" TEXT NOT NULL,
    "mode" TEXT NOT NULL CHECK ("mode" IN ('enforce', 'testing', 'none')),
    -- The mx patterns, as the policy lists them ("mail.example.com", "*.example.net").
    "mx" TEXT[] DEFAULT '{}',
    -- max_age as published (seconds); the expiry uses it clamped to [1 hour, 1 year), else 1 day.
    "max_age" INTEGER NOT NULL,
    "fetched_at" TIMESTAMPTZ(3) NOT NULL,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,
    -- The last refresh that failed while this policy stayed in force, and why.
    "last_error" TEXT,
    "last_error_at" TIMESTAMPTZ(3),

    CONSTRAINT "mta_sts_policies_pkey" PRIMARY KEY ("domain")
);

-- The operator's per-domain TLS policy map (besides SMTP_TLS_POLICY_MAP): "example.com" names
-- that recipient domain, ".example.com" the domains under it. A rule can only make delivery
-- stricter: TLS is required, and optionally only the listed MX hosts are tried, or only a
-- certificate with one of the listed SHA-256 fingerprints is accepted.
CREATE TABLE "tls_policies" (
    "id" UUID NOT NULL,
    "pattern" TEXT NOT NULL,
    "policy" TEXT NOT NULL CHECK ("policy" = 'required'),
    "mx" TEXT[] DEFAULT '{}',
    "fingerprints" TEXT[] DEFAULT '{}',
    "description" TEXT,
    "created_by_key_id" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT now(),

    CONSTRAINT "tls_policies_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "tls_policies_pattern_key" ON "tls_policies"("pattern");
