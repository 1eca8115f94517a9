#!/usr/bin/env bash
# Installs what samtal's tests need on a fresh Debian machine with Go, then runs them.
# Arguments are passed to `go test` (default: ./...). Examples:
#   scripts/test.sh
#   scripts/test.sh -short ./matrix/...
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: a C compiler to build Dendrite (its SQLite driver is cgo), and a
# PostgreSQL server that tests start on their own (internal/pgtest).
need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "installing Debian packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The homeserver for matrixtest, built once per machine (a few minutes the first time).
if [ -z "${SAMTAL_DENDRITE:-}" ]; then
  SAMTAL_DENDRITE=$(go run ./internal/tools/dendrite)
  export SAMTAL_DENDRITE
fi

# samtal builds without cgo and with the pure-Go Olm (-tags goolm).
if [ $# -eq 0 ]; then set -- ./...; fi
CGO_ENABLED=0 exec go test -tags goolm -timeout 20m "$@"
