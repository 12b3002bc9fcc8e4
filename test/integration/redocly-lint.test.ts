// `redocly lint` over the committed openapi.yaml, as CI runs it (`npm run lint:openapi`),
// with its recommended ruleset. It must pass offline: telemetry is switched off
// (REDOCLY_TELEMETRY=off) and the update check suppressed, and a guard loaded into the
// child refuses and reports any TCP connection, so a future version that phones home
// fails here instead of hanging CI on an air-gapped runner.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
const CLI = resolve(createRequire(import.meta.url).resolve("@redocly/cli/package.json"), "../bin/cli.js");
const MARK = "sealpost-test: network connection attempted";

// Preloaded with --import: every net.Socket connect (which tls, http, https and fetch all
// go through) to a host is reported on stderr and refused. Unix-socket paths are allowed.
const NETWORK_GUARD = `
import net from "node:net";
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  let o = args[0];
  if (Array.isArray(o)) o = o[0];
  const isPath = (o && typeof o === "object" && o.path) || (typeof o === "string" && !/^\\d+$/.test(o));
  if (isPath) return connect.apply(this, args);
  const where = o && typeof o === "object" ? (o.host ?? "localhost") + ":" + o.port : String(o) + ":" + String(args[1] ?? "");
  process.stderr.write(${JSON.stringify(MARK)} + " " + where + "\\n");
  process.nextTick(() => this.destroy(Object.assign(new Error("network disabled by the test"), { code: "ENETUNREACH" })));
  return this;
};`;

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, ["--import", `data:text/javascript,${encodeURIComponent(NETWORK_GUARD)}`, CLI, ...args], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 25_000);
    child.once("error", rej);
    child.once("exit", (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

test("redocly lint passes on openapi.yaml without touching the network", { timeout: 30_000 }, async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true", CI: "true" };
  delete env.NODE_TEST_CONTEXT;
  delete env.NODE_OPTIONS;
  const r = await run(["lint", "openapi.yaml", "--format=stylish"], env);
  const out = `${r.stdout}\n${r.stderr}`;
  assert.ok(!out.includes(MARK), `redocly tried to reach the network:\n${out}`);
  assert.equal(r.code, 0, `redocly lint found errors:\n${out}`);
  assert.match(out, /openapi\.yaml/, "it linted the file");
});
