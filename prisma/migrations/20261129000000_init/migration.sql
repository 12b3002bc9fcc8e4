-- sealpost initial schema. Written to match prisma/schema.prisma; the CHECK
-- constraints below are not expressible in Prisma and only tighten it.

-- CreateTable
CREATE TABLE "api_keys" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "secret_hash" TEXT NOT NULL,
    "scopes" TEXT[],
    "allowed_domains" TEXT[],
    "tls_policy" TEXT,
    "rate_limit_per_minute" INTEGER,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "revoked_at" TIMESTAMPTZ(3),

    CONSTRAINT "api_keys_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "api_keys_tls_policy_check" CHECK ("tls_policy" IN ('opportunistic', 'required')),
    CONSTRAINT "api_keys_secret_hash_check" CHECK ("secret_hash" ~ '^[0-9a-f]{64}$')
);

-- CreateTable
CREATE TABLE "messages" (
    "id" UUID NOT NULL,
    "api_key_id" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "tls_policy" TEXT NOT NULL,
    "message_id_header" TEXT NOT NULL,
    "from_address" TEXT NOT NULL,
    "from_name" TEXT,
    "reply_to" JSONB,
    "subject" BYTEA,
    "text_body" BYTEA,
    "html_body" BYTEA,
    "headers" BYTEA,
    "attachments" BYTEA,
    "tags" TEXT[],
    "metadata" JSONB,
    "send_at" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,
    "finished_at" TIMESTAMPTZ(3),
    "content_purged_at" TIMESTAMPTZ(3),

    CONSTRAINT "messages_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "messages_status_check" CHECK ("status" IN ('queued', 'scheduled', 'sending', 'deferred', 'delivered', 'partially_delivered', 'bounced', 'failed', 'cancelled')),
    CONSTRAINT "messages_tls_policy_check" CHECK ("tls_policy" IN ('opportunistic', 'required'))
);

-- CreateTable
CREATE TABLE "deliveries" (
    "id" BIGSERIAL NOT NULL,
    "message_id" UUID NOT NULL,
    "domain" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TIMESTAMPTZ(3) NOT NULL,
    "lease_owner" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "deliveries_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "deliveries_state_check" CHECK ("state" IN ('pending', 'done', 'cancelled'))
);

-- CreateTable
CREATE TABLE "recipients" (
    "id" BIGSERIAL NOT NULL,
    "message_id" UUID NOT NULL,
    "delivery_id" BIGINT NOT NULL,
    "position" INTEGER NOT NULL,
    "kind" TEXT NOT NULL,
    "address" TEXT NOT NULL,
    "name" TEXT,
    "status" TEXT NOT NULL,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "last_code" INTEGER,
    "last_enhanced" TEXT,
    "last_reply" TEXT,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "recipients_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "recipients_kind_check" CHECK ("kind" IN ('to', 'cc', 'bcc')),
    CONSTRAINT "recipients_status_check" CHECK ("status" IN ('queued', 'scheduled', 'sending', 'deferred', 'delivered', 'bounced', 'failed', 'cancelled'))
);

-- CreateTable
CREATE TABLE "delivery_attempts" (
    "id" BIGSERIAL NOT NULL,
    "message_id" UUID NOT NULL,
    "recipient_id" BIGINT NOT NULL,
    "attempt" INTEGER NOT NULL,
    "mx_host" TEXT,
    "ip" TEXT,
    "port" INTEGER,
    "policy" TEXT NOT NULL,
    "tls" BOOLEAN NOT NULL,
    "tls_version" TEXT,
    "cipher" TEXT,
    "verified" BOOLEAN,
    "verify_error" TEXT,
    "cert_subject" TEXT,
    "cert_issuer" TEXT,
    "cert_not_after" TIMESTAMPTZ(3),
    "cert_fingerprint" TEXT,
    "reply_code" INTEGER,
    "enhanced_code" TEXT,
    "reply_text" TEXT,
    "outcome" TEXT NOT NULL,
    "started_at" TIMESTAMPTZ(3) NOT NULL,
    "duration_ms" INTEGER NOT NULL,

    CONSTRAINT "delivery_attempts_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "delivery_attempts_outcome_check" CHECK ("outcome" IN ('delivered', 'deferred', 'bounced'))
);

-- CreateTable
CREATE TABLE "idempotency_records" (
    "api_key_id" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "status_code" INTEGER NOT NULL,
    "response" JSONB NOT NULL,
    "message_id" UUID,
    "created_at" TIMESTAMPTZ(3) NOT NULL,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "idempotency_records_pkey" PRIMARY KEY ("api_key_id","key")
);

-- CreateIndex
CREATE INDEX "messages_api_key_id_created_at_id_idx" ON "messages"("api_key_id", "created_at" DESC, "id" DESC);

-- CreateIndex
CREATE INDEX "messages_tags_idx" ON "messages" USING GIN ("tags");

-- CreateIndex
CREATE INDEX "messages_finished_at_idx" ON "messages"("finished_at");

-- CreateIndex
CREATE INDEX "deliveries_state_next_attempt_at_idx" ON "deliveries"("state", "next_attempt_at");

-- CreateIndex
CREATE INDEX "deliveries_message_id_idx" ON "deliveries"("message_id");

-- CreateIndex
CREATE INDEX "recipients_message_id_idx" ON "recipients"("message_id");

-- CreateIndex
CREATE INDEX "recipients_delivery_id_idx" ON "recipients"("delivery_id");

-- CreateIndex
CREATE INDEX "delivery_attempts_message_id_started_at_idx" ON "delivery_attempts"("message_id", "started_at");

-- CreateIndex
CREATE INDEX "delivery_attempts_recipient_id_idx" ON "delivery_attempts"("recipient_id");

-- CreateIndex
CREATE INDEX "idempotency_records_expires_at_idx" ON "idempotency_records"("expires_at");

-- AddForeignKey
ALTER TABLE "messages" ADD CONSTRAINT "messages_api_key_id_fkey" FOREIGN KEY ("api_key_id") REFERENCES "api_keys"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "deliveries" ADD CONSTRAINT "deliveries_message_id_fkey" FOREIGN KEY ("message_id") REFERENCES "messages"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "recipients" ADD CONSTRAINT "recipients_message_id_fkey" FOREIGN KEY ("message_id") REFERENCES "messages"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "recipients" ADD CONSTRAINT "recipients_delivery_id_fkey" FOREIGN KEY ("delivery_id") REFERENCES "deliveries"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "delivery_attempts" ADD CONSTRAINT "delivery_attempts_message_id_fkey" FOREIGN KEY ("message_id") REFERENCES "messages"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "delivery_attempts" ADD CONSTRAINT "delivery_attempts_recipient_id_fkey" FOREIGN KEY ("recipient_id") REFERENCES "recipients"("id") ON DELETE CASCADE ON UPDATE CASCADE;
