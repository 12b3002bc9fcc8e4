// Headers for a JSON API that browsers should never render or cache: HSTS for two
// years, a CSP that allows nothing and no framing, no sniffing, no caching. The one
// page meant for a browser, the API reference at /docs, gets a CSP of its own.
import type { FastifyInstance, RouteShorthandOptions } from "fastify";
import helmet from "@fastify/helmet";

export async function registerSecurityHeaders(app: FastifyInstance): Promise<void> {
  await app.register(helmet, {
    global: true,
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    hsts: { maxAge: 63_072_000, includeSubDomains: true, preload: false },
    crossOriginResourcePolicy: { policy: "same-origin" },
    referrerPolicy: { policy: "no-referrer" },
    xFrameOptions: { action: "deny" },
  });
  // no-store unless a route chose otherwise (only the versioned files of the API reference do).
  app.addHook("onSend", async (_req, reply) => {
    if (!reply.hasHeader("cache-control")) reply.header("cache-control", "no-store");
  });
}

/**
 * The CSP of the API reference page: exactly what Swagger UI needs and nothing from
 * another origin. Scripts and the stylesheet are files served by sealpost ('self', no
 * inline script, no eval); the stylesheet's icons are data: URIs; the one request the
 * page makes is for /openapi.yaml ('self'). No forms, no <base>, no framing.
 */
export function apiReferenceHelmet(): NonNullable<RouteShorthandOptions["helmet"]> {
  return {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'none'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", "data:"],
        connectSrc: ["'self'"],
        baseUri: ["'none'"],
        formAction: ["'none'"],
        frameAncestors: ["'none'"],
      },
    },
  };
}
