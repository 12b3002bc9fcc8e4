// Headers for a JSON API that browsers should never render or cache: HSTS for two
// years, a CSP that allows nothing and no framing, no sniffing, no caching. The one
// page meant for a browser, the API reference at /docs, gets a CSP of its own.
//
// helmet decides the headers; they depend on nothing in the request, so they are
// worked out once at start-up (helmet's middleware run against a recorder) and set on
// every reply by one hook. @fastify/helmet, used before, built helmet's middleware
// again for every request, parsing the CSP directives each time: about 4% of the CPU
// of POST /send (issue 10).
import type { FastifyInstance, FastifyReply } from "fastify";
import helmet, { contentSecurityPolicy, type HelmetOptions } from "helmet";

type Middleware = (req: never, res: { setHeader(name: string, value: string): void; removeHeader(name: string): void }, next: (err?: unknown) => void) => void;

/** The headers a helmet middleware sets, in the order it sets them, with lower-case names. */
function headersOf(middleware: Middleware): Record<string, string> {
  const headers: Record<string, string> = {};
  let failed: unknown;
  middleware(
    {} as never, // static options: no middleware reads the request
    {
      setHeader: (name, value) => void (headers[name.toLowerCase()] = String(value)),
      removeHeader: (name) => void delete headers[name.toLowerCase()],
    },
    (err) => void (failed = err),
  );
  if (failed) throw failed;
  return headers;
}

const OPTIONS: HelmetOptions = {
  contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  hsts: { maxAge: 63_072_000, includeSubDomains: true, preload: false },
  crossOriginResourcePolicy: { policy: "same-origin" },
  referrerPolicy: { policy: "no-referrer" },
  xFrameOptions: { action: "deny" },
};

export function registerSecurityHeaders(app: FastifyInstance): void {
  const headers = headersOf(helmet(OPTIONS) as unknown as Middleware);
  // onRequest, so that every answer has them, errors (401, 404, 429) included.
  app.addHook("onRequest", (_req, reply, done) => {
    reply.headers(headers);
    done();
  });
  // no-store unless a route chose otherwise (only the versioned files of the API reference do).
  app.addHook("onSend", (_req, reply, payload, done) => {
    if (!reply.hasHeader("cache-control")) reply.header("cache-control", "no-store");
    done(null, payload);
  });
}

/**
 * The CSP of the API reference page: exactly what Swagger UI needs and nothing from
 * another origin. Scripts and the stylesheet are files served by sealpost ('self', no
 * inline script, no eval); the stylesheet's icons are data: URIs; the one request the
 * page makes is for /openapi.yaml ('self'). No forms, no <base>, no framing.
 */
const API_REFERENCE_CSP = headersOf(
  contentSecurityPolicy({
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
  }) as unknown as Middleware,
);

/** Replaces the API's CSP with the API reference page's. */
export function useApiReferencePolicy(reply: FastifyReply): FastifyReply {
  return reply.headers(API_REFERENCE_CSP);
}
