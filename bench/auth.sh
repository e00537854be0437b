#!/usr/bin/env bash
# Session-authenticated reads and a login storm, on SQLite and PostgreSQL.
#
#   bench/auth.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS] [ENGINES]
#
# 1. GET /api/whoami with a signed-in session cookie: pancake (the whole
#    pipeline: gatekeeper, CSRF layer, access log, …) against
#    `session_baseline`, a hand-written axum + sqlx server doing the same
#    cookie → session lookup on the same database with the same key. Each
#    server runs alone on core 0, wrk on core 1; rounds alternate and the
#    median per-round ratio is reported (goal >= 0.8, p99 <= 10 ms).
# 2. A login storm (`login_storm`): 16 clients signing in over and over with
#    the default argon2id cost, while a steady 100 reads/s measure the
#    session read's p99 before and during the storm (goals: >= 45 logins/s,
#    p99 during <= 2x before). The server has both cores; the client shares them.
#
# ENGINES is "sqlite postgres" by default; PostgreSQL comes from
# HEARTH_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# BENCH_POOL=N runs pancake with a pool of N connections instead of its default
# (db.max_connections = 0: 10 on SQLite, 2 x cores and at least 4 on PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION="${1:-10}"
CONNS="${2:-64}"
ROUNDS="${3:-3}"
ENGINES="${4:-sqlite postgres}"
WARMUP=3
RESULTS=bench/results
mkdir -p "$RESULTS"
PG_ADMIN="${HEARTH_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SECRET=bench-only-secret-key-0123456789abcdef0123456789
PASSWORD='bench passphrase for the storm'
PORT=18090

need_wrk

echo "building release binaries (pancake, session_baseline, login_storm)"
cargo build --release -q -p pancake -p bench --bin pancake --bin session_baseline --bin login_storm

PIDS=()
DIRS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

measure() { # name engine round
  local name=$1 engine=$2 round=$3 out="$RESULTS/auth.$1.$2.$3.txt"
  local url="http://127.0.0.1:$PORT/api/whoami"
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "Cookie: hearth_session=$COOKIE" "$url" >/dev/null
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Cookie: hearth_session=$COOKIE" "$url" >"$out"
  read -r rps p99 bad < <(parse "$out")
  if [ "$bad" != "0" ]; then echo "  $name: $bad non-2xx answers; see $out" >&2; exit 1; fi
  printf '  %-26s %10.0f req/s   p99 %8.3f ms\n' "$name" "$rps" "$p99"
  printf '{"name":"%s","engine":"%s","round":%s,"rps":%s,"p99_ms":%s,"connections":%s,"duration_s":%s}\n' \
    "$name" "$engine" "$round" "$rps" "$p99" "$CONNS" "$DURATION" >>"$RESULTS/auth.jsonl"
  LAST_RPS=$rps
}

start_pancake() { # cpus
  taskset -c "$1" env "${ENV[@]}" target/release/pancake serve --addr "127.0.0.1:$PORT" --data-dir "$DATA" 2>/dev/null &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_up "http://127.0.0.1:$PORT/readyz"
}

start_baseline() {
  taskset -c 0 target/release/session_baseline "127.0.0.1:$PORT" "$URL" "$SECRET" 2>/dev/null &
  SERVER=$!
  PIDS+=("$SERVER")
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/api/whoami" && return 0
    sleep 0.05
  done
}

stop_server() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}


: >"$RESULTS/auth.jsonl"
: >"$RESULTS/auth.storm.txt"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "reads: wrk 1 thread, $CONNS connections, ${DURATION}s after ${WARMUP}s warm-up, $ROUNDS rounds"

for engine in $ENGINES; do
  DATA=$(mktemp -d)
  DIRS+=("$DATA")
  if [ "$engine" = sqlite ]; then
    URL="sqlite://$DATA/pancake.db"
  else
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS hearth_bench_auth" -c "CREATE DATABASE hearth_bench_auth" >/dev/null
    URL="${PG_ADMIN%/*}/hearth_bench_auth"
  fi
  ENV=(HEARTH_SECRET_KEY="$SECRET" DATABASE_URL="$URL" HEARTH_LOG=warn
       HEARTH_AUTH__LIMITS__LOGIN_PER_IP__MAX=100000000 HEARTH_HTTP__MAX_CONNECTIONS_PER_IP=0)
  # BENCH_POOL=N sets hearth's pool size (db.max_connections); the baseline keeps 10.
  if [ -n "${BENCH_POOL:-}" ]; then ENV+=(HEARTH_DB__MAX_CONNECTIONS="$BENCH_POOL"); fi
  env "${ENV[@]}" target/release/pancake migrate --data-dir "$DATA" >/dev/null
  echo "$PASSWORD" | env "${ENV[@]}" target/release/pancake user create bench@example.com --verified --data-dir "$DATA" >/dev/null

  echo
  echo "== $engine"
  start_pancake 0
  jar="$DATA/jar"
  token=$(curl -fs -c "$jar" "http://127.0.0.1:$PORT/api/auth/csrf" | sed 's/.*"csrf_token":"\([^"]*\)".*/\1/')
  curl -fs -b "$jar" -c "$jar" -H "x-csrf-token: $token" -H 'content-type: application/json' \
    -d "{\"email\":\"bench@example.com\",\"password\":\"$PASSWORD\"}" "http://127.0.0.1:$PORT/api/auth/login" >/dev/null
  COOKIE=$(awk '$6 == "hearth_session" { print $7 }' "$jar")
  stop_server

  RATIOS=()
  for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    start_baseline
    measure baseline_axum_sqlx "$engine" "$round"
    base=$LAST_RPS
    stop_server
    start_pancake 0
    measure hearth_whoami "$engine" "$round"
    hearth=$LAST_RPS
    stop_server
    ratio=$(awk -v h="$hearth" -v b="$base" 'BEGIN { printf "%.3f", h / b }')
    echo "  hearth/baseline: $ratio"
    RATIOS+=("$ratio")
  done
  m=$(median "${RATIOS[@]}")
  echo "$engine: median hearth/baseline on the session read: $m (goal >= 0.8)"
  printf '{"name":"median_ratio_whoami","engine":"%s","value":%s,"rounds":%s}\n' "$engine" "$m" "$ROUNDS" >>"$RESULTS/auth.jsonl"

  echo "login storm on $engine (server on both cores, default argon2id: 19 MiB, t=2, p=1)"
  start_pancake 0,1
  target/release/login_storm "http://127.0.0.1:$PORT" bench@example.com "$PASSWORD" "hearth_session=$COOKIE" 16 100 10 20 \
    | tee -a "$RESULTS/auth.storm.txt" | grep -v '^{' || true
  grep '^{' "$RESULTS/auth.storm.txt" | tail -1 | sed "s/^{/{\"engine\":\"$engine\",/" >>"$RESULTS/auth.jsonl"
  stop_server
  if [ "$engine" = postgres ]; then
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS hearth_bench_auth" >/dev/null
  fi
done
