-- Data keys known to this database (src/security/data-key-check.ts). Each row holds a
-- check value: a fixed text AES-256-GCM encrypted under the key with that id, so a
-- process can tell at start whether the key it was given under that id is the right
-- one, and which key ids stored content may need. No key material is stored.

-- CreateTable
CREATE TABLE "data_keys" (
    "id" TEXT NOT NULL,
    "check_value" BYTEA,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "encrypting_since" TIMESTAMPTZ(3),
    "retired_at" TIMESTAMPTZ(3),

    CONSTRAINT "data_keys_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "data_keys_id_check" CHECK ("id" ~ '^[A-Za-z0-9_-]{1,32}$'),
    CONSTRAINT "data_keys_retired_check" CHECK ("retired_at" IS NULL OR "encrypting_since" IS NOT NULL)
);

-- Content stored before this table existed: its key ids are recorded as in use, without
-- a check value; the first process that holds such a key proves it against a stored
-- value and writes the check value then. Layout of a stored value: version(1)=1 |
-- keyIdLength(1) | keyId | nonce | tag | ciphertext (src/security/content-cipher.ts).
INSERT INTO "data_keys" ("id", "encrypting_since")
SELECT DISTINCT encode(substring(c.v from 3 for get_byte(c.v, 1)), 'escape'), CURRENT_TIMESTAMP
  FROM "messages" m
 CROSS JOIN LATERAL (VALUES (m."subject"), (m."text_body"), (m."html_body"), (m."headers"), (m."attachments")) AS c(v)
 WHERE c.v IS NOT NULL AND length(c.v) > 2 AND get_byte(c.v, 0) = 1;
