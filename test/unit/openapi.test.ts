// openapi.yaml is the published contract. It is generated from the same route objects
// and zod schemas that serve requests; these tests keep the committed file equal to
// the code, complete (every route, every error as RFC 9457 problem+json) and valid
// OpenAPI 3.1 whose schemas are valid JSON Schema 2020-12 (the OAS 3.1 dialect).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse } from "yaml";
import { Ajv2020 } from "ajv/dist/2020.js";
import { openApiYaml } from "../../src/api/openapi.ts";
import { ROUTES } from "../../src/api/routes/index.ts";
import { problem } from "../../src/api/problem.ts";
import { ERROR_CODES, type ErrorCode } from "../../src/domain/errors.ts";
import { validSend } from "../helpers/app.ts";

const FILE = resolve(import.meta.dirname, "../../openapi.yaml");
const committed = readFileSync(FILE, "utf8");
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const doc: any = parse(committed);
const PROBLEM_REF = "#/components/schemas/Problem";
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

test("the committed openapi.yaml is what the code generates", () => {
  const generated = openApiYaml();
  if (committed === generated) return;
  const a = committed.split("\n");
  const b = generated.split("\n");
  let i = 0;
  while (i < Math.max(a.length, b.length) && a[i] === b[i]) i++;
  assert.fail(
    `openapi.yaml is stale; run \`npm run openapi\` and commit it.\n` +
      `first difference at line ${i + 1}:\n  committed: ${JSON.stringify(a[i])}\n  generated: ${JSON.stringify(b[i])}`,
  );
});

test("every route is documented under its path, method, operationId and scope", () => {
  const ids = new Set<string>();
  for (const r of ROUTES) {
    const path = r.url.replace(/:(\w+)/g, "{$1}");
    const op = doc.paths?.[path]?.[r.method.toLowerCase()];
    assert.ok(op, `${r.method} ${path} is missing from openapi.yaml`);
    assert.equal(op.operationId, r.operationId);
    assert.ok(!ids.has(r.operationId), `operationId ${r.operationId} is used twice`);
    ids.add(r.operationId);
    assert.deepEqual(op.security, r.scope ? [{ bearer: [r.scope] }] : []);
    for (const status of r.errors) assert.ok(op.responses[String(status)], `${r.operationId} does not document ${status}`);
    for (const p of path.match(/\{(\w+)\}/g) ?? [])
      assert.ok(op.parameters?.some((x: { in: string; name: string }) => x.in === "path" && `{${x.name}}` === p), `${r.operationId}: path parameter ${p}`);
  }
  assert.ok(doc.paths["/openapi.yaml"]?.get, "the contract documents where it is served");
});

test("every non-2xx response of every operation is a Problem", () => {
  let checked = 0;
  for (const [path, item] of Object.entries<Record<string, { operationId: string; responses: Record<string, any> }>>(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      assert.ok(op.operationId, `${method} ${path} has an operationId`);
      for (const [status, resp] of Object.entries(op.responses)) {
        if (/^2\d\d$/.test(status)) continue;
        const content = resp.content ?? {};
        assert.deepEqual(Object.keys(content), ["application/problem+json"], `${op.operationId} ${status}`);
        assert.equal(content["application/problem+json"].schema?.$ref, PROBLEM_REF, `${op.operationId} ${status}`);
        if (status === "401") assert.ok(resp.headers?.["WWW-Authenticate"], `${op.operationId} 401 documents WWW-Authenticate`);
        if (status === "429" || status === "503") assert.ok(resp.headers?.["Retry-After"], `${op.operationId} ${status} documents Retry-After`);
        checked++;
      }
    }
  }
  assert.ok(checked > ROUTES.length, "error responses were actually checked");
  // The closed code list is in the contract, the same list as in the code.
  assert.deepEqual(doc.components.schemas.Problem.properties.code.enum, Object.keys(ERROR_CODES));
});

test("a 503 from POST /send and /send/batch says it may have stored the message, and how to retry without duplicates", () => {
  for (const path of ["/send", "/send/batch"]) {
    const text: string = doc.paths[path].post.responses["503"].description;
    assert.match(text, /Retry-After/, path);
    assert.match(text, /may (still )?commit/, `${path}: a 503 is not a promise that nothing was stored`);
    assert.match(text, /Idempotency-Key/, `${path}: names the safe way to retry`);
  }
});

/** Walk the document, yielding every $ref value with where it was found. */
function* refs(node: unknown, at = "#"): Generator<[string, string]> {
  if (Array.isArray(node)) for (const [i, v] of node.entries()) yield* refs(v, `${at}/${i}`);
  else if (node && typeof node === "object")
    for (const [k, v] of Object.entries(node)) {
      if (k === "$ref" && typeof v === "string") yield [v, at];
      else yield* refs(v, `${at}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`);
    }
}

function resolvePointer(root: unknown, ref: string): unknown {
  assert.ok(ref.startsWith("#/"), `only local references are expected, got ${ref}`);
  return ref
    .slice(2)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce<unknown>((n, key) => (n && typeof n === "object" ? (n as Record<string, unknown>)[key] : undefined), root);
}

test("it is OpenAPI 3.1 with resolvable references and valid JSON Schema 2020-12 components", () => {
  assert.match(doc.openapi, /^3\.1\.\d+$/);
  assert.equal(typeof doc.info?.title, "string");
  assert.equal(typeof doc.info?.version, "string");
  assert.ok(doc.paths && typeof doc.paths === "object");
  for (const path of Object.keys(doc.paths)) assert.match(path, /^\//);
  assert.equal(doc.components?.securitySchemes?.bearer?.scheme, "bearer");

  let count = 0;
  for (const [ref, at] of refs(doc)) {
    assert.ok(resolvePointer(doc, ref) !== undefined, `${at}: $ref ${ref} does not resolve`);
    count++;
  }
  assert.ok(count > 0);

  // Compile each component with Ajv in strict mode, its references pointed at a
  // single bundle of all components.
  const bundleId = "urn:sealpost:openapi";
  const retarget = (v: unknown): unknown =>
    JSON.parse(JSON.stringify(v).replace(/"#\/components\/schemas\//g, `"${bundleId}#/$defs/`));
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  ajv.addFormat("date-time", true).addFormat("email", true).addFormat("uuid", true).addFormat("uri", true);
  ajv.addSchema({ $id: bundleId, $defs: retarget(doc.components.schemas) as object });
  const validators = new Map<string, ReturnType<typeof ajv.compile>>();
  for (const name of Object.keys(doc.components.schemas)) validators.set(name, ajv.compile({ $ref: `${bundleId}#/$defs/${name}` }));

  // What the error handler sends and what a client is told to send fit the schemas.
  const isProblem = validators.get("Problem")!;
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    const p = problem(code, "detail", "req-1", code === "invalid_request" ? { errors: [{ path: "to", message: "bad" }] } : {});
    assert.ok(isProblem(p), `problem(${code}) does not match the Problem schema: ${ajv.errorsText(isProblem.errors)}`);
  }
  const sendRequest = validators.get("SendRequest");
  assert.ok(sendRequest, "SendRequest is a named component");
  assert.ok(sendRequest(validSend()), ajv.errorsText(sendRequest.errors));
  assert.equal(sendRequest({ ...validSend(), status: "delivered" }), false, "unknown fields are refused by the contract too");
});
