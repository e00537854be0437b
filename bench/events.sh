#!/usr/bin/env bash
# Measures hearth's domain events on SQLite and PostgreSQL, with
# graphile-worker's burn-down in the same run as a yardstick for the
# database's speed that day.
#
#   bench/events.sh [EVENTS] [RATE] [SECS]     # defaults: 100000 5000 10
#
# Workloads: (a) burn-down: EVENTS published in batches of 500, then three
# subscribing modules drain them (events/s per subscriber); (b) latency:
# RATE events/s published for SECS seconds while the subscribers run, by
# PUBLISHERS concurrent tasks (requests in flight, default 32) committing
# PER_TX events per transaction (default 1), then again with PER_TX=4
# (p50/p99 from publish to the reader's commit); (c) the
# cost of one event in a write transaction. Every run gets a fresh database.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${1:-100000}"
RATE="${2:-5000}"
SECS="${3:-10}"
PUBLISHERS="${PUBLISHERS:-32}"
PER_TX="${PER_TX:-1}"
ADMIN="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
mkdir -p bench/results
OUT=bench/results/events.jsonl
: >"$OUT"

cargo build --release -q -p bench --bin events
BIN=target/release/events
base="${ADMIN%/*}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

run() { # engine workload args...
  local engine=$1 url
  shift
  if [ "$engine" = postgres ]; then
    local name="bench_$(date +%s%N)"
    psql -q "$ADMIN" -c "CREATE DATABASE $name" >/dev/null
    url="$base/$name"
    "$BIN" "$@" --db "$url" | tee -a "$OUT"
    psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
  else
    local dir
    dir=$(mktemp -d -p "$TMP")
    "$BIN" "$@" --db "sqlite://$dir/bench.db" | tee -a "$OUT"
  fi
}

for engine in postgres sqlite; do
  run "$engine" burndown --events "$EVENTS"
  run "$engine" latency --rate "$RATE" --secs "$SECS" --publishers "$PUBLISHERS" --per-tx "$PER_TX"
  run "$engine" latency --rate "$RATE" --secs "$SECS" --publishers "$PUBLISHERS" --per-tx 4
  run "$engine" publish --events 5000
done

echo "yardstick: graphile-worker burn-down on the same PostgreSQL"
IMPLS=graphile OUT=bench/results/events-yardstick.jsonl bench/jobs.sh 20000 "16"
