-- A sender domain's bounce domain (issue 11) is used as the envelope sender only once
-- DNS shows it routed to sealpost (its MX) and covered by SPF: bounce_verified_at says
-- since when. NULL: the envelope sender stays the From address.

-- AlterTable
ALTER TABLE "sender_domains" ADD COLUMN     "bounce_verified_at" TIMESTAMPTZ(3);
