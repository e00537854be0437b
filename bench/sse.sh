#!/usr/bin/env bash
# Holds many idle SSE streams open against pancake (release build, SQLite)
# and reports the server's resident memory per stream.
#
#   bench/sse.sh [STREAMS] [SOURCES] [http1|h2]   # defaults: 20000 4 http1
#
# http1: one connection per stream, from several 127.0.0.x source addresses,
# so that their count is not bounded by one address's ephemeral ports.
# h2: the streams multiplexed over HTTP/2 connections (200 each), as browsers
# on HTTPS open them. One JSON line goes to stdout and to
# bench/results/sse.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS="${1:-20000}"
SOURCES="${2:-4}"
PROTO="${3:-http1}"
mkdir -p bench/results
# Each stream is one descriptor in the server and one in the client.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$PROTO" = http1 ] && [ "$(ulimit -n)" != unlimited ] && [ "$STREAMS" -gt $(($(ulimit -n) - 500)) ]; then
  echo "the open-files limit here is $(ulimit -n) (hard limit $(ulimit -Hn)); use fewer streams" >&2
  exit 2
fi

cargo build --release -q -p pancake -p bench --bin pancake --bin sse_clients
DATA=$(mktemp -d)
PORT=18089
# Every stream comes from one address here: lift the per-address caps and
# size the stream pool for the run.
HEARTH_HTTP__MAX_CONNECTIONS=$((STREAMS + 1000)) HEARTH_LOG=warn \
  HEARTH_HTTP__MAX_CONNECTIONS_PER_IP=0 HEARTH_REALTIME__MAX_STREAMS_PER_IP=0 \
  HEARTH_REALTIME__MAX_STREAMS=$((STREAMS + 100)) \
  target/release/pancake serve --addr 127.0.0.1:$PORT --data-dir "$DATA" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 200); do curl -fs -o /dev/null http://127.0.0.1:$PORT/readyz && break; sleep 0.05; done
# Warm the pools and the page once so the baseline holds what every stream shares.
curl -fs -o /dev/null http://127.0.0.1:$PORT/
timeout 5 curl -fs -N -o /dev/null http://127.0.0.1:$PORT/api/notices/live || true
rss() { awk '/VmRSS/ { print $2 }' /proc/$SERVER/status; }
BEFORE=$(rss)
target/release/sse_clients 127.0.0.1:$PORT /api/notices/live "$STREAMS" "$SOURCES" 20 "$PROTO" >"$DATA/clients.json" &
CLIENTS=$!
# Wait for the client to report, then give the server a moment to settle.
for _ in $(seq 1 600); do [ -s "$DATA/clients.json" ] && break; sleep 0.1; done
sleep 2
AFTER=$(rss)
OPEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["open"])' "$DATA/clients.json")
cat "$DATA/clients.json" >&2
wait $CLIENTS || true
python3 - "$STREAMS" "$OPEN" "$BEFORE" "$AFTER" "$PROTO" <<'PY' | tee -a bench/results/sse.jsonl
import json, sys
want, open_, before, after = map(int, sys.argv[1:5])
per = (after - before) / open_ if open_ else 0
print(json.dumps({"bench": "sse", "protocol": sys.argv[5], "streams": want, "open": open_, "rss_before_kb": before, "rss_after_kb": after, "kb_per_stream": round(per, 2)}))
PY
