#!/usr/bin/env bash
# Measures hearth's full pipeline against a bare axum server, with wrk, and
# hearth with its metrics turned off.
#
#   bench/run.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
#
# Each server runs alone, pinned to core 0; wrk runs pinned to core 1. The
# targets are measured in turn, ROUNDS times over, so that drift in the
# machine's speed hits all of them alike; each round's hearth/bare ratio is
# computed from measurements taken seconds apart, and the median round is
# reported. For each measurement it prints req/s and p99 latency as text and
# as one JSON line. Raw wrk output goes to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION="${1:-10}"
CONNS="${2:-64}"
ROUNDS="${3:-5}"
WARMUP=3
SERVER_CORE=0
CLIENT_CORE=1
RESULTS=bench/results
mkdir -p "$RESULTS"

need_wrk

echo "building release binaries (pancake, bare axum)"
cargo build --release -q -p pancake -p bench --bin pancake --bin bare

DATA=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$DATA"
}
trap cleanup EXIT

measure() { # name url round
  local name=$1 url=$2 round=$3 out="$RESULTS/$1.$3.txt"
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$out"
  read -r rps p99 _ < <(parse "$out")
  printf '  %-22s %12.0f req/s   p99 %8.3f ms\n' "$name" "$rps" "$p99"
  printf '{"name":"%s","round":%s,"url":"%s","rps":%s,"p99_ms":%s,"connections":%s,"duration_s":%s}\n' \
    "$name" "$round" "$url" "$rps" "$p99" "$CONNS" "$DURATION" >>"$RESULTS/results.jsonl"
  LAST_RPS=$rps
}

start_bare() {
  taskset -c "$SERVER_CORE" target/release/bare 127.0.0.1:18081 2>/dev/null &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_up http://127.0.0.1:18081/api/hello
}

start_pancake() { # [ENV=VALUE ...]
  # Full pipeline on embedded SQLite, access log on (written to /dev/null),
  # metrics on unless the arguments turn them off.
  env "$@" taskset -c "$SERVER_CORE" target/release/pancake serve --addr 127.0.0.1:18080 --data-dir "$DATA" 2>/dev/null &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_up http://127.0.0.1:18080/readyz
}

stop_server() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}

: >"$RESULTS/results.jsonl"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "wrk: 1 thread, $CONNS connections, ${DURATION}s per measurement after ${WARMUP}s warm-up, $ROUNDS rounds; server on core $SERVER_CORE, wrk on core $CLIENT_CORE"

RATIOS=()
for round in $(seq 1 "$ROUNDS"); do
  echo
  echo "round $round"
  start_bare
  measure bare_axum_hello http://127.0.0.1:18081/api/hello "$round"
  bare=$LAST_RPS
  stop_server
  start_pancake
  measure hearth_hello http://127.0.0.1:18080/api/hello "$round"
  hearth=$LAST_RPS
  measure hearth_status_sqlite http://127.0.0.1:18080/api/status "$round"
  stop_server
  # What the per-request metrics (a counter and a histogram by route) cost.
  start_pancake HEARTH_METRICS__ENABLED=false
  measure hearth_hello_no_metrics http://127.0.0.1:18080/api/hello "$round"
  stop_server
  ratio=$(awk -v h="$hearth" -v b="$bare" 'BEGIN { printf "%.3f", h / b }')
  echo "  hearth/bare on GET /api/hello: $ratio"
  printf '{"name":"ratio_hearth_over_bare_hello","round":%s,"value":%s}\n' "$round" "$ratio" >>"$RESULTS/results.jsonl"
  RATIOS+=("$ratio")
done

med_of() { # name
  median $(grep "\"name\":\"$1\"" "$RESULTS/results.jsonl" | sed 's/.*"rps":\([0-9.]*\).*/\1/')
}
echo
echo "medians over $ROUNDS rounds:"
for n in bare_axum_hello hearth_hello hearth_status_sqlite hearth_hello_no_metrics; do
  printf '  %-22s %12.0f req/s\n' "$n" "$(med_of "$n")"
done
echo "  hearth/bare ratio on GET /api/hello: $(median "${RATIOS[@]}") (median of per-round ratios; goal >= 0.9)"
printf '{"name":"median_ratio_hearth_over_bare_hello","value":%s,"rounds":%s}\n' "$(median "${RATIOS[@]}")" "$ROUNDS" >>"$RESULTS/results.jsonl"
