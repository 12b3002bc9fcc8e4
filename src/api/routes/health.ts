import { ping } from "../../db/health.ts";
import { AppError } from "../../domain/errors.ts";
import { defineRoute } from "../route.ts";
import { HealthSchema } from "../schemas.ts";

export const healthz = defineRoute({
  operationId: "healthz",
  method: "GET",
  url: "/healthz",
  summary: "Liveness: the process answers",
  scope: null,
  tags: ["operations"],
  responses: { 200: { description: "Alive", schema: HealthSchema } },
  errors: [],
  async handler() {
    return { status: "ok" as const };
  },
});

export const readyz = defineRoute({
  operationId: "readyz",
  method: "GET",
  url: "/readyz",
  summary: "Readiness: the database answers",
  scope: null,
  tags: ["operations"],
  responses: { 200: { description: "Ready", schema: HealthSchema } },
  errors: [503],
  async handler(_input, deps) {
    try {
      await ping(deps.db);
    } catch (cause) {
      throw new AppError("service_unavailable", "the database is not reachable", { cause });
    }
    return { status: "ok" as const };
  },
});
