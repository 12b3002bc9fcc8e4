// A request that reaches the API while it closes (SIGTERM: pipelined behind one in flight,
// or on a keep-alive connection that was busy when the close began) gets an RFC 9457 503
// with Retry-After and Connection: close, so a client retries it elsewhere; the request in
// flight still finishes.
import { test } from "node:test";
import assert from "node:assert/strict";
import tls from "node:tls";
import { defineRoute } from "../../src/api/route.ts";
import { HealthSchema } from "../../src/api/schemas.ts";
import { ROUTES } from "../../src/api/routes/index.ts";
import { startTestApp } from "../helpers/app.ts";
import { waitFor } from "../helpers/wait.ts";

let release!: () => void;
const held = new Promise<void>((r) => (release = r));
let entered = false;

const slow = defineRoute({
  operationId: "closingTestSlow",
  method: "GET",
  url: "/closing-test/slow",
  summary: "answers once the test releases it",
  scope: null,
  tags: ["operations"],
  responses: { 200: { description: "Released", schema: HealthSchema } },
  errors: [],
  async handler() {
    entered = true;
    await held;
    return { status: "ok" as const };
  },
});

test("a request pipelined behind one in flight while the server closes: 503 problem with Retry-After, connection closed", async () => {
  const t = await startTestApp({}, { routes: [...ROUTES, slow] });
  const { port } = new URL(t.url);
  const socket = tls.connect({ host: "127.0.0.1", port: Number(port), ca: t.ca, servername: "localhost" });
  let text = "";
  socket.setEncoding("utf8");
  socket.on("data", (d: string) => (text += d));
  const ended = new Promise<void>((r) => socket.once("close", () => r()));
  await new Promise<void>((r, j) => socket.once("secureConnect", r).once("error", j));
  socket.write("GET /closing-test/slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
  await waitFor(() => entered, { what: "the slow request to be in its handler" });
  const closed = t.close();
  await waitFor(() => !t.app.server.listening, { what: "the server to stop listening" });
  // The next request on the busy connection arrives while the server closes.
  socket.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
  await waitFor(() => t.logs.some((l) => l.includes("shutting down")), { what: "the request to be refused" });
  release();
  await closed;
  await ended;
  const responses = text.split(/(?=HTTP\/1\.1 )/);
  assert.equal(responses.length, 2, text);
  assert.match(responses[0]!, /^HTTP\/1\.1 200 /, "the request in flight finishes");
  const second = responses[1]!;
  assert.match(second, /^HTTP\/1\.1 503 /);
  assert.match(second, /\r\nretry-after: \d+\r\n/i);
  assert.match(second, /\r\nconnection: close\r\n/i);
  assert.match(second, /\r\ncontent-type: application\/problem\+json/i);
  const body = JSON.parse(second.slice(second.indexOf("\r\n\r\n") + 4)) as { status: number; detail: string };
  assert.equal(body.status, 503);
  assert.match(body.detail, /shutting down/);
});
