// Prisma CLI configuration. sealpost applies migrations with its own runner
// (src/db/migrate.ts) so that air-gapped hosts without the schema engine work;
// the CLI is used for `prisma generate` and, where the engine exists, `migrate diff`.
import { defineConfig } from "prisma/config";

export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
  datasource: { url: process.env.DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/sealpost" },
});
