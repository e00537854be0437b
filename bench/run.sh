#!/usr/bin/env bash
# Measures hearth's full pipeline against a bare axum server, with wrk.
#
#   bench/run.sh [DURATION_SECONDS] [CONNECTIONS]
#
# Each server runs alone, pinned to core 0; wrk runs pinned to core 1. For each
# target it prints req/s and p99 latency as text and as one JSON line, then the
# hearth/bare ratio. Raw wrk output goes to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-15}"
CONNS="${2:-64}"
WARMUP=3
SERVER_CORE=0
CLIENT_CORE=1
RESULTS=bench/results
mkdir -p "$RESULTS"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if ! command -v taskset >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux >/dev/null
fi

echo "building release binaries (pancake, bare axum)"
cargo build --release -q -p pancake -p bench --bin pancake --bin bare

DATA=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$DATA"
}
trap cleanup EXIT

wait_up() {
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "server at $1 did not come up" >&2
  return 1
}

# Prints "<req/s> <p99 in ms>" from wrk --latency output.
parse() {
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +99%/ {
      v = $2
      if (v ~ /us$/) { sub(/us$/, "", v); p99 = v / 1000 }
      else if (v ~ /ms$/) { sub(/ms$/, "", v); p99 = v }
      else if (v ~ /s$/) { sub(/s$/, "", v); p99 = v * 1000 }
    }
    END { printf "%s %.3f\n", rps, p99 }
  ' "$1"
}

measure() { # name url
  local name=$1 url=$2 out="$RESULTS/$1.txt"
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$out"
  read -r rps p99 < <(parse "$out")
  printf '%-22s %12.0f req/s   p99 %8.3f ms\n' "$name" "$rps" "$p99"
  printf '{"name":"%s","url":"%s","rps":%s,"p99_ms":%s,"connections":%s,"duration_s":%s}\n' \
    "$name" "$url" "$rps" "$p99" "$CONNS" "$DURATION" >>"$RESULTS/results.jsonl"
  eval "RPS_${name//-/_}=$rps"
}

: >"$RESULTS/results.jsonl"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "wrk: 1 thread, $CONNS connections, ${DURATION}s (after ${WARMUP}s warm-up); server on core $SERVER_CORE, wrk on core $CLIENT_CORE"
echo

# 1. Bare axum.
taskset -c "$SERVER_CORE" target/release/bare 127.0.0.1:18081 2>/dev/null &
PIDS+=($!)
wait_up http://127.0.0.1:18081/api/hello
measure bare_axum_hello http://127.0.0.1:18081/api/hello
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

# 2 and 3. pancake on embedded SQLite, full pipeline, access log on (to /dev/null).
taskset -c "$SERVER_CORE" target/release/pancake serve --addr 127.0.0.1:18080 --data-dir "$DATA" 2>/dev/null &
PIDS+=($!)
wait_up http://127.0.0.1:18080/readyz
measure hearth_hello http://127.0.0.1:18080/api/hello
measure hearth_status_sqlite http://127.0.0.1:18080/api/status
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

ratio=$(awk -v h="$RPS_hearth_hello" -v b="$RPS_bare_axum_hello" 'BEGIN { printf "%.3f", h / b }')
echo
echo "hearth/bare ratio on GET /api/hello: $ratio (goal >= 0.9)"
printf '{"name":"ratio_hearth_over_bare_hello","value":%s}\n' "$ratio" >>"$RESULTS/results.jsonl"
echo
cat "$RESULTS/results.jsonl"
