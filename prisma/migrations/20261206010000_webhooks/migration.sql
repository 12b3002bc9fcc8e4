-- Webhooks (issue 12): endpoints a key registers, one delivery row per event and endpoint,
-- and one row per HTTP attempt. A delivery is written by the statement that writes its
-- event (the outbox fans out to the key's enabled endpoints that want the type), and sent by
-- the worker from this table under a lease, as SMTP deliveries are.
CREATE TABLE "webhook_endpoints" (
    "id" UUID NOT NULL,
    "api_key_id" TEXT NOT NULL,
    "url" TEXT NOT NULL,
    "description" TEXT,
    -- Empty (or null): every type.
    "event_types" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "disabled_reason" TEXT,
    -- whsec_ secrets, encrypted under the data key like content, bound to the row and column.
    "secret" BYTEA NOT NULL,
    -- After a rotation the old secret also signs until previous_secret_until.
    "previous_secret" BYTEA,
    "previous_secret_until" TIMESTAMPTZ(3),
    -- Since when every attempt failed; cleared by a success. Five days of it disables the endpoint.
    "failing_since" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "webhook_endpoints_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "webhook_endpoints_api_key_id_idx" ON "webhook_endpoints"("api_key_id");

CREATE TABLE "webhook_deliveries" (
    "id" BIGSERIAL NOT NULL,
    "endpoint_id" UUID NOT NULL,
    -- Null for a test delivery (POST /webhooks/{id}/test).
    "event_id" BIGINT,
    "state" TEXT NOT NULL,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TIMESTAMPTZ(3) NOT NULL,
    "lease_owner" TEXT,
    "last_status" INTEGER,
    "last_error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT now(),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "webhook_deliveries_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "webhook_deliveries_state_check" CHECK ("state" IN ('pending', 'delivered', 'failed')),
    CONSTRAINT "webhook_deliveries_endpoint_id_fkey" FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoints"("id") ON DELETE CASCADE
);
CREATE INDEX "webhook_deliveries_due_idx" ON "webhook_deliveries"("next_attempt_at") WHERE "state" = 'pending';
CREATE INDEX "webhook_deliveries_endpoint_id_id_idx" ON "webhook_deliveries"("endpoint_id", "id");

CREATE TABLE "webhook_attempts" (
    "id" BIGSERIAL NOT NULL,
    "delivery_id" BIGINT NOT NULL,
    "attempt" INTEGER NOT NULL,
    "started_at" TIMESTAMPTZ(3) NOT NULL,
    "duration_ms" INTEGER NOT NULL,
    -- The address connected to, after the target check.
    "ip" TEXT,
    "status_code" INTEGER,
    "error" TEXT,

    CONSTRAINT "webhook_attempts_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "webhook_attempts_delivery_id_fkey" FOREIGN KEY ("delivery_id") REFERENCES "webhook_deliveries"("id") ON DELETE CASCADE
);
CREATE INDEX "webhook_attempts_delivery_id_idx" ON "webhook_attempts"("delivery_id");

-- An endpoint disabled after failing for five days is itself an event of its key, with no
-- message or recipient.
ALTER TABLE "events" ALTER COLUMN "message_id" DROP NOT NULL, ALTER COLUMN "recipient_id" DROP NOT NULL,
  ADD COLUMN "endpoint_id" UUID;
ALTER TABLE "events" DROP CONSTRAINT "events_type_check", ADD CONSTRAINT "events_type_check" CHECK ("type" IN (
  'message.queued', 'message.scheduled', 'message.delivered', 'message.deferred', 'message.bounced', 'message.failed', 'message.cancelled',
  'webhook.disabled'));
