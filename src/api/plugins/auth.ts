// Bearer authentication for every route that declares a scope. Runs in onRequest,
// after the per-IP rate limit and before the body is read, so an unauthenticated
// client cannot make the server parse a large body. A client with too many failed
// authentications is refused before its key is looked at (auth-failures.ts).
import type { FastifyInstance, FastifyRequest } from "fastify";
import { AppError } from "../../domain/errors.ts";
import type { ApiKeyRecord, ApiKeyVerifier, Scope } from "../../services/api-keys.ts";
import type { AuthFailures } from "./auth-failures.ts";

declare module "fastify" {
  interface FastifyRequest {
    apiKey: ApiKeyRecord | null;
  }
  interface FastifyContextConfig {
    scope?: Scope | null;
  }
}

const QUERY_KEY_NAMES = ["api_key", "apikey", "key", "access_token", "token"];

export function registerAuth(app: FastifyInstance, verifier: ApiKeyVerifier, failures: AuthFailures): void {
  app.decorateRequest("apiKey", null);
  app.addHook("onRequest", async (request: FastifyRequest) => {
    const scope = request.routeOptions.config?.scope;
    if (!scope) return;
    const wait = await failures.blockedFor(request.ip);
    if (wait > 0)
      throw new AppError("rate_limited", `too many failed authentications from this client address; retry in ${wait} s`, {
        headers: { "retry-after": String(wait) },
      });
    try {
      request.apiKey = await authenticate(request, verifier, scope);
    } catch (err) {
      if (err instanceof AppError && err.code === "unauthorized") await failures.failed(request.ip);
      throw err;
    }
  });
}

/** The key of the request's Authorization header, if it has the route's scope; AppError otherwise. */
async function authenticate(request: FastifyRequest, verifier: ApiKeyVerifier, scope: Scope): Promise<ApiKeyRecord> {
  const q = request.query as Record<string, unknown> | undefined;
  if (q && QUERY_KEY_NAMES.some((n) => n in q))
    throw new AppError("unauthorized", "API keys are accepted only in the Authorization header, never in the URL");
  const header = request.headers.authorization;
  if (!header) throw new AppError("unauthorized", "missing Authorization: Bearer <key> header");
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  if (!m) throw new AppError("unauthorized", "the Authorization header must use the Bearer scheme");
  const key = await verifier.verify(m[1]!);
  if (!key.scopes.includes(scope)) throw new AppError("forbidden", `this API key lacks the "${scope}" scope`);
  return key;
}
