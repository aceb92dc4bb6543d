#!/usr/bin/env bash
# One-command benchmark: builds the floor program, starts a private redis-server on a
# loopback port and a private database on the local Postgres, then measures with wrk
# (loopback only, bounded durations) and prints a Markdown table of requests/s, the
# ratio of each row against the floors of this same run, non-2xx counts and peak RSS.
#
#   apt-get update && apt-get install -y wrk
#   bash bench/run.sh            # DURATION=10s CONNS=64 THREADS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
REDIS_PORT=${BENCH_REDIS_PORT:-16390}
PORT=${BENCH_PORT:-18090}
PGURL=${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
DB=connectrelay_bench
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PGURL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/floors" ./bench/floors
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
psql "$PGURL" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
dburl="${PGURL/\/postgres\?//$DB?}"
"$work/floors" -mint 20000 -tokens "$work/tokens.txt"
"$work/floors" -addr "127.0.0.1:$PORT" -redis "127.0.0.1:$REDIS_PORT" -redis-db 0 -db "$dburl" 2>"$work/floors.log" &
floors=$!
pids+=($floors)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/ceiling" >/dev/null && break; sleep 0.1; done

# run NAME wrk-args...: prints "rps non2xx" for one wrk run.
run() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" 2>&1)
  echo "$out" >"$work/wrk-$RANDOM.txt"
  local rps non
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  non=$(awk '/Non-2xx or 3xx responses/ {print $5}' <<<"$out")
  local p50 p99
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$rps ${non:-0} $p50 $p99"
}
url="http://127.0.0.1:$PORT"
read -r ceil ceil_bad ceil50 ceil99 < <(run "$url/ceiling")
read -r enq enq_bad enq50 enq99 < <(run -s bench/signed.lua "$url" -- /enqueue "$work/tokens.txt")
read -r dur dur_bad dur50 dur99 < <(run -s bench/signed.lua "$url" -- /durable "$work/tokens.txt")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$floors/status")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| case | req/s | x ceiling | x enqueue floor | x durable floor | non-2xx | p50 | p99 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
row() { echo "| $1 | $2 | $(ratio "$2" "$ceil") | $(ratio "$2" "$enq") | $(ratio "$2" "$dur") | $3 | $4 | $5 |"; }
row "Echo, no work (ceiling)" "$ceil" "$ceil_bad" "$ceil50" "$ceil99"
row "HS256 + enqueue (enqueue floor)" "$enq" "$enq_bad" "$enq50" "$enq99"
row "HS256 + Postgres insert + enqueue (durable floor)" "$dur" "$dur_bad" "$dur50" "$dur99"
echo
echo "peak RSS: floors $((rss / 1024)) MB"
