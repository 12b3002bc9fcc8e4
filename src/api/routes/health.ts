import { z } from "zod";
import { AppError } from "../../domain/errors.ts";
import { defineRoute } from "../route.ts";

const Health = z.object({ status: z.literal("ok") }).meta({ id: "Health" });

export const healthz = defineRoute({
  operationId: "healthz",
  method: "GET",
  url: "/healthz",
  summary: "Liveness: the process answers",
  scope: null,
  tags: ["operations"],
  responses: { 200: { description: "Alive", schema: Health } },
  errors: [],
  async handler() {
    return { status: "ok" };
  },
});

export const readyz = defineRoute({
  operationId: "readyz",
  method: "GET",
  url: "/readyz",
  summary: "Readiness: the database answers",
  scope: null,
  tags: ["operations"],
  responses: { 200: { description: "Ready", schema: Health } },
  errors: [503],
  async handler(_input, deps) {
    try {
      await deps.db.pool.query("SELECT 1");
    } catch (cause) {
      throw new AppError("service_unavailable", "the database is not reachable", { cause });
    }
    return { status: "ok" };
  },
});
