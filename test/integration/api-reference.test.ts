// GET /docs, the browsable API reference: an HTML page whose every asset is served by
// sealpost itself, from the swagger-ui-dist package, under a Content-Security-Policy
// that allows only same-origin scripts and styles and no inline code; and the document
// it renders is /openapi.yaml.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { openApiYaml } from "../../src/api/openapi.ts";

const swaggerDir = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));

let app: TestApp;
before(async () => {
  app = await startTestApp();
});
after(() => app?.close());

/** The CSP header as a map of directive to its sources. */
function csp(header: string | string[] | undefined): Map<string, string[]> {
  assert.equal(typeof header, "string", "one Content-Security-Policy header");
  return new Map(
    (header as string)
      .split(";")
      .map((d) => d.trim().split(/\s+/))
      .filter((d) => d[0])
      .map(([name, ...sources]) => [name!, sources]),
  );
}

/** Every URL the page refers to in src= or href=. */
const referencedUrls = (html: string) => [...html.matchAll(/\s(?:src|href)="([^"]*)"/g)].map((m) => m[1]!);

test("GET /docs is an HTML page whose assets are all same-origin paths, without inline script or style", async () => {
  const r = await app.call("GET", "/docs");
  assert.equal(r.status, 200);
  assert.match(String(r.headers["content-type"]), /^text\/html; charset=utf-8$/);
  const urls = referencedUrls(r.body);
  assert.ok(urls.some((u) => u.endsWith(".js")) && urls.some((u) => u.endsWith(".css")), urls.join(" "));
  for (const u of urls) assert.match(u, /^\/(?!\/)[\w./-]+$/, `${u} is not a same-origin path`);
  assert.doesNotMatch(r.body, /https?:|\/\/[a-z]/i, "no absolute URL anywhere in the page");
  // Every script is an external file: the CSP below allows no inline code.
  for (const m of r.body.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)) {
    assert.match(m[1]!, /\ssrc="/, "a script without src");
    assert.equal(m[2]!.trim(), "", "inline script");
  }
  assert.doesNotMatch(r.body, /<style|\sstyle=|\son\w+=/i, "inline style or event handler");
});

test("each asset of /docs answers 200 with its content type, and the package's files are served as shipped", async () => {
  const page = await app.call("GET", "/docs");
  const expectedType: Record<string, RegExp> = { ".js": /^text\/javascript; charset=utf-8$/, ".css": /^text\/css; charset=utf-8$/ };
  const urls = referencedUrls(page.body);
  assert.equal(urls.length, 3, `the bundle, its stylesheet and the start-up script: ${urls.join(" ")}`);
  for (const url of urls) {
    const r = await app.call("GET", url);
    assert.equal(r.status, 200, url);
    const ext = url.slice(url.lastIndexOf("."));
    assert.match(String(r.headers["content-type"]), expectedType[ext]!, url);
    assert.equal(r.headers["x-content-type-options"], "nosniff", url);
    assert.ok(r.body.length > 0, url);
    const file = url.split("/").pop()!;
    if (file.startsWith("swagger-ui")) {
      assert.equal(r.body, readFileSync(join(swaggerDir, file), "utf8"), `${url} is the package's ${file}`);
      assert.match(String(r.headers["cache-control"]), /immutable/, `${url}: versioned, so cacheable`);
      assert.match(url, /\/swagger-ui-\d+\.\d+\.\d+\//, `${url} carries the package version`);
    }
  }
});

test("the page loads /openapi.yaml, which is this contract, and nothing from another origin", async () => {
  const page = await app.call("GET", "/docs");
  const init = referencedUrls(page.body).find((u) => u.endsWith("/init.js"));
  assert.ok(init, "the page has its start-up script");
  const js = (await app.call("GET", init)).body;
  const specUrls = [...js.matchAll(/\burl:\s*"([^"]*)"/g)].map((m) => m[1]);
  assert.deepEqual(specUrls, ["/openapi.yaml"]);
  assert.match(js, /validatorUrl:\s*null/, "no badge from a third-party validator");
  assert.doesNotMatch(js, /https?:\/\//);
  const spec = await app.call("GET", "/openapi.yaml");
  assert.equal(spec.status, 200);
  assert.equal(spec.body, openApiYaml());
  assert.match(spec.body, /\/docs:\n\s+get:\n\s+operationId: getApiReference/, "the contract lists the page");
});

test("the page's CSP allows exactly same-origin scripts, styles and fetches, data: images, and no inline code or eval", async () => {
  const r = await app.call("GET", "/docs");
  const policy = csp(r.headers["content-security-policy"]);
  assert.deepEqual(Object.fromEntries(policy), {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "base-uri": ["'none'"],
    "form-action": ["'none'"],
    "frame-ancestors": ["'none'"],
  });
  assert.equal(r.headers["cache-control"], "no-store");
  assert.ok(r.headers["strict-transport-security"], "HSTS as everywhere");
  // The API keeps its own CSP, which allows nothing.
  const api = await app.call("GET", "/healthz");
  assert.deepEqual(Object.fromEntries(csp(api.headers["content-security-policy"])), { "default-src": ["'none'"], "frame-ancestors": ["'none'"] });
  assert.equal(api.headers["cache-control"], "no-store");
});
