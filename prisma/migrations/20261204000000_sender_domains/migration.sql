-- Sender domains (issue 11): a domain mail is sent from, with the DKIM key pairs that
-- sign it. Each domain gets two key pairs when it is added (RSA-2048 and Ed25519,
-- RFC 8463) under dated selectors. Private keys are stored encrypted with the data key,
-- bound to their row (src/security/dkim-keys.ts); the API never returns them.

-- CreateTable
CREATE TABLE "sender_domains" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "bounce_domain" TEXT,
    "created_by_key_id" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "verified_at" TIMESTAMPTZ(3),
    "checked_at" TIMESTAMPTZ(3),
    "check_result" JSONB,

    CONSTRAINT "sender_domains_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "sender_domains_name_check" CHECK ("name" = lower("name") AND "name" ~ '^[a-z0-9-]+(\.[a-z0-9-]+)+$'),
    CONSTRAINT "sender_domains_bounce_check" CHECK ("bounce_domain" IS NULL OR right("bounce_domain", length("name") + 1) = '.' || "name")
);

-- CreateIndex
CREATE UNIQUE INDEX "sender_domains_name_key" ON "sender_domains"("name");

-- CreateTable
CREATE TABLE "dkim_keys" (
    "id" UUID NOT NULL,
    "domain_id" UUID NOT NULL,
    "selector" TEXT NOT NULL,
    "algorithm" TEXT NOT NULL,
    "public_key" TEXT NOT NULL,
    "private_key" BYTEA NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "retired_at" TIMESTAMPTZ(3),

    CONSTRAINT "dkim_keys_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "dkim_keys_algorithm_check" CHECK ("algorithm" IN ('rsa-sha256', 'ed25519-sha256')),
    CONSTRAINT "dkim_keys_selector_check" CHECK ("selector" ~ '^[a-z0-9][a-z0-9-]{0,62}$')
);

-- CreateIndex
CREATE UNIQUE INDEX "dkim_keys_domain_id_selector_key" ON "dkim_keys"("domain_id", "selector");

-- AddForeignKey
ALTER TABLE "dkim_keys" ADD CONSTRAINT "dkim_keys_domain_id_fkey" FOREIGN KEY ("domain_id") REFERENCES "sender_domains"("id") ON DELETE CASCADE ON UPDATE CASCADE;
