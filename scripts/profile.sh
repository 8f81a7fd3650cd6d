#!/usr/bin/env bash
# `make profile`: where ping's and pong's CPU goes under load (not a test; nothing is asserted).
#
# Builds ping and pong with the `profiling` cargo profile (the release build with its symbols and
# line tables), brings up the benchmark stack (scripts/local.sh up with its own ports, queue and
# state dir .local/profile, gateway access log off, traces off), drives POST /ping through nginx
# with wrk at PROFILE_CONNECTIONS connections, and samples both services with perf (call graphs
# from DWARF) for PROFILE_SECONDS in the middle of the load. Writes under .local/profile/results:
#   <service>-top.txt      the hottest functions by self time
#   <service>-dso.txt      CPU by library/kernel (how much is the kernel: syscalls, futexes)
#   <service>-callers.txt  the same samples with their callers (for "why is this called")
#   cpu.txt                CPU µs per acknowledged ping of each process (as make bench computes it)
# Stops its stack afterwards. Needs perf (Debian: linux-perf) and wrk; installs neither.
#
# Environment: PROFILE_CONNECTIONS (64), PROFILE_SECONDS (10), PROFILE_FREQUENCY (499 Hz),
# RUNTIME_FLAVOR and the services' other variables (passed through).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

connections=${PROFILE_CONNECTIONS:-64}
seconds=${PROFILE_SECONDS:-10}
frequency=${PROFILE_FREQUENCY:-499}
export PINGPONG_LOCAL_DIR=$root/.local/profile
export PING_PORT=${PROFILE_PING_PORT:-8111}
export PONG_PORT=${PROFILE_PONG_PORT:-8112}
export GATEWAY_PORT=${PROFILE_GATEWAY_PORT:-8190}
export GATEWAY_ACCESS_LOG=off
export LOCAL_TRACES=off
export RUST_LOG=${RUST_LOG:-warn}
RABBITMQ_QUEUE=pingpong-profile-$(date +%s)
export RABBITMQ_QUEUE
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=deploy/local/common.sh
source deploy/local/common.sh

need wrk "Debian/Ubuntu: apt-get install wrk"
need perf "Debian: apt-get install linux-perf"
out=$PINGPONG_LOCAL_DIR/results
mkdir -p "$out"
target_dir=${CARGO_TARGET_DIR:-$root/target}

step "building ping and pong (profile: profiling)"
cargo build --profile profiling -p pingpong-ping -p pingpong-pong
export PINGPONG_BIN_DIR=$target_dir/profiling
# Only to delete the queue afterwards: the benchmark's build serves.
loadgen=$target_dir/release/pingpong-loadgen
[[ -x $loadgen ]] || cargo build --release -p pingpong-loadgen

cleanup() {
  step "stopping the profiling stack"
  scripts/local.sh down || true
  "$loadgen" delete-queue "$RABBITMQ_QUEUE" "$RABBITMQ_QUEUE.dead" >/dev/null 2>&1 || true
}
scripts/local.sh down >/dev/null 2>&1 || true
trap cleanup EXIT
step "starting the profiling stack (queue $RABBITMQ_QUEUE)"
scripts/local.sh up >"$out/local-up.log" 2>&1 || {
  cat "$out/local-up.log"
  fail "scripts/local.sh up failed"
}
use_state_dir
ping_pid=$(<"$state_dir/ping.pid")
pong_pid=$(<"$state_dir/pong.pid")

# ticks PID: utime+stime in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
published() {
  curl -fsS --max-time 5 "http://127.0.0.1:$PING_PORT/metrics" |
    awk '$1 == "pingpong_ping_messages_published_total" { print $NF }'
}

step "wrk POST /ping: $connections connections, $((seconds + 6)) s; perf samples ${seconds} s from the 3rd"
wrk -t2 -c"$connections" -d"$((seconds + 6))s" --timeout 10s -s services/loadgen/wrk/post-ping.lua \
  "http://127.0.0.1:$GATEWAY_PORT/ping" >"$out/wrk.txt" &
wrk_pid=$!
sleep 3
ping0=$(ticks "$ping_pid") pong0=$(ticks "$pong_pid") acked0=$(published)
perf record -q -F "$frequency" --call-graph dwarf,16384 -o "$out/ping.data" -p "$ping_pid" -- sleep "$seconds" &
perf_ping=$!
perf record -q -F "$frequency" --call-graph dwarf,16384 -o "$out/pong.data" -p "$pong_pid" -- sleep "$seconds" &
perf_pong=$!
wait "$perf_ping" "$perf_pong"
ping1=$(ticks "$ping_pid") pong1=$(ticks "$pong_pid") acked1=$(published)
wait "$wrk_pid"
hz=$(getconf CLK_TCK)
awk -v p="$((ping1 - ping0))" -v q="$((pong1 - pong0))" -v n="$((acked1 - acked0))" -v hz="$hz" 'BEGIN {
  printf "acknowledged pings while sampled: %d\nCPU µs per acknowledged ping (perf running): ping %.1f, pong %.1f\n", n, p / hz * 1e6 / n, q / hz * 1e6 / n
}' | tee "$out/cpu.txt"

for service in ping pong; do
  step "$service: perf report"
  perf report -i "$out/$service.data" --no-children --sort dso --stdio 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -n 15 >"$out/$service-dso.txt"
  perf report -i "$out/$service.data" --no-children --sort symbol --stdio -g none --percent-limit 0.5 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -n 60 >"$out/$service-top.txt"
  perf report -i "$out/$service.data" --children --sort symbol --stdio -g caller,0.5,callee --percent-limit 2 2>/dev/null |
    head -n 400 >"$out/$service-callers.txt"
  cat "$out/$service-dso.txt"
  head -n 30 "$out/$service-top.txt"
done
say "reports in $out"
