#!/usr/bin/env bash
# Benchmark of pong's PostgreSQL store and Redis cache (issue 5; not a test, nothing is asserted).
#
# Release build, then on this machine's PostgreSQL, RabbitMQ and Redis:
#   1. drain rate: publish N valid messages (`pingpong-loadgen fill`: persistent,
#      confirms, 256 in flight) into a fresh queue while no pong runs, start pong and time how fast
#      messages_stored_total climbs to N; once with PONG_STORE=memory, once with PONG_STORE=postgres
#      (fresh database), once more with postgres full at PONG_MAX_MESSAGES=N/2 (evicting);
#   2. GET latency: bulk-load ROWS rows with SQL generate_series, then wrk --latency on
#      GET /pong?from=newest&limit=100 (newest page) and GET /pong?after=<middle id>&limit=100 (a keyset page
#      deep in the table), without and with Redis.
# Prints a markdown report (machine, load, results) on stdout and into $out/report.md.
#
# Environment: BENCH_STORE_MESSAGES (100000), BENCH_STORE_ROWS (1000000), BENCH_DURATION (15),
# BENCH_STORE_PORT (8202), BENCH_PG_ADMIN_URL (postgres://postgres@127.0.0.1:5432/postgres),
# BENCH_REDIS_URL (redis://127.0.0.1:6379), RABBITMQ_* for the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

messages=${BENCH_STORE_MESSAGES:-100000}
rows=${BENCH_STORE_ROWS:-1000000}
duration=${BENCH_DURATION:-15}
port=${BENCH_STORE_PORT:-8202}
admin_url=${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
db=pong_bench_$$
db_url=${admin_url%/*}/$db
queue=pingpong-bench-store-$$
prefix=pingpong:bench:$$:
out=$root/.local/bench-store
pong_url=http://127.0.0.1:$port
mkdir -p "$out"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
for tool in psql wrk curl python3 redis-cli; do
  need "$tool" "Debian/Ubuntu: apt-get install postgresql-client wrk curl python3 redis-tools"
done
psql "$admin_url" -qAtc 'SELECT 1' >/dev/null || fail "PostgreSQL unreachable at $admin_url"

export RABBITMQ_QUEUE=$queue RUST_LOG=${RUST_LOG:-warn} LISTEN_ADDR=127.0.0.1:$port
pong_pid=
stop_pong() {
  if [[ -n $pong_pid ]]; then
    kill "$pong_pid" 2>/dev/null || true
    wait "$pong_pid" 2>/dev/null || true
    pong_pid=
  fi
}
cleanup() {
  stop_pong
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$redis_url" --scan --pattern "$prefix*" 2>/dev/null | xargs -r redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
  "$root/target/release/pingpong-loadgen" delete-queue "$queue" "$queue.dead" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# metric NAME: sum of the samples of NAME on pong's /metrics.
metric() {
  curl -fsS --max-time 5 "$pong_url/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f\n", s }'
}
# start_pong VAR=VALUE...: starts the release pong with extra environment, waits for /readyz.
start_pong() {
  env "$@" "$root/target/release/pong" >>"$out/pong.log" 2>&1 &
  pong_pid=$!
  local status=0
  wait_http "$pong_url/readyz" 10 "$pong_pid" || status=$?
  ((status != 2)) || fail "pong exited; see $out/pong.log"
  ((status == 0)) || fail "pong not ready; see $out/pong.log"
}
# drain STORE VAR=VALUE...: fills the queue with $messages messages, starts pong and sets `rate` to
# the drain rate in msg/s, timed from pong's launch (start-up included) to the last message stored.
# pong keeps running (stop_pong).
drain() {
  local store=$1 t0 t_end n
  shift
  step "drain: $messages messages, PONG_STORE=$store"
  "$root/target/release/pingpong-loadgen" fill --count "$messages" >&2
  t0=$(date +%s.%N)
  start_pong PONG_STORE="$store" PONG_MAX_MESSAGES="${max_messages:-$((rows + messages))}" "$@"
  while :; do
    n=$(metric pingpong_pong_messages_stored_total)
    t_end=$(date +%s.%N)
    [[ $n -ge $messages ]] && break
    awk -v a="$t0" -v b="$t_end" 'BEGIN { exit !(b - a > 900) }' && fail "drain stalled at $n/$messages"
    sleep 0.05
  done
  rate=$(awk -v n="$messages" -v a="$t0" -v b="$t_end" 'BEGIN { printf "%.0f\n", n / (b - a) }')
}
# get_bench NAME PATH: wrk --latency for $duration s at 16 connections; prints a table row.
get_bench() {
  local name=$1 path=$2 file=$out/wrk-$1.txt
  step "wrk GET $path ($name)"
  wrk -t2 -c16 -d"${duration}s" --latency -s services/loadgen/wrk/get-pong.lua "$pong_url$path" >"$file"
  sed -n 's/^BENCH_JSON //p' "$file" | python3 -c "
import json, sys
r = json.load(sys.stdin)
errors = r['non2xx'] + r['connect_errors'] + r['read_errors'] + r['write_errors'] + r['timeouts']
print(f\"| $name | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {errors} |\")"
}

step "building release binaries"
cargo build --release -p pingpong-pong --bins -p pingpong-loadgen >&2
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
drain memory
memory_rate=$rate
row_memory=$(get_bench "memory, newest 100 ($messages stored)" "/pong?from=newest&limit=100")
stop_pong
drain postgres DATABASE_URL="$db_url"
postgres_rate=$rate
stop_pong
# Steady state at the bound: every batch also deletes as many of the oldest rows.
max_messages=$((messages / 2)) drain postgres DATABASE_URL="$db_url"
evicting_rate=$rate
stop_pong

step "bulk-loading $rows rows"
load_start=$(date +%s.%N)
# The CHECKPOINT flushes the load now rather than during the first measurement.
psql "$db_url" -q -v ON_ERROR_STOP=1 <<SQL
TRUNCATE pong_messages;
INSERT INTO pong_messages (id, msg, created_at, received_at)
SELECT gen_random_uuid(), 'bench message ' || g, now(), now() FROM generate_series(1, $rows) g;
UPDATE pong_state SET stored = (SELECT count(*) FROM pong_messages), version = version + 1;
VACUUM ANALYZE pong_messages;
CHECKPOINT;
SQL
load_seconds=$(awk -v a="$load_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
middle=$(psql "$db_url" -qAtc "SELECT id FROM pong_messages WHERE seq = (SELECT min(seq) + $rows / 2 FROM pong_messages)")

common=(PONG_STORE=postgres DATABASE_URL="$db_url" PONG_MAX_MESSAGES=$((rows + messages)))
start_pong "${common[@]}"
row_newest=$(get_bench "postgres, newest 100" "/pong?from=newest&limit=100")
row_after=$(get_bench "postgres, after=<middle>&limit=100" "/pong?after=$middle&limit=100")
stop_pong
cached=n/a
if redis-cli -u "$redis_url" ping >/dev/null 2>&1; then
  start_pong "${common[@]}" REDIS_URL="$redis_url" PONG_CACHE_PREFIX="$prefix"
  row_newest_redis=$(get_bench "postgres + Redis, newest 100" "/pong?from=newest&limit=100")
  row_after_redis=$(get_bench "postgres + Redis, after=<middle>&limit=100" "/pong?after=$middle&limit=100")
  cached="hits $(metric pingpong_pong_cache_hits_total), misses $(metric pingpong_pong_cache_misses_total), errors $(metric pingpong_pong_cache_errors_total)"
  stop_pong
else
  row_newest_redis="| postgres + Redis | Redis unreachable at $redis_url | | | |"
  row_after_redis=
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "### PostgreSQL store and Redis cache ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Machine: $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM,"
  echo "kernel $(uname -r); $(psql "$admin_url" -qAtc 'SHOW server_version') PostgreSQL, Redis $(redis-cli -u "$redis_url" info server 2>/dev/null | sed -n 's/^redis_version:\(.*\)\r$/\1/p'),"
  echo "load average before/after: $load_before / $load_after (other work shares these cores)."
  echo
  echo "Drain of a $messages-message backlog (release pong, prefetch 512, batches of up to 256 per transaction):"
  echo
  echo "| store | messages/s |"
  echo "| --- | --- |"
  echo "| memory | $memory_rate |"
  echo "| postgres | $postgres_rate |"
  echo "| postgres at PONG_MAX_MESSAGES=$((messages / 2)) (evicting the oldest on every batch) | $evicting_rate |"
  echo
  echo "GET latency with $rows rows in PostgreSQL (bulk load ${load_seconds} s; the memory row for"
  echo "comparison holds the drained backlog), wrk -t2 -c16 -d${duration}s, direct to pong (no nginx):"
  echo
  echo "| case | requests/s | p50 ms | p99 ms | errors |"
  echo "| --- | --- | --- | --- | --- |"
  echo "$row_memory"
  echo "$row_newest"
  echo "$row_after"
  echo "$row_newest_redis"
  [[ -n $row_after_redis ]] && echo "$row_after_redis"
  echo
  echo "Cache counters of the Redis run: $cached."
} | tee "$out/report.md"
