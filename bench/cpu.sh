#!/usr/bin/env bash
# Splits the server's CPU time per `GET /api/hello` into user and kernel
# time, for bare axum and for hearth's full pipeline, alternating the two.
#
#   bench/cpu.sh [SECONDS] [PAIRS]
#
# Each server runs alone on core 0 with wrk on core 1 (64 connections); after a
# 2 s warm-up the server's utime and stime (from /proc/<pid>/stat) are read
# around a SECONDS-long run and divided by the requests wrk completed. Where
# req/s moves with the machine's load, this shows whether the server's own
# code or the kernel's work per request moved.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SECS="${1:-4}"
PAIRS="${2:-4}"
need_wrk
cargo build --release -q -p pancake -p bench --bin pancake --bin bare

DATA=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
TICK=$(getconf CLK_TCK)

run() { # name url -- command...
  local name=$1 url=$2
  shift 3
  taskset -c 0 "$@" >/dev/null 2>&1 &
  SERVER=$!
  wait_up "$url"
  taskset -c 1 wrk -t1 -c64 -d2s "$url" >/dev/null
  local u0 s0 u1 s1 out n rps
  read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$SERVER/stat")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}s" "$url")
  read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$SERVER/stat")
  kill "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  SERVER=
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  awk -v name="$name" -v rps="$rps" -v n="$n" -v t="$TICK" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) 'BEGIN {
    us = du / t * 1e6 / n; ks = ds / t * 1e6 / n
    printf "  %-7s %9.0f req/s   user %5.2f us   kernel %5.2f us   total %5.2f us per request\n", name, rps, us, ks, us + ks
    printf "{\"name\":\"cpu_%s\",\"rps\":%s,\"user_us\":%.3f,\"kernel_us\":%.3f}\n", name, rps, us, ks > "/dev/stderr"
  }'
}

for pair in $(seq 1 "$PAIRS"); do
  echo "pair $pair"
  run bare http://127.0.0.1:18081/api/hello -- target/release/bare 127.0.0.1:18081
  run hearth http://127.0.0.1:18080/api/hello -- target/release/pancake serve --addr 127.0.0.1:18080 --data-dir "$DATA"
done
