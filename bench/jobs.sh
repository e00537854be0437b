#!/usr/bin/env bash
# Measures hearth's job queue beside graphile-worker and pg-boss (PostgreSQL)
# and huey's SqliteHuey (SQLite), on the same machine in one run.
#
#   bench/jobs.sh [JOBS] [CONCURRENCIES]        # defaults: 100000 "4 16 64"
#
# Workloads: (a) burn-down of JOBS no-op jobs inserted in batches, then
# drained, at each concurrency; (b) enqueue rate, one job per transaction and
# 1000 per batch; (c) enqueue→start latency of sequential jobs on idle
# workers; (d) time to recover the jobs of a SIGKILLed worker (hearth).
# Every run gets a fresh database. One JSON line per measurement goes to
# stdout and to bench/results/jobs.jsonl.
#
# PostgreSQL: BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# IMPLS limits the run to some implementations (default: all four); OUT
# names the results file; BENCH_POOL=N gives hearth a pool of N connections
# instead of its default.
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS="${1:-100000}"
CONCS="${2:-4 16 64}"
ADMIN="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
RESULTS=bench/results
OUT="${OUT:-$RESULTS/jobs.jsonl}"
IMPLS="${IMPLS:-hearth graphile pgboss huey}"
mkdir -p "$RESULTS"
: >"$OUT"

echo "building the release benchmark binary"
cargo build --release -q -p bench --bin jobs
BIN=target/release/jobs

if [ ! -d bench/peers/node_modules ]; then
  echo "installing graphile-worker and pg-boss from npm"
  (cd bench/peers && npm install --no-audit --no-fund --silent)
fi
if [ ! -x bench/peers/.venv/bin/python ]; then
  echo "installing huey from PyPI"
  python3 -m venv bench/peers/.venv
  bench/peers/.venv/bin/pip install -q huey
fi

base="${ADMIN%/*}"
fresh_pg() {
  local name="bench_$(date +%s%N)"
  psql -q "$ADMIN" -c "CREATE DATABASE $name" >/dev/null
  echo "$base/$name"
}
drop_pg() {
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS ${1##*/} WITH (FORCE)" >/dev/null
}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fresh_sqlite() {
  local dir
  dir=$(mktemp -d -p "$TMP")
  echo "$dir/bench.db"
}

record() { tee -a "$OUT"; }
wanted() { [[ " $IMPLS " == *" $1 "* ]]; }

run_pg() { # impl workload args...
  local impl=$1 workload=$2
  shift 2
  wanted "$impl" || return 0
  local url
  url=$(fresh_pg)
  case "$impl" in
    hearth) "$BIN" "$workload" --db "$url" --pool "${BENCH_POOL:-0}" "$@" | record ;;
    graphile | pgboss) node bench/peers/queue.mjs "$impl" "$workload" --db "$url" "$@" | record ;;
  esac
  drop_pg "$url"
}

run_sqlite() { # impl workload args...
  local impl=$1 workload=$2
  shift 2
  wanted "$impl" || return 0
  local file
  file=$(fresh_sqlite)
  case "$impl" in
    hearth) "$BIN" "$workload" --db "sqlite://$file" --pool "${BENCH_POOL:-0}" "$@" | record ;;
    huey) bench/peers/.venv/bin/python bench/peers/huey_bench.py "$workload" --db "$file" "$@" | record ;;
  esac
}

echo "== (a) burn-down: $JOBS jobs"
for c in $CONCS; do
  for impl in hearth graphile pgboss; do run_pg "$impl" burndown --jobs "$JOBS" --concurrency "$c"; done
  for impl in hearth huey; do run_sqlite "$impl" burndown --jobs "$JOBS" --concurrency "$c"; done
done

echo "== (b) enqueue rate"
for impl in hearth graphile pgboss; do run_pg "$impl" enqueue --jobs "$JOBS"; done
for impl in hearth huey; do run_sqlite "$impl" enqueue --jobs "$JOBS"; done

echo "== (c) enqueue→start latency on idle workers"
run_pg hearth latency --jobs 1000
run_pg graphile latency --jobs 1000
# pg-boss polls (at most every 0.5 s), so fewer sequential jobs keep the run short.
run_pg pgboss latency --jobs 100
run_sqlite hearth latency --jobs 1000
run_sqlite huey latency --jobs 200

echo "== (d) recovery after SIGKILL (hearth, default 30 s lease)"
run_pg hearth recover --jobs 50 --lease 30s
run_sqlite hearth recover --jobs 50 --lease 30s

echo
echo "== summary (burn-down jobs/s, from $OUT)"
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
burn = {}
for r in rows:
    if r["workload"] == "burndown":
        burn[(r["impl"], r["engine"], r["concurrency"])] = r["jobs_per_s"]
concs = sorted({k[2] for k in burn})
print(f"{'impl':<10}{'engine':<10}" + "".join(f"{'c=' + str(c):>12}" for c in concs))
for impl, eng in [("hearth", "postgres"), ("graphile", "postgres"), ("pgboss", "postgres"), ("hearth", "sqlite"), ("huey", "sqlite")]:
    print(f"{impl:<10}{eng:<10}" + "".join(f"{burn.get((impl, eng, c), 0):>12.0f}" for c in concs))
for c in concs:
    h = burn.get(("hearth", "postgres", c))
    for peer in ["graphile", "pgboss"]:
        p = burn.get((peer, "postgres", c))
        if h and p:
            print(f"c={c}: hearth/{peer} = {h / p:.2f}x")
for r in rows:
    if r["workload"] == "latency":
        print(f"latency {r['impl']:<9}{r['engine']:<9} p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.2f} ms  ({r['jobs']} jobs)")
    if r["workload"].startswith("enqueue"):
        print(f"{r['workload']:<15}{r['impl']:<9}{r['engine']:<9} {r['jobs_per_s']:.0f} jobs/s")
    if r["workload"] == "recover":
        print(f"recover {r['impl']} {r['engine']}: {r['recovered_s']:.1f} s with a {r['lease_s']:.0f} s lease")
PY
