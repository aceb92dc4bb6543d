#!/usr/bin/env bash
# One-command benchmark: builds the floor program, the receiver and the Atlassian
# stand-in (bench/atlassian: install key server, token minting, install storms),
# starts a private redis-server on a loopback port and a private database on the
# local Postgres, then measures with wrk (loopback only, bounded durations) and
# prints a Markdown table of requests/s, the ratio of each row against the floors
# of this same run, non-2xx counts, latencies and peak RSS.
#
#   apt-get update && apt-get install -y wrk
#   bash bench/run.sh            # DURATION=10s CONNS=64 THREADS=2 by default
#
# The receiver rows: /migration/events (HS256, a distinct messageId per request),
# /enabled over 256 tenants and /installed (signed, RS256) over 256 sites, each
# request a fresh token; then a fresh-install storm (STORM_TENANTS=5000, each
# installed once) and a site-import storm (256 clientKeys on one baseUrl), both at
# CONNS connections, and both storms again while one busy loop per core loads
# the machine. BENCH_LOG_LEVEL sets the receiver's LOG_LEVEL (info).
# Then, with a worker, enqueue-to-effect latency at the fixed rates LATENCY_RATES
# ("50 200 1000" events/s, each for LATENCY_DURATION=10s; empty skips it): from the
# receiver's 2xx to the worker's migration_events row marked handled in Postgres.
# BENCH_DB_PARAMS=pool_max_conns=20 adds URL parameters to the floors' and the
# receiver's database URL (not psql's).
# BENCH_LOG_DIR=dir keeps the processes' logs and wrk's outputs there.
# BENCH_PROFILE_DIR=dir runs bench/pprofreceiver (the receiver plus net/http/pprof
# on loopback) instead and writes a CPU profile of each receiver row there:
#   go tool pprof -top "$BENCH_PROFILE_DIR/installed.pprof"
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
REDIS_PORT=${BENCH_REDIS_PORT:-16390}
PORT=${BENCH_PORT:-18090}
RPORT=${BENCH_RECEIVER_PORT:-18091}
KPORT=${BENCH_KEYS_PORT:-18092}
IPORT=${BENCH_INTERNAL_PORT:-18093}
STORM_TENANTS=${STORM_TENANTS:-5000}
PPROF_PORT=${BENCH_PPROF_PORT:-18094}
WPORT=${BENCH_WORKER_PORT:-18095}
LATENCY_RATES=${LATENCY_RATES-50 200 1000}
LATENCY_DURATION=${LATENCY_DURATION:-10s}
PROFILE_DIR=${BENCH_PROFILE_DIR:-}
PGURL=${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
DB=connectrelay_bench
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }

load0=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${BENCH_LOG_DIR:-}" ]; then mkdir -p "$BENCH_LOG_DIR" && cp "$work"/*.log "$work"/*.txt "$BENCH_LOG_DIR"/ 2>/dev/null || true; fi
  psql "$PGURL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/floors" ./bench/floors
if [ -n "$PROFILE_DIR" ]; then
  mkdir -p "$PROFILE_DIR"
  go build -o "$work/receiver" ./bench/pprofreceiver
else
  go build -o "$work/receiver" ./cmd/receiver
fi
go build -o "$work/atlassian" ./bench/atlassian
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
psql "$PGURL" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
dburl="${PGURL/\/postgres\?//$DB?}${BENCH_DB_PARAMS:+&$BENCH_DB_PARAMS}"
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
  local sock
  sock=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
  [ "${sock:-0}" = 0 ] || echo "wrk $*: ${sock} socket errors" >>"$work/socket.log"
  local total
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rps ${non:-0} $p50 $p99 ${total:-0}"
}
# rsnap FILE: the private Redis's command counts; rper NAME BEFORE N: the Redis
# commands per request of a row of N requests since BEFORE, most frequent first
# (commands run by Lua scripts count too, under their own names).
rsnap() { redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/ {print substr($1, 9), $3}' >"$1"; }
rper() {
  rsnap "$work/after.txt"
  awk -v name="$1" -v n="$3" 'NR == FNR {b[$1] = $2; next} {d = $2 - b[$1]; if (d > 0) print d / n, $1}' "$2" "$work/after.txt" |
    sort -rn | head -8 | awk -v name="$1" '{s = s sprintf(" %s %.1f", $2, $1)} END {print "  " name ":" s}' >>"$work/redis.txt"
}
# CPU per request: ticks of every postgres process (the local server: other
# users of it count too) and of one process, before and after a row.
hz=$(getconf CLK_TCK)
pgticks() { cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 == "(postgres)" {t += $14 + $15} END {print t + 0}'; }
pticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# cpusnap PID: remembers both; cpuper NAME WHO PID N: appends "NAME: postgres
# X ms, WHO Y ms" per request of a row of N requests since cpusnap.
cpusnap() { cpu_pg0=$(pgticks); cpu_p0=$(pticks "$1"); }
cpuper() {
  local pg p
  pg=$(pgticks)
  p=$(pticks "$3")
  awk -v name="$1" -v who="$2" -v hz="$hz" -v n="$4" -v a="$((pg - cpu_pg0))" -v b="$((p - cpu_p0))" \
    'BEGIN { if (n > 0) printf "  %s: postgres %.2f ms, %s %.2f ms\n", name, a * 1000 / hz / n, who, b * 1000 / hz / n }' >>"$work/cpu.txt"
}
url="http://127.0.0.1:$PORT"
# Warm up (unmeasured): the floors' pools open their connections on first use.
for path in /enqueue /durable; do
  wrk -t"$THREADS" -c"$CONNS" -d2s -s bench/signed.lua "$url" -- "$path" "$work/tokens.txt" >/dev/null 2>&1
done
read -r ceil ceil_bad ceil50 ceil99 _ < <(run "$url/ceiling")
cpusnap "$floors"
read -r enq enq_bad enq50 enq99 enq_n < <(run -s bench/signed.lua "$url" -- /enqueue "$work/tokens.txt")
cpuper "enqueue floor" floors "$floors" "$enq_n"
cpusnap "$floors"
read -r dur dur_bad dur50 dur99 dur_n < <(run -s bench/signed.lua "$url" -- /durable "$work/tokens.txt")
cpuper "durable floor" floors "$floors" "$dur_n"
rss=$(awk '/VmHWM/ {print $2}' "/proc/$floors/status")

# The receiver, configured as a vendor would, against the private Redis and database.
"$work/atlassian" genkey -key "$work/key.pem"
"$work/atlassian" keyserver -key "$work/key.pem" -addr "127.0.0.1:$KPORT" 2>"$work/keys.log" &
pids+=($!)
rurl="http://127.0.0.1:$RPORT"
# relay BINARY REDIS_DB LOG: runs the receiver or the worker, configured as a vendor
# would by the README's variables, against the private Redis (logical db REDIS_DB)
# and database.
relay() {
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
    LISTEN_ADDR="127.0.0.1:$RPORT" INTERNAL_LISTEN_ADDR="127.0.0.1:$IPORT" \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/$2" DATABASE_URL="$dburl" \
    CONNECT_APP_KEY=bench-app CONNECT_BASE_URL="$rurl" \
    CONNECT_KEYS_CDN_URL="http://127.0.0.1:$KPORT" CONNECT_PRODUCT_HOSTS=127.0.0.1 \
    DEV_MODE=true LOG_LEVEL="${BENCH_LOG_LEVEL:-info}" WORKER_METRICS_ADDR="127.0.0.1:$WPORT" \
    BENCH_PPROF_ADDR="127.0.0.1:$PPROF_PORT" \
    "$1" 2>"$3" &
}
# ready URL LOG: waits (bounded) for URL to answer 2xx.
ready() {
  for _ in $(seq 100); do curl -fs "$1" >/dev/null && return 0; sleep 0.1; done
  echo "$1 did not become ready:" >&2
  tail -5 "$2" >&2
  exit 1
}
relay "$work/receiver" 1 "$work/receiver.log"
receiver=$!
pids+=($receiver)
ready "$rurl/readyz" "$work/receiver.log"
# prof NAME SECONDS command...: runs the command; with PROFILE_DIR, profiles the
# receiver meanwhile, for SECONDS, into PROFILE_DIR/NAME.pprof.
prof() {
  local name=$1 sec=$2 p=""
  shift 2
  if [ -n "$PROFILE_DIR" ]; then
    curl -s -o "$PROFILE_DIR/$name.pprof" "http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=$sec" &
    p=$!
  fi
  "$@"
  if [ -n "$p" ]; then wait "$p" || true; fi
}
atl() { "$work/atlassian" "$1" -key "$work/key.pem" -app-base "$rurl" "${@:2}"; }
# Seed the 256 tenants ck-0..ck-255, one site each (the rows below use them).
read -r _ seed_bad _ _ < <(atl install -url "$rurl" -n 256 -prefix ck- -conns 16)
[ "$seed_bad" = 0 ] || { echo "seeding 256 tenants: $seed_bad non-2xx" >&2; exit 1; }

# Enough fresh tokens for a whole run at 1.5x the durable floor (capped): a token
# sent twice would be acknowledged as a copy, not applied again.
secs=$(awk -v d="$DURATION" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; print n }')
psecs=$((secs > 1 ? secs - 1 : 1))
want=$(awk -v r="$dur" -v s="$secs" 'BEGIN { n = int(r * s * 1.5) + 1000; if (n > 60000) n = 60000; print n }')
atl mint -kind migration -out "$work/migration.txt"
rsnap "$work/before.txt"
cpusnap "$receiver"
read -r mig mig_bad mig50 mig99 mig_n < <(prof migration "$psecs" run -s bench/migration.lua "$rurl" -- /migration/events "$work/migration.txt" "r$RANDOM")
rper /migration/events "$work/before.txt" "$mig_n"
cpuper /migration/events receiver "$receiver" "$mig_n"
atl mint -kind enabled -n "$want" -out "$work/enabled.txt"
rsnap "$work/before.txt"
cpusnap "$receiver"
read -r ena ena_bad ena50 ena99 ena_n < <(prof enabled "$psecs" run -s bench/pairs.lua "$rurl" -- /enabled "$work/enabled.txt" "$THREADS")
rper /enabled "$work/before.txt" "$ena_n"
cpuper /enabled receiver "$receiver" "$ena_n"
atl mint -kind installed -n "$want" -out "$work/installed.txt"
rsnap "$work/before.txt"
cpusnap "$receiver"
read -r ins ins_bad ins50 ins99 ins_n < <(prof installed "$psecs" run -s bench/pairs.lua "$rurl" -- /installed "$work/installed.txt" "$THREADS")
rper /installed "$work/before.txt" "$ins_n"
cpuper /installed receiver "$receiver" "$ins_n"
repeated=$(cat "$work"/wrk-*.txt | awk '/^repeated tokens:/ {n += $3} END {print n + 0}')
rsnap "$work/before.txt"
read -r fresh fresh_bad fresh50 fresh99 < <(prof storm 5 atl install -url "$rurl" -n "$STORM_TENANTS" -prefix fresh- -conns "$CONNS" 2>>"$work/storm.log")
rper "fresh-install storm" "$work/before.txt" "$STORM_TENANTS"
rsnap "$work/before.txt"
read -r imp imp_bad imp50 imp99 < <(atl install -url "$rurl" -n 256 -prefix import- -one-site -conns "$CONNS" 2>>"$work/storm.log")
rper "site-import storm" "$work/before.txt" 256
# Both storms again while another process loads the machine: one busy loop per
# core (bounded by timeout), started before and stopped after each storm.
loaded() {
  local burners=()
  for _ in $(seq "$(nproc)"); do
    timeout 120s sh -c 'while :; do :; done' &
    burners+=($!)
  done
  "$@"
  kill "${burners[@]}" 2>/dev/null || true
  wait "${burners[@]}" 2>/dev/null || true
}
read -r lfresh lfresh_bad lfresh50 lfresh99 < <(loaded atl install -url "$rurl" -n "$STORM_TENANTS" -prefix loaded- -conns "$CONNS" 2>>"$work/storm.log")
read -r limp limp_bad limp50 limp99 < <(loaded atl install -url "$rurl" -n 256 -prefix limport- -one-site -conns "$CONNS" 2>>"$work/storm.log")
# The floors again: the machine and the shared Postgres change under a run, so each
# ratio is against the mean of the floors measured before and after the receiver.
read -r ceil2 ceil2_bad ceil2_50 ceil2_99 _ < <(run "$url/ceiling")
read -r enq2 enq2_bad enq2_50 enq2_99 _ < <(run -s bench/signed.lua "$url" -- /enqueue "$work/tokens.txt")
read -r dur2 dur2_bad dur2_50 dur2_99 _ < <(run -s bench/signed.lua "$url" -- /durable "$work/tokens.txt")
rrss=$(awk '/VmHWM/ {print $2}' "/proc/$receiver/status")
dups=$(curl -s "http://127.0.0.1:$IPORT/metrics" | awk '/^connectrelay_migration_events_total/ && /duplicate/ {n += $2} END {print n + 0}')
copies=$(grep -c 'already applied' "$work/receiver.log" || true)

# Enqueue to worker effect: a fresh receiver and a worker on an empty queue (Redis
# db 2; db 1 holds the rows' tasks), the same database and tenants.
lat_rows=()
wrss=0
if [ -n "$LATENCY_RATES" ]; then
  kill "$receiver"
  wait "$receiver" 2>/dev/null || true
  relay "$work/receiver" 2 "$work/receiver2.log"
  receiver=$!
  pids+=($receiver)
  go build -o "$work/worker" ./cmd/worker
  relay "$work/worker" 2 "$work/worker.log"
  worker=$!
  pids+=($worker)
  ready "$rurl/readyz" "$work/receiver2.log"
  ready "http://127.0.0.1:$WPORT/healthz" "$work/worker.log"
  # Unmeasured: the worker's first seconds (pools, the backlog of the rows' feed).
  atl pace -url "$rurl" -db "$dburl" -rate 50 -duration 3s -prefix warm >/dev/null 2>&1 || true
  for rate in $LATENCY_RATES; do
    read -r lrate lbad l50 l99 lmiss < <(atl pace -url "$rurl" -db "$dburl" -rate "$rate" -duration "$LATENCY_DURATION" -prefix "pace$rate" 2>>"$work/pace.log")
    lat_rows+=("| $rate events/s for $LATENCY_DURATION | $lrate | $lbad | $l50 | $l99 | $lmiss |")
  done
  wrss=$(awk '/VmHWM/ {print $2}' "/proc/$worker/status")
  rrss2=$(awk '/VmHWM/ {print $2}' "/proc/$receiver/status")
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION on $(nproc) cores, load average $load0 at the start and $(cut -d' ' -f1-3 /proc/loadavg) at the end (the run itself keeps both cores busy), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Ratios are against the mean of each floor's two measurements (before and after the receiver rows)."
echo
echo "| case | req/s | x ceiling | x enqueue floor | x durable floor | non-2xx | p50 | p99 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
mean() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (a + b) / 2 }'; }
mceil=$(mean "$ceil" "$ceil2")
menq=$(mean "$enq" "$enq2")
mdur=$(mean "$dur" "$dur2")
row() { echo "| $1 | $2 | $(ratio "$2" "$mceil") | $(ratio "$2" "$menq") | $(ratio "$2" "$mdur") | $3 | $4 | $5 |"; }
row "Echo, no work (ceiling), before" "$ceil" "$ceil_bad" "$ceil50" "$ceil99"
row "Echo, no work (ceiling), after" "$ceil2" "$ceil2_bad" "$ceil2_50" "$ceil2_99"
row "HS256 + enqueue (enqueue floor), before" "$enq" "$enq_bad" "$enq50" "$enq99"
row "HS256 + enqueue (enqueue floor), after" "$enq2" "$enq2_bad" "$enq2_50" "$enq2_99"
row "HS256 + Postgres insert + enqueue (durable floor), before" "$dur" "$dur_bad" "$dur50" "$dur99"
row "HS256 + Postgres insert + enqueue (durable floor), after" "$dur2" "$dur2_bad" "$dur2_50" "$dur2_99"
row "receiver /migration/events (distinct messageIds)" "$mig" "$mig_bad" "$mig50" "$mig99"
row "receiver /enabled, 256 tenants" "$ena" "$ena_bad" "$ena50" "$ena99"
row "receiver /installed, 256 sites (signed)" "$ins" "$ins_bad" "$ins50" "$ins99"
row "fresh-install storm, $STORM_TENANTS tenants once each" "$fresh" "$fresh_bad" "$fresh50" "$fresh99"
row "site-import storm, 256 clientKeys on one baseUrl" "$imp" "$imp_bad" "$imp50" "$imp99"
row "fresh-install storm, $STORM_TENANTS tenants, machine loaded" "$lfresh" "$lfresh_bad" "$lfresh50" "$lfresh99"
row "site-import storm, 256 clientKeys, machine loaded" "$limp" "$limp_bad" "$limp50" "$limp99"
echo
echo
echo "peak RSS (VmHWM): floors $((rss / 1024)) MB, receiver $((rrss / 1024)) MB (over the rows above)"
if [ ${#lat_rows[@]} -gt 0 ]; then
  echo
  echo "Enqueue to worker effect (receiver 2xx to the migration_events row handled, polled every 2 ms):"
  echo
  echo "| fixed rate | sent/s | non-2xx | p50 | p99 | effect not seen |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  printf '%s\n' "${lat_rows[@]}"
  echo
  echo "peak RSS (VmHWM) during it: receiver $((rrss2 / 1024)) MB, worker $((wrss / 1024)) MB"
  if [ -s "$work/pace.log" ]; then sed 's/^/  /' "$work/pace.log"; fi
fi
echo "tokens repeated by wrk: $repeated; copies acknowledged without applying: $copies; duplicate migration events: $dups"
echo "CPU per request (user + system):"
cat "$work/cpu.txt"
echo "Redis commands per request:"
cat "$work/redis.txt"
if grep -q '"status":5' "$work/receiver.log"; then
  echo "receiver 5xx by reason (context canceled: wrk closed a connection at the end of a row):"
  grep '"status":5' "$work/receiver.log" | jq -rR 'fromjson? | select(.reason) | "\(.status) \(.event // "migration") \(.reason)"' |
    sed -E 's/tenant [a-z]+-[0-9]+/tenant X/' | sort | uniq -c | sort -rn | head -6 | sed 's/^/  /'
fi
if [ -s "$work/socket.log" ]; then sed 's/^/  /' "$work/socket.log"; fi
if [ -s "$work/storm.log" ]; then echo "storm statuses:"; sed 's/^/  /' "$work/storm.log"; fi
