-- Suppression list (issue 13): addresses a sender domain no longer mails, because they
-- bounced for good, complained, or were added by hand. Scoped per sender domain (the From
-- domain), as Mailgun does: one merchant's bounces and complaints never block another's
-- password resets, while every key that sends from the domain shares its list.
CREATE TABLE "suppressions" (
    "id" BIGSERIAL NOT NULL,
    -- Both lower-cased: the list is matched case-insensitively, as mailbox providers treat addresses.
    "sender_domain" TEXT NOT NULL,
    "address" TEXT NOT NULL,
    "reason" TEXT NOT NULL,
    -- The evidence: the message and recipient whose reply (or report) put the address here,
    -- the reply's codes and text; for a manual entry, the key that added it and its note.
    "message_id" UUID,
    "recipient_id" BIGINT,
    "reply_code" INTEGER,
    "enhanced_code" TEXT,
    "reply_text" TEXT,
    "api_key_id" TEXT,
    "description" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT now(),

    CONSTRAINT "suppressions_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "suppressions_reason_check" CHECK ("reason" IN ('hard_bounce', 'complaint', 'manual'))
);
CREATE UNIQUE INDEX "suppressions_sender_domain_address_key" ON "suppressions"("sender_domain", "address");
CREATE INDEX "suppressions_sender_domain_id_idx" ON "suppressions"("sender_domain", "id");

-- A recipient on the list is not attempted: it is 'suppressed' at once, with an event; a
-- message whose every recipient is is 'suppressed' too. A complaint about a delivered
-- message is an event of its own (the recipient stays delivered).
ALTER TABLE "recipients" DROP CONSTRAINT "recipients_status_check", ADD CONSTRAINT "recipients_status_check" CHECK ("status" IN (
  'queued', 'scheduled', 'sending', 'deferred', 'delivered', 'bounced', 'failed', 'cancelled', 'suppressed'));
ALTER TABLE "messages" DROP CONSTRAINT "messages_status_check", ADD CONSTRAINT "messages_status_check" CHECK ("status" IN (
  'queued', 'scheduled', 'sending', 'deferred', 'delivered', 'partially_delivered', 'bounced', 'failed', 'cancelled', 'suppressed'));
ALTER TABLE "events" DROP CONSTRAINT "events_type_check", ADD CONSTRAINT "events_type_check" CHECK ("type" IN (
  'message.queued', 'message.scheduled', 'message.delivered', 'message.deferred', 'message.bounced', 'message.failed', 'message.cancelled',
  'message.suppressed', 'message.complained', 'webhook.disabled'));
