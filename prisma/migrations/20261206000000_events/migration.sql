-- Events (issue 12): one row per change of a recipient's status, written by the same
-- statement that makes the change (an outbox), so a rolled-back change has no event and a
-- committed one always has. Nothing updates an event.
--
-- txid is the writing transaction (pg_current_xact_id()). Readers page by (txid, id) and
-- only read events of transactions older than every one still running
-- (pg_snapshot_xmin): an id is drawn before its transaction commits, so paging by id alone
-- could skip an event that commits after a later one was read.
--
-- No foreign keys: every event is written by the statement that writes the rows it names,
-- and a foreign key check on the send path would lock the message row (FOR KEY SHARE) once
-- more per recipient.
CREATE TABLE "events" (
    "id" BIGSERIAL NOT NULL,
    "txid" XID8 NOT NULL DEFAULT pg_current_xact_id(),
    "type" TEXT NOT NULL,
    "api_key_id" TEXT NOT NULL,
    "message_id" UUID NOT NULL,
    "recipient_id" BIGINT NOT NULL,
    -- The attempt whose evidence the event carries (delivered, deferred, bounced, failed after an attempt).
    "attempt_id" BIGINT,
    -- The reply or reason at the time of the event (the recipient's last_* columns move on).
    "reply_code" INTEGER,
    "enhanced_code" TEXT,
    "reply_text" TEXT,
    -- deferred: when the next attempt is due.
    "retry_at" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT now(),

    CONSTRAINT "events_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "events_type_check" CHECK ("type" IN ('message.queued', 'message.scheduled', 'message.delivered', 'message.deferred',
                                                    'message.bounced', 'message.failed', 'message.cancelled'))
);

CREATE INDEX "events_api_key_id_txid_id_idx" ON "events"("api_key_id", "txid", "id");
CREATE INDEX "events_message_id_idx" ON "events"("message_id");
