-- Signed delivery receipts (issue 15, item 7): GET /messages/{id}/receipt is a JWS signed
-- with an Ed25519 key of the installation, verifiable offline against /.well-known/jwks.json.
CREATE TABLE "receipt_keys" (
    -- The JWS kid.
    "id" TEXT NOT NULL,
    -- The public key as a JWK (kty OKP, crv Ed25519, x), published in the JWKS.
    "public_jwk" JSONB NOT NULL,
    -- PKCS#8 PEM, encrypted under the data key like content, bound to the row.
    "private_key" BYTEA NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL,
    -- A retired key signs no more, and stays published so the receipts it signed still verify.
    "retired_at" TIMESTAMPTZ(3),

    CONSTRAINT "receipt_keys_pkey" PRIMARY KEY ("id")
);
-- At most one key signs.
CREATE UNIQUE INDEX "receipt_keys_one_active" ON "receipt_keys" ((true)) WHERE "retired_at" IS NULL;

-- What each attempt sent: the SHA-256 of the message as it went after DATA (signed), so a
-- receipt names the exact bytes delivered. Null for attempts that sent nothing.
ALTER TABLE "delivery_attempts" ADD COLUMN "message_sha256" TEXT;
