#!/usr/bin/env bash
# The project's test command (README: "make test"). It installs what the
# tests need when it is missing, then runs every test with the race
# detector, and a short run of each fuzz target.
#
# Needs: Go (see go.mod), and redis-server (installed here with apt-get on
# Debian/Ubuntu when missing; elsewhere install it yourself, or point the
# tests at a server with HERALD_TEST_REDIS_URL). MongoDB is not needed: the
# tests start an embedded FerretDB unless HERALD_TEST_MONGO_URI is set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${HERALD_TEST_REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
  echo "== redis-server not found; installing it"
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # The package may start a system service; the tests start their own.
    $sudo service redis-server stop >/dev/null 2>&1 || true
  else
    echo "Install redis-server (e.g. 'brew install redis', 'apk add redis', 'dnf install redis'), or set HERALD_TEST_REDIS_URL." >&2
    exit 1
  fi
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 30m ./...

echo "== chaos drill, short (a real cluster under faults; without -race, alone)"
go test -count=1 -timeout 20m -run '^TestChaosShort$' ./benchmarks/chaos

echo "== benchmarks/baselines (its own module)"
(cd benchmarks/baselines && go vet ./... && go test -race -count=1 -timeout 10m ./...)

echo "== fuzz (short runs)"
fuzztime="${HERALD_FUZZTIME:-10s}"
# Each line: package and fuzz target.
while read -r pkg target; do
  [ -n "$pkg" ] || continue
  echo "-- $target ($pkg, $fuzztime)"
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
done <<'TARGETS'
./edge FuzzParseHeader
./edge FuzzClientFrames
./edge FuzzDecodeClientMessage
./node FuzzDecodePost
./gossip FuzzDecodeMeta
TARGETS
echo "== all tests passed"
