// GET /docs: a browsable reference of openapi.yaml, rendered in the browser by Swagger UI
// from the swagger-ui-dist package. Everything the page loads is served here, from the
// package (its standalone bundle and stylesheet) and from this file (the page and the
// script that starts it): no CDN, no inline script, and a Content-Security-Policy that
// allows only that (security-headers.ts, useApiReferencePolicy).
//
// It is not an operation in ROUTES (those are JSON operations with zod schemas); its
// entry in openapi.yaml is written by openapi.ts, like GET /openapi.yaml.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { FastifyInstance } from "fastify";
import { useApiReferencePolicy } from "../plugins/security-headers.ts";

const packageDir = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
const version = (JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { version: string }).version;

/** Where the package's files are served: versioned, so a browser may keep them for good. */
const ASSETS = `/docs/assets/swagger-ui-${version}`;
const SPEC_URL = "/openapi.yaml";

// Read once, on first use, straight from the package.
const fromPackage = (file: string): (() => Buffer) => {
  let data: Buffer | undefined;
  return () => (data ??= readFileSync(join(packageDir, file)));
};

// Swagger UI without its top bar (which would let the page load other documents), with
// "Try it out" off: this page documents; requests carrying an API key are made with
// curl or a client, not from a browser tab. validatorUrl: null keeps it from fetching a
// badge from a third-party validator.
const INIT_JS = `// Starts Swagger UI on sealpost's contract. A file, not an inline script, so the page's
// Content-Security-Policy needs no 'unsafe-inline'.
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: ${JSON.stringify(SPEC_URL)},
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    supportedSubmitMethods: [],
    defaultModelsExpandDepth: 0,
    docExpansion: "list",
  });
});
`;

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sealpost API reference</title>
<link rel="stylesheet" href="${ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="${ASSETS}/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script>
</body>
</html>
`;

const IMMUTABLE = "public, max-age=31536000, immutable";

export function registerApiReference(app: FastifyInstance): void {
  const bundle = fromPackage("swagger-ui-bundle.js");
  const css = fromPackage("swagger-ui.css");
  const open = { config: { scope: null } };
  app.get("/docs", open, async (_req, reply) => useApiReferencePolicy(reply).type("text/html; charset=utf-8").send(PAGE));
  app.get("/docs/assets/init.js", open, async (_req, reply) => reply.type("text/javascript; charset=utf-8").send(INIT_JS));
  app.get(`${ASSETS}/swagger-ui-bundle.js`, open, async (_req, reply) =>
    reply.type("text/javascript; charset=utf-8").header("cache-control", IMMUTABLE).send(bundle()),
  );
  app.get(`${ASSETS}/swagger-ui.css`, open, async (_req, reply) => reply.type("text/css; charset=utf-8").header("cache-control", IMMUTABLE).send(css()));
}
