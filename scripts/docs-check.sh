#!/usr/bin/env bash
# Opens the API reference (GET /docs) in headless Chromium (Debian package `chromium`)
# against a scratch sealpost (API only, embedded database, development certificates)
# and checks what a unit test cannot: that Swagger UI really renders every path of
# openapi.yaml, that a deep link to an operation shows its examples, and that the
# browser reported nothing on its console, in particular no Content-Security-Policy
# violation. Chromium trusts exactly the scratch server's key (SPKI pin), and every host
# name but localhost resolves to nothing, so the page cannot load anything from elsewhere.
#   npm run docs:check            (about 20 s)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "chromium is not installed: apt-get install chromium" >&2; exit 2; }

. scripts/scratch-sealpost.sh
scratch_sealpost "${DOCS_CHECK_PORT:-18645}"
spki=$(openssl x509 -in "$work/certs/server.crt" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)

# Renders one URL; the DOM goes to $work/$2.html, the browser's log to $work/$2.log.
render() {
  timeout 120 chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$work/chrome-$2" \
    --ignore-certificate-errors-spki-list="$spki" --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE localhost" \
    --enable-logging=stderr --v=0 --virtual-time-budget=15000 --dump-dom "$1" >"$work/$2.html" 2>"$work/$2.log"
}
render "https://localhost:$port/docs" index
render "https://localhost:$port/docs#/messages/getMessage" getMessage

node - "$work" <<'JS'
const fs = require("node:fs");
const { parse } = require("yaml");
const work = process.argv[2];
const read = (f) => fs.readFileSync(`${work}/${f}`, "utf8");
const failures = [];
const spec = parse(fs.readFileSync("openapi.yaml", "utf8"));
const rendered = [...read("index.html").matchAll(/data-path="([^"]+)"/g)].map((m) => m[1]);
const missing = Object.keys(spec.paths).filter((p) => !rendered.includes(p));
console.log(`paths rendered: ${new Set(rendered).size} of ${Object.keys(spec.paths).length}`);
if (missing.length) failures.push(`paths not rendered: ${missing.join(", ")}`);
const op = read("getMessage.html");
for (const text of ["next_attempt_at", "expires_at", "mx1.example.com", "no message with this id"])
  if (!op.includes(text)) failures.push(`the getMessage deep link does not show ${text}`);
for (const f of ["index.log", "getMessage.log"]) {
  const console_ = read(f).split("\n").filter((l) => /:CONSOLE/.test(l));
  console.log(`${f}: ${console_.length} console message(s)`);
  for (const l of console_) failures.push(`${f}: ${l.replace(/^\[[^\]]*\]\s*/, "")}`);
}
for (const f of failures) console.log(`  FAIL ${f}`);
process.exit(failures.length ? 1 : 0);
JS
echo "docs:check passed"
