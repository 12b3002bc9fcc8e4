-- The DKIM selectors that signed the bytes of each attempt (issue 11): empty when the
-- message went out unsigned. Part of the evidence, like the TLS session it went over.
ALTER TABLE "delivery_attempts" ADD COLUMN "dkim_selectors" TEXT[] DEFAULT ARRAY[]::TEXT[];
