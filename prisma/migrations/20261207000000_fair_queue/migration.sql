-- Fair queueing (issue 14): the claim takes due deliveries in turns across API keys, so one
-- key's burst does not hold another key's password reset behind it, and a message sent
-- with "priority": "high" goes first within its key's turn (db/deliveries.ts, CLAIM_SQL).
ALTER TABLE "messages" ADD COLUMN "priority" TEXT NOT NULL DEFAULT 'normal';
ALTER TABLE "messages" ADD CONSTRAINT "messages_priority_check" CHECK ("priority" IN ('normal', 'high'));

-- The key and the priority are copied onto the queue row so that the claim finds each
-- key's due rows in one index, without reading messages.
ALTER TABLE "deliveries" ADD COLUMN "api_key_id" TEXT;
ALTER TABLE "deliveries" ADD COLUMN "high_priority" BOOLEAN NOT NULL DEFAULT false;
UPDATE "deliveries" d SET "api_key_id" = m."api_key_id" FROM "messages" m WHERE m."id" = d."message_id";
ALTER TABLE "deliveries" ALTER COLUMN "api_key_id" SET NOT NULL;

-- Only rows still to send are in it: finished rows, the bulk of the table, cost the claim nothing.
CREATE INDEX "deliveries_claim_idx" ON "deliveries"("api_key_id", "high_priority" DESC, "next_attempt_at") WHERE "state" = 'pending';
DROP INDEX "deliveries_state_next_attempt_at_idx";
