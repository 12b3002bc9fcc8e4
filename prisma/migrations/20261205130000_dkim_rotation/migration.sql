-- DKIM key rotation (issue 11): a key signs only once its DNS record was seen right
-- (verified_at), so a rotation's new selector takes over only after it verifies. When it
-- does, the keys it replaces get retired_at = now + DKIM_ROTATION_GRACE: until then they
-- stay published (mail signed with them still verifies) but no longer sign; retired_at may
-- therefore lie in the future. Keys of a domain verified before this migration count as
-- seen when their domain was.

-- AlterTable
ALTER TABLE "dkim_keys" ADD COLUMN     "verified_at" TIMESTAMPTZ(3);

UPDATE "dkim_keys" k SET "verified_at" = d."verified_at"
  FROM "sender_domains" d
 WHERE k."domain_id" = d."id" AND d."verified_at" IS NOT NULL;
