#!/usr/bin/env bash
# Runs every fuzz target of the given packages (default: ./mailbridge/) for a short time each,
# as CI does. FUZZTIME sets how long (default 10s per target). Example:
#   FUZZTIME=1m scripts/fuzz.sh ./mailbridge/
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then set -- ./mailbridge/; fi
for pkg in "$@"; do
  for target in $(CGO_ENABLED=0 go test -tags goolm -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
    echo "fuzzing $pkg $target for ${FUZZTIME:-10s}" >&2
    CGO_ENABLED=0 go test -tags goolm -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-10s}" "$pkg"
  done
done
