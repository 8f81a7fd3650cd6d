#!/usr/bin/env bash
# `make bench`: data-plane benchmark on this machine (not a test; nothing here is asserted).
#
# Brings up its own stack with scripts/local.sh up (release build, own ports, own queue, own state
# dir .local/bench, gateway access log off), then measures in one run:
#   1. the broker's own ceiling: pingpong-loadgen ceiling (persistent, confirms, 256 in flight);
#   2. POST /ping through nginx with wrk at 16 and 64 connections (20 s each, --latency), then the
#      drain of the queue by pong; accepted (200s counted by wrk, and ping's published counter) vs
#      stored (pong's counter);
#   3. GET /pong?from=newest&limit=100 through nginx with 100,000 messages stored;
#   4. RSS (VmRSS) of ping, pong, nginx and the broker, idle and after load, and the CPU seconds
#      each process used during each POST run, also per acknowledged ping (µs).
# Prints a markdown report and writes it into the "Data plane" section of BENCHMARKS.md
# (BENCH_WRITE=0 to skip). Stops its stack afterwards.
#
# Traces are off by default (the services' default). BENCH_TRACES=on runs Jaeger (as make local
# does, on the BENCH_JAEGER_* ports) and samples BENCH_TRACE_RATIO (0.1, the CRD's default) of
# the requests; the report then goes to $PINGPONG_LOCAL_DIR/results/report.md only (BENCH_WRITE
# defaults to 0), for the "Traces off and on" section of BENCHMARKS.md.
#
# Environment: BENCH_DURATION (20), BENCH_CEILING_SECONDS (10), BENCH_PING_PORT (8101),
# BENCH_PONG_PORT (8102), BENCH_GATEWAY_PORT (8180), BENCH_WRITE (1), BENCH_TRACES (off),
# BENCH_TRACE_RATIO (0.1), BENCH_JAEGER_OTLP_PORT (8118), BENCH_JAEGER_UI_PORT (8186),
# BENCH_JAEGER_GRPC_PORT (8185), plus RABBITMQ_* for the broker (RABBITMQ_PARTITIONS=N spreads the
# load over N queues; see BENCHMARKS.md, "Partitions").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

duration=${BENCH_DURATION:-20}
ceiling_seconds=${BENCH_CEILING_SECONDS:-10}
export PINGPONG_LOCAL_DIR=$root/.local/bench
export PING_PORT=${BENCH_PING_PORT:-8101}
export PONG_PORT=${BENCH_PONG_PORT:-8102}
export GATEWAY_PORT=${BENCH_GATEWAY_PORT:-8180}
export GATEWAY_ACCESS_LOG=off
export PINGPONG_PROFILE=release
RABBITMQ_QUEUE=pingpong-bench-$(date +%s)
export RABBITMQ_QUEUE
export PONG_MAX_MESSAGES=100000
export RUST_LOG=${RUST_LOG:-warn}
traces=${BENCH_TRACES:-off}
[[ $traces == on || $traces == off ]] || { echo "BENCH_TRACES must be on or off, got '$traces'" >&2; exit 2; }
export LOCAL_TRACES=$traces
export JAEGER_OTLP_PORT=${BENCH_JAEGER_OTLP_PORT:-8118}
export JAEGER_UI_PORT=${BENCH_JAEGER_UI_PORT:-8186}
export JAEGER_GRPC_PORT=${BENCH_JAEGER_GRPC_PORT:-8185}
if [[ $traces == on ]]; then
  export OTEL_TRACES_SAMPLER=parentbased_traceidratio
  export OTEL_TRACES_SAMPLER_ARG=${BENCH_TRACE_RATIO:-0.1}
  trace_note="traces ON: OTLP/HTTP to a local Jaeger, sampler parentbased_traceidratio $OTEL_TRACES_SAMPLER_ARG"
  bench_write_default=0
else
  unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  trace_note="traces off"
  bench_write_default=1
fi
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=deploy/local/common.sh
source deploy/local/common.sh

need wrk "Debian/Ubuntu: apt-get install wrk"
gateway=http://127.0.0.1:$GATEWAY_PORT
ping_url=http://127.0.0.1:$PING_PORT
pong_url=http://127.0.0.1:$PONG_PORT
loadgen=$root/target/release/pingpong-loadgen
out=$PINGPONG_LOCAL_DIR/results
mkdir -p "$out"

# metric URL NAME: sum of every sample of metric NAME (all label sets) at URL/metrics.
metric() {
  curl -fsS --max-time 5 "$1/metrics" |
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f\n", s }'
}
# rss_kb PID...: summed VmRSS in kB.
rss_kb() {
  local total=0 pid kb
  for pid in "$@"; do
    kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}
# cpu_ticks PID...: summed utime+stime in clock ticks.
cpu_ticks() {
  local total=0 pid ticks
  for pid in "$@"; do
    ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + ${ticks:-0}))
  done
  echo "$total"
}
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
# json FILE KEY: a number from the BENCH_JSON line wrk printed into FILE.
json() { sed -n 's/^BENCH_JSON //p' "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
# The queues of every partition (RABBITMQ_PARTITIONS, default 1): <queue>, <queue>.1, ...
# A partitioned run is a comparison (BENCHMARKS.md, "Partitions"), not the reference figures:
# it writes only its report file unless BENCH_WRITE says otherwise.
partitions=${RABBITMQ_PARTITIONS:-1}
((partitions == 1)) || bench_write_default=0
queues=("$RABBITMQ_QUEUE")
for ((i = 1; i < partitions; i++)); do queues+=("$RABBITMQ_QUEUE.$i"); done
queue_depth() {
  local total=0 queue depth
  for queue in "${queues[@]}"; do
    depth=$("$loadgen" queue-depth --queue "$queue" | python3 -c "import json,sys; print(json.load(sys.stdin)['messages'])")
    total=$((total + depth))
  done
  echo "$total"
}

cleanup() {
  step "stopping the benchmark stack"
  scripts/local.sh down || true
  local queue
  for queue in "${queues[@]}"; do
    "$loadgen" delete-queue "$queue" "$queue.dead" >/dev/null 2>&1 || true
  done
}

step "building release binaries"
cargo build --release -p pingpong-ping -p pingpong-pong -p pingpong-loadgen
scripts/local.sh down >/dev/null 2>&1 || true
load_avg=$(cut -d' ' -f1-3 /proc/loadavg)
trap cleanup EXIT
step "starting the benchmark stack (queue $RABBITMQ_QUEUE)"
scripts/local.sh up >"$out/local-up.log" 2>&1 || {
  cat "$out/local-up.log"
  fail "scripts/local.sh up failed"
}
use_state_dir

ping_pid=$(<"$state_dir/ping.pid")
pong_pid=$(<"$state_dir/pong.pid")
nginx_master=$(<"$nginx_prefix/nginx.pid")
# shellcheck disable=SC2046 # one pid per word
nginx_pids() { echo "$nginx_master" $(ps -o pid= --ppid "$nginx_master"); }
broker_pid=$(ss -Hltnp "sport = :$RABBITMQ_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
broker_rss() { if [[ -n $broker_pid ]]; then mb "$(rss_kb "$broker_pid")"; else echo n/a; fi; }

sleep 2
idle_ping=$(mb "$(rss_kb "$ping_pid")")
idle_pong=$(mb "$(rss_kb "$pong_pid")")
# shellcheck disable=SC2046
idle_nginx=$(mb "$(rss_kb $(nginx_pids))")
idle_broker=$(broker_rss)

step "broker ceiling: pingpong-loadgen ceiling --seconds $ceiling_seconds --in-flight 256"
"$loadgen" ceiling --seconds "$ceiling_seconds" --in-flight 256 | tee "$out/ceiling.json"
ceiling=$(python3 -c "import json; print(round(json.load(open('$out/ceiling.json'))['msg_per_s']))")

# cpu_snapshot: CPU ticks of ping, pong, nginx (all processes), the broker and the whole machine
# (busy time of all CPUs), space separated.
cpu_snapshot() {
  # shellcheck disable=SC2046,SC2086
  echo "$(cpu_ticks "$ping_pid") $(cpu_ticks "$pong_pid") $(cpu_ticks $(nginx_pids)) $(cpu_ticks ${broker_pid:-})" \
    "$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)"
}
# cpu_report BEFORE AFTER: CPU seconds per process between two snapshots.
cpu_report() {
  awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    ours = (y[1]-x[1]) + (y[2]-x[2]) + (y[3]-x[3]) + (y[4]-x[4])
    printf "ping %.1f, pong %.1f, nginx %.1f, broker %.1f; wrk and other processes %.1f", (y[1]-x[1])/hz, (y[2]-x[2])/hz, (y[3]-x[3])/hz, (y[4]-x[4])/hz, ((y[5]-x[5]) - ours)/hz
  }'
}

# cpu_per_ping BEFORE AFTER ACKED: CPU microseconds per acknowledged ping of each process between
# two snapshots (utime+stime from /proc/PID/stat); sets cpu_us_ping/pong/nginx/broker.
cpu_per_ping() {
  read -r cpu_us_ping cpu_us_pong cpu_us_nginx cpu_us_broker < <(
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
      split(a, x, " "); split(b, y, " ")
      if (n < 1) n = 1
      for (i = 1; i <= 4; i++) printf "%.1f ", (y[i]-x[i]) / hz * 1e6 / n
      print ""
    }')
}

# post_run CONNS: wrk POST /ping, then wait for pong to drain; sets the post_* variables.
post_run() {
  local conns=$1 file=$out/post-$1.txt t0 t1 stored0 published0 stored_wrk published_end stored_end cpu0 cpu1 i
  published0=$(metric "$ping_url" pingpong_ping_messages_published_total)
  stored0=$(metric "$pong_url" pingpong_pong_messages_stored_total)
  cpu0=$(cpu_snapshot)
  step "wrk POST /ping: $conns connections, ${duration}s"
  wrk -t2 -c"$conns" -d"${duration}s" --timeout 10s --latency -s services/loadgen/wrk/post-ping.lua \
    "$gateway/ping" | tee "$file"
  t0=$(date +%s.%N)
  stored_wrk=$(metric "$pong_url" pingpong_pong_messages_stored_total)
  cpu1=$(cpu_snapshot)
  post_cpu=$(cpu_report "$cpu0" "$cpu1")
  post_backlog=$(queue_depth)
  step "draining: $post_backlog messages in the queue when wrk stopped"
  for ((i = 0; i < 3000; i++)); do
    published_end=$(metric "$ping_url" pingpong_ping_messages_published_total)
    stored_end=$(metric "$pong_url" pingpong_pong_messages_stored_total)
    if [[ $(queue_depth) == 0 && $stored_end -ge $published_end ]]; then break; fi
    sleep 0.1
  done
  t1=$(date +%s.%N)
  post_rps=$(json "$file" rps)
  post_p50=$(json "$file" p50_ms)
  post_p99=$(json "$file" p99_ms)
  post_non2xx=$(json "$file" non2xx)
  post_errors=$(($(json "$file" connect_errors) + $(json "$file" read_errors) + $(json "$file" write_errors) + $(json "$file" timeouts)))
  post_accepted=$((published_end - published0))
  post_ok=$(($(json "$file" requests) - post_non2xx))
  cpu_per_ping "$cpu0" "$cpu1" "$post_ok"
  post_cpu_us="$cpu_us_ping / $cpu_us_pong / $cpu_us_nginx / $cpu_us_broker"
  post_stored=$((stored_end - stored0))
  post_drain_s=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
  # Rates: ping's publish rate, pong's store rate while wrk ran, pong's rate on the backlog alone.
  post_ping_rate=$(awk -v n="$post_accepted" -v d="$duration" 'BEGIN { printf "%.0f", n / d }')
  post_pong_rate=$(awk -v n="$((stored_wrk - stored0))" -v d="$duration" 'BEGIN { printf "%.0f", n / d }')
  # Only meaningful with a backlog; polling alone takes ~1 s.
  post_drain_rate=$(awk -v n="$((stored_end - stored_wrk))" -v x="$post_drain_s" -v q="$post_backlog" \
    'BEGIN { if (q >= 1000 && x > 0) printf "%.0f", n / x; else print "-" }')
}

post_run 16
r16=("$post_rps" "$post_p50" "$post_p99" "$post_non2xx" "$post_errors" "$post_accepted" "$post_stored" "$post_backlog" "$post_drain_s" "$post_ping_rate" "$post_pong_rate" "$post_drain_rate" "$post_ok")
cpu16=$post_cpu
cpu_us16=$post_cpu_us
post_run 64
r64=("$post_rps" "$post_p50" "$post_p99" "$post_non2xx" "$post_errors" "$post_accepted" "$post_stored" "$post_backlog" "$post_drain_s" "$post_ping_rate" "$post_pong_rate" "$post_drain_rate" "$post_ok")
cpu64=$post_cpu
cpu_us64=$post_cpu_us
ping_us64=$cpu_us_ping
pong_us64=$cpu_us_pong

stored_now=$(metric "$pong_url" pingpong_pong_stored_messages)
while ((stored_now < 100000)); do
  step "topping up pong's store ($stored_now < 100000) with 10 s of POST /ping"
  wrk -t2 -c64 -d10s --timeout 10s -s services/loadgen/wrk/post-ping.lua "$gateway/ping" >/dev/null
  for ((i = 0; i < 600; i++)); do
    [[ $(queue_depth) == 0 ]] && break
    sleep 0.1
  done
  stored_now=$(metric "$pong_url" pingpong_pong_stored_messages)
done
step "wrk GET /pong?from=newest&limit=100 with $stored_now stored: 16 connections, 10s"
wrk -t2 -c16 -d10s --timeout 10s --latency -s services/loadgen/wrk/get-pong.lua \
  "$gateway/pong?from=newest&limit=100" | tee "$out/get.txt"
get_rps=$(json "$out/get.txt" rps)
get_p50=$(json "$out/get.txt" p50_ms)
get_p99=$(json "$out/get.txt" p99_ms)
get_non2xx=$(json "$out/get.txt" non2xx)

load_ping=$(mb "$(rss_kb "$ping_pid")")
load_pong=$(mb "$(rss_kb "$pong_pid")")
# shellcheck disable=SC2046
load_nginx=$(mb "$(rss_kb $(nginx_pids))")
load_broker=$(broker_rss)

# --- report -----------------------------------------------------------------------------------
ratio=$(awk -v a="${r64[0]}" -v c="$ceiling" 'BEGIN { printf "%.0f", 100 * a / c }')
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo "**not met**"; fi; }
errors_total=$((r16[3] + r16[4] + r64[3] + r64[4]))
drain_rate64=${r64[11]}
[[ $drain_rate64 == - ]] && drain_rate64=0
v_ratio=$(verdict "$ratio >= 30")
v_errors=$(verdict "$errors_total == 0")
v_p99=$(verdict "${r16[2]} <= 25")
v_drain=$(verdict "${r64[7]} <= ${r64[5]} / 100 || $drain_rate64 >= ${r64[9]}")
# wrk stops with one request in flight per connection: those may be published (and stored)
# without wrk counting their answer. Nothing lost: answered <= stored <= answered + connections.
v_equal=$(verdict "${r16[12]} <= ${r16[6]} && ${r16[6]} <= ${r16[12]} + 16 && ${r64[12]} <= ${r64[6]} && ${r64[6]} <= ${r64[12]} + 64")
v_get=$(verdict "$get_p99 <= 10")
v_rss=$(verdict "$idle_ping <= 15 && $idle_pong <= 15")
v_cpu=$(verdict "$ping_us64 <= 25 && $pong_us64 <= 12")
cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
mem_total=$(free -g | awk '/^Mem:/ { print $2 }')

report=$(
  cat <<EOF
Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs ($cpu_model), ${mem_total} GiB RAM,
Linux $(uname -r); RabbitMQ on $RABBITMQ_HOST:$RABBITMQ_PORT; load average before the run: $load_avg,
after: $(cut -d' ' -f1-3 /proc/loadavg).
Everything (wrk, nginx, ping, pong, RabbitMQ) shares these CPUs. Command: \`make bench\`
(wrk -t2 --latency through nginx on 127.0.0.1, body \`{"msg": "benchmark message from wrk"}\`,
release build, gateway access log off, RUST_LOG=warn, PONG_MAX_MESSAGES=100000, $trace_note, RABBITMQ_PARTITIONS=$partitions).
Figures swing with the other load on a shared machine: compare with the runs on record below, and
with the CPU seconds other processes used during each run.

| measurement | 16 connections | 64 connections |
| --- | --- | --- |
| POST /ping requests/s (wrk) | ${r16[0]} | ${r64[0]} |
| latency p50 / p99 (ms) | ${r16[1]} / ${r16[2]} | ${r64[1]} / ${r64[2]} |
| non-2xx responses / socket errors | ${r16[3]} / ${r16[4]} | ${r64[3]} / ${r64[4]} |
| accepted: 200s counted by wrk / ping's published counter; stored (pong counter) | ${r16[12]} / ${r16[5]}; ${r16[6]} | ${r64[12]} / ${r64[5]}; ${r64[6]} |
| queue backlog when wrk stopped / drain time | ${r16[7]} / ${r16[8]} s | ${r64[7]} / ${r64[8]} s |
| msg/s: ping published / pong stored (during wrk) / pong drain of the backlog | ${r16[9]} / ${r16[10]} / ${r16[11]} | ${r64[9]} / ${r64[10]} / ${r64[11]} |
| CPU seconds used during the run (${duration} s wall × $(nproc) CPUs = $(($(nproc) * duration)) s) | $cpu16 | $cpu64 |
| CPU µs per acknowledged ping: ping / pong / nginx / broker (/proc utime+stime ÷ 200s) | $cpu_us16 | $cpu_us64 |

| measurement | value |
| --- | --- |
| broker ceiling (loadgen: persistent, confirms, 256 in flight, ${ceiling_seconds} s) | $ceiling msg/s |
| ping at 64 connections / ceiling | ${ratio}% |
| GET /pong?from=newest&limit=100 with $stored_now stored: requests/s, p50 / p99 | $get_rps, $get_p50 / $get_p99 ms (non-2xx: $get_non2xx) |
| RSS idle: ping / pong / nginx (all processes) / broker | $idle_ping / $idle_pong / $idle_nginx / $idle_broker MB |
| RSS after load: ping / pong / nginx / broker | $load_ping / $load_pong / $load_nginx / $load_broker MB |

| target (issue 2) | result |
| --- | --- |
| ping ≥ 30% of the broker ceiling at 64 connections | ${ratio}%: $v_ratio |
| zero errors (non-2xx + socket errors, both runs) | $errors_total: $v_errors |
| p99 ≤ 25 ms at 16 connections | ${r16[2]} ms: $v_p99 |
| pong drains at least as fast as ping publishes (64 conns: backlog ≤ 1% of accepted, or drain rate ≥ publish rate) | backlog ${r64[7]}, drain ${r64[11]} msg/s: $v_drain |
| accepted == stored after the drain (up to the requests in flight when wrk stopped: answered ≤ stored ≤ answered + connections) | 16: ${r16[12]} / ${r16[6]}, 64: ${r64[12]} / ${r64[6]}: $v_equal |
| GET /pong?from=newest&limit=100 p99 ≤ 10 ms with 100,000 stored | $get_p99 ms: $v_get |
| idle RSS ≤ 15 MB per service | $idle_ping / $idle_pong MB: $v_rss |
| CPU per acknowledged ping at 64 connections (issue 20): ping ≤ 25 µs, pong ≤ 12 µs | $ping_us64 / $pong_us64 µs: $v_cpu |
EOF
)

step "report"
printf '%s\n' "$report" | tee "$out/report.md"

# One line per run, kept (newest first, at most 12) in BENCHMARKS.md: runs on a shared machine vary.
history_row="| $(date -u '+%Y-%m-%d %H:%M') | ${load_avg%% *} | ${r16[0]} / ${r16[2]} | ${r64[0]} / ${r64[2]} | $ceiling | ${ratio}% | $get_p99 | $errors_total |"

if [[ ${BENCH_WRITE:-$bench_write_default} != 0 ]]; then
  python3 - "$out/report.md" "$history_row" <<'PY'
import re, sys
from pathlib import Path
report = Path(sys.argv[1]).read_text().rstrip() + "\n"
row = sys.argv[2]
path = Path("BENCHMARKS.md")
text = path.read_text()
marker = "<!-- data-plane results: written by scripts/bench.sh runs; edit only this section -->"
start = text.index(marker) + len(marker)
nxt = re.search(r"^## ", text[start:], flags=re.M)
end = start + nxt.start() if nxt else len(text)
history_title = "### Runs on record (newest first)"
old = text[start:end]
rows = []
if history_title in old:
    rows = [l for l in old.split(history_title, 1)[1].splitlines() if re.match(r"^\| \d{4}-", l)]
rows = [row] + rows[:11]
history = (
    f"{history_title}\n\n"
    "| run (UTC) | load avg before | 16 conns: req/s / p99 ms | 64 conns: req/s / p99 ms "
    "| broker ceiling msg/s | ping at 64 / ceiling | GET limit=100 p99 ms | errors |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
)
path.write_text(text[:start] + "\n" + report + "\n" + history + "\n" + text[end:])
PY
  say "wrote the report into BENCHMARKS.md (Data plane section)"
fi
