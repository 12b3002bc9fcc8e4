# Sourced by the check scripts (tls-check.sh, docs-check.sh): starts a scratch sealpost
# (API only, embedded database, development certificates) in a temporary directory on
# port $1, waits until it answers /healthz over HTTPS, and stops it and removes the
# directory on exit (KEEP=1 keeps the directory). Sets $work, $port and $pid.
scratch_sealpost() {
  work=$(mktemp -d)
  port=$1
  trap 'kill "${pid:-}" 2>/dev/null; wait "${pid:-}" 2>/dev/null || true; [[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT
  DATA_DIR="$work/data" CERTS_DIR="$work/certs" HOST=127.0.0.1 PORT=$port LOG_LEVEL=warn \
    node src/cli.ts serve >"$work/sealpost.log" 2>&1 &
  pid=$!
  local deadline=$((SECONDS + 90))
  until curl -sf --cacert "$work/certs/ca.crt" "https://localhost:$port/healthz" >/dev/null 2>&1; do
    if (( SECONDS > deadline )) || ! kill -0 "$pid" 2>/dev/null; then echo "sealpost did not start:" >&2; cat "$work/sealpost.log" >&2; exit 1; fi
    sleep 0.5
  done
}
