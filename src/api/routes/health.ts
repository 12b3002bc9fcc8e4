import { ping } from "../../db/health.ts";
import { AppError } from "../../domain/errors.ts";
import { defineRoute } from "../route.ts";
import { HealthSchema, ReadySchema } from "../schemas.ts";

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
  summary: "Readiness: the database answers; says where rate limits are counted",
  description: "Redis being away does not make the process unready: it keeps serving with limits counted per process, and says so here.",
  scope: null,
  tags: ["operations"],
  responses: { 200: { description: "Ready", schema: ReadySchema } },
  errors: [503],
  async handler(_input, deps) {
    try {
      await ping(deps.db);
    } catch (cause) {
      throw new AppError("service_unavailable", "the database is not reachable", { cause });
    }
    return { status: "ok" as const, rate_limits: deps.counters.mode() };
  },
});
