#!/usr/bin/env bash
# Smoke run on whatever `node` is first on PATH: start the local STARTTLS sink and
# `sealpost start` (through bin/sealpost.js, as the image runs it) on a fresh Postgres
# database, send one message with "tls": "required", wait until the sink holds it and
# the API says delivered over verified TLS, then stop sealpost with SIGTERM and check
# that it exited cleanly. Needs Postgres on 127.0.0.1:5432 (CI's).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
db="sealpost_smoke_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "smoke: $*" >&2; echo "--- sealpost log" >&2; cat "$work/sealpost.log" >&2 || true; exit 1; }

psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
sink_port=$((20000 + RANDOM % 20000)); api_port=$((sink_port + 1))
CERTS_DIR="$work/certs" SINK_PORT=$sink_port node scripts/smtp-sink.ts >"$work/sink.log" 2>"$work/sink.err" &
pids+=($!)
until grep -q "STARTTLS sink" "$work/sink.err" 2>/dev/null; do sleep 0.1; done

DATABASE_URL="postgresql://postgres@127.0.0.1:5432/$db" CERTS_DIR="$work/certs" DATA_DIR="$work/data" \
  HOST=127.0.0.1 PORT=$api_port SMTP_RELAY_URL="smtp://localhost:$sink_port" SMTP_CA_FILE="$work/certs/ca.crt" \
  node bin/sealpost.js start >"$work/sealpost.log" 2>&1 &
sealpost=$!
pids+=($sealpost)
deadline=$((SECONDS + 60))
until key="$(grep -o 'sp_[A-Za-z0-9_-]*' "$work/sealpost.log" | head -1)" && [[ -n "$key" ]] && curl -sf --cacert "$work/certs/ca.crt" "https://localhost:$api_port/readyz" >/dev/null; do
  (( SECONDS < deadline )) || fail "sealpost did not become ready"
  sleep 0.2
done

api() { curl -sS --cacert "$work/certs/ca.crt" -H "Authorization: Bearer $key" "$@"; }
id="$(api "https://localhost:$api_port/send" -H 'Content-Type: application/json' \
  -d '{"from":"Shop <noreply@shop.example>","to":"alice@example.com","subject":"Smoke","text":"hello","tls":"required"}' \
  | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);if(!r.id){console.error(s);process.exit(1)}console.log(r.id)})')" || fail "send was not accepted"
deadline=$((SECONDS + 30))
until api "https://localhost:$api_port/messages/$id" | grep -q '"status":"delivered".*"verified":true'; do
  (( SECONDS < deadline )) || fail "message $id was not delivered over verified TLS: $(api "https://localhost:$api_port/messages/$id")"
  sleep 0.2
done
grep -q "$id" "$work/sink.log" || fail "the sink did not receive $id"

kill -TERM "$sealpost"
deadline=$((SECONDS + 20))
while kill -0 "$sealpost" 2>/dev/null; do
  (( SECONDS < deadline )) || fail "sealpost did not stop within 20 s of SIGTERM"
  sleep 0.1
done
status=0; wait "$sealpost" || status=$?
(( status == 0 )) || fail "sealpost exited with $status after SIGTERM"
echo "smoke: node $(node --version): sent $id, delivered over verified TLS, clean stop on SIGTERM"
