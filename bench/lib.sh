# Helpers shared by the wrk-based benchmark scripts (sourced, not run).

# Waits until URL answers 2xx, for at most ten seconds.
wait_up() {
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "server at $1 did not come up" >&2
  return 1
}

# Prints "<req/s> <p99 in ms> <non-2xx count>" from wrk --latency output.
parse() {
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +99%/ {
      v = $2
      if (v ~ /us$/) { sub(/us$/, "", v); p99 = v / 1000 }
      else if (v ~ /ms$/) { sub(/ms$/, "", v); p99 = v }
      else if (v ~ /s$/) { sub(/s$/, "", v); p99 = v * 1000 }
    }
    /Non-2xx/ { bad = $NF }
    END { printf "%s %.3f %d\n", rps, p99, bad }
  ' "$1"
}

# The median of its arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Installs wrk (and taskset) from Debian's packages when missing.
need_wrk() {
  if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  fi
  if ! command -v taskset >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux >/dev/null
  fi
}
