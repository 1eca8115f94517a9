#!/usr/bin/env bash
# Installs what samtal's tests need on a fresh Debian machine with Go, then runs them.
# Arguments are passed to `go test` (default: ./...). Examples:
#   scripts/test.sh
#   scripts/test.sh -short ./matrix/...
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: a C compiler to build Dendrite (its SQLite driver is cgo), a
# PostgreSQL server that tests start on their own (internal/pgtest), and Node.js with npm for the
# matrix-js-sdk interop test (e2ee/testdata/jspeer; Node 18 or later), and swaks.
need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
# swaks: a real SMTP client for the mail gateway's tests (mailbridge).
command -v swaks >/dev/null 2>&1 || need+=(swaks)
# dovecot-imapd: a real IMAP server for the mail gateway's IMAP poller tests (mailbridge).
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
# slapd and ldap-utils: a real OpenLDAP server for the offboarding tests (identity).
[ -x /usr/sbin/slapd ] || command -v slapd >/dev/null 2>&1 || need+=(slapd ldap-utils)
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "installing Debian packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The interop test's npm packages, at the versions its package-lock.json pins; again when the
# lock changed since they were installed.
jspeer=e2ee/testdata/jspeer
if command -v npm >/dev/null 2>&1 && { [ ! -d "$jspeer/node_modules" ] ||
    [ "$jspeer/package-lock.json" -nt "$jspeer/node_modules/.package-lock.json" ]; }; then
  echo "installing the npm packages of $jspeer" >&2
  if [ -f "$jspeer/package-lock.json" ]; then
    (cd "$jspeer" && npm ci --no-audit --no-fund --loglevel=error) >&2
  else
    (cd "$jspeer" && npm install --no-audit --no-fund --loglevel=error) >&2
  fi
fi

# The homeserver for matrixtest, built once per machine (a few minutes the first time).
if [ -z "${SAMTAL_DENDRITE:-}" ]; then
  SAMTAL_DENDRITE=$(go run ./internal/tools/dendrite)
  export SAMTAL_DENDRITE
fi

# The tests' own data (databases, spools, Dovecot and PostgreSQL directories, the test binaries)
# goes to memory where there is room, as matrixtest's homeserver data does: a test proves that
# what was committed survives a killed process, which holds in memory as on disk, and the
# disk's fsyncs were about a third of the suite's time. SAMTAL_TEST_TMPDIR names another place.
if [ -z "${SAMTAL_TEST_TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] &&
    [ "$(df --output=avail -k /dev/shm | tail -1)" -gt 4000000 ]; then
  SAMTAL_TEST_TMPDIR=$(mktemp -d /dev/shm/samtal-test.XXXXXX)
  chmod 1777 "$SAMTAL_TEST_TMPDIR" # as /tmp: PostgreSQL's initdb runs as the postgres user
  trap 'rm -rf "$SAMTAL_TEST_TMPDIR"' EXIT
fi
if [ -n "${SAMTAL_TEST_TMPDIR:-}" ]; then export TMPDIR=$SAMTAL_TEST_TMPDIR; fi

# samtal builds without cgo and with the pure-Go Olm (-tags goolm).
if [ $# -eq 0 ]; then set -- ./...; fi

# The packages whose tests take longest go first: `go test` builds and starts the test binaries
# in the order it is given them, two at a time on a 2-core machine, and in go's own order the
# longest one (matrix) started last and ran alone for most of a minute (-short at load 9 to 11:
# 212 s before, 149 s after). SAMTAL_TEST_FIRST names them, longest in -short first (matrix,
# e2ee; mailbridge, the longest of the full run, is short in -short and third); empty keeps go's
# order. Only `./...` gets them.
read -r -a first <<<"${SAMTAL_TEST_FIRST-./matrix ./e2ee ./mailbridge ./cmd/samtal ./identity ./matrix/matrixtest}"
args=()
for a in "$@"; do
  if [ "$a" = ./... ]; then args+=("${first[@]}"); fi
  args+=("$a")
done
set -- "${args[@]}"
CGO_ENABLED=0 go test -tags goolm -timeout 20m "$@"
