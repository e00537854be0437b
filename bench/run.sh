#!/usr/bin/env bash
# Measures hearth's full pipeline against a bare axum server, with wrk.
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

DURATION="${1:-10}"
CONNS="${2:-64}"
ROUNDS="${3:-5}"
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

measure() { # name url round
  local name=$1 url=$2 round=$3 out="$RESULTS/$1.$3.txt"
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$out"
  read -r rps p99 < <(parse "$out")
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

start_pancake() {
  # Full pipeline on embedded SQLite, access log on (written to /dev/null).
  taskset -c "$SERVER_CORE" target/release/pancake serve --addr 127.0.0.1:18080 --data-dir "$DATA" 2>/dev/null &
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
  ratio=$(awk -v h="$hearth" -v b="$bare" 'BEGIN { printf "%.3f", h / b }')
  echo "  hearth/bare on GET /api/hello: $ratio"
  printf '{"name":"ratio_hearth_over_bare_hello","round":%s,"value":%s}\n' "$round" "$ratio" >>"$RESULTS/results.jsonl"
  RATIOS+=("$ratio")
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med_of() { # name
  median $(grep "\"name\":\"$1\"" "$RESULTS/results.jsonl" | sed 's/.*"rps":\([0-9.]*\).*/\1/')
}
echo
echo "medians over $ROUNDS rounds:"
for n in bare_axum_hello hearth_hello hearth_status_sqlite; do
  printf '  %-22s %12.0f req/s\n' "$n" "$(med_of "$n")"
done
echo "  hearth/bare ratio on GET /api/hello: $(median "${RATIOS[@]}") (median of per-round ratios; goal >= 0.9)"
printf '{"name":"median_ratio_hearth_over_bare_hello","value":%s,"rounds":%s}\n' "$(median "${RATIOS[@]}")" "$ROUNDS" >>"$RESULTS/results.jsonl"
