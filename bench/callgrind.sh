#!/usr/bin/env bash
# Counts CPU instructions per request with callgrind: a figure that, unlike
# req/s, does not move with the machine's load. For each server it runs one
# idle session (start-up and shutdown only) and one session under a fixed wrk
# load, and reports (loaded - idle) / requests.
#
#   bench/callgrind.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-6}"
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p pancake -p bench --bin pancake --bin bare
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }

run() { # name url load(0|1) -- command...; sets REQUESTS
  local name=$1 url=$2 load=$3
  shift 4
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.$load" "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do curl -fs -o /dev/null "$url" && break; sleep 0.05; done
  REQUESTS=1
  if [ "$load" = 1 ]; then
    REQUESTS=$(( $(wrk -t1 -c4 -d"${SECS}s" "$url" | awk '/requests in/ { print $1 }') + 1 ))
  else
    sleep "$SECS"
  fi
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

measure() { # name url -- command...
  local name=$1 url=$2
  shift 3
  run "$name" "$url" 0 -- "$@"
  run "$name" "$url" 1 -- "$@"
  local idle loaded per
  idle=$(total "$OUT/$name.0"); loaded=$(total "$OUT/$name.1")
  # Both sessions made the one readiness request; the loaded one made REQUESTS - 1 more.
  per=$(( (loaded - idle) / (REQUESTS - 1) ))
  printf '%-8s %8d instructions/request (%d requests)\n' "$name" "$per" "$((REQUESTS - 1))"
  printf '{"name":"%s_instructions_per_request","value":%s,"requests":%s}\n' "$name" "$per" "$((REQUESTS - 1))" >>"$OUT/lines"
  eval "PER_$name=$per"
}

DATA=$(mktemp -d)
measure bare http://127.0.0.1:18091/api/hello -- target/release/bare 127.0.0.1:18091
measure hearth http://127.0.0.1:18090/api/hello -- target/release/pancake serve --addr 127.0.0.1:18090 --data-dir "$DATA"
rm -rf "$DATA"
echo "hearth/bare instructions per GET /api/hello: $(awk -v h="$PER_hearth" -v b="$PER_bare" 'BEGIN { printf "%.2f", h / b }')"
cat "$OUT/lines"
