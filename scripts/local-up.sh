#!/usr/bin/env bash
# `make local`: run the whole pingpong stack on this machine, in the background, without Kubernetes:
#   RabbitMQ  the broker already answering on RABBITMQ_HOST:RABBITMQ_PORT, or a private node of the
#             installed rabbitmq-server started here (data and logs under $PINGPONG_LOCAL_DIR);
#   ping      127.0.0.1:$PING_PORT  (default 8001)
#   pong      127.0.0.1:$PONG_PORT  (default 8002)
#   nginx     gateway on 127.0.0.1:$GATEWAY_PORT (default 8080): POST /ping -> ping, GET /pong -> pong
# Idempotent: what already runs (checked by pid file and executable) is left alone. Returns once
# both services are ready and a request through the gateway succeeded. `make local-down` stops
# exactly what this started.
#
# Environment (defaults in brackets):
#   RABBITMQ_HOST [127.0.0.1], RABBITMQ_PORT [5672], RABBITMQ_VHOST [/], RABBITMQ_DEFAULT_USER [guest],
#   RABBITMQ_DEFAULT_PASS [guest], RABBITMQ_QUEUE [pingpong]   broker and queue, passed to the services
#   PING_PORT [8001], PONG_PORT [8002], GATEWAY_PORT [8080]     listen ports, all on 127.0.0.1
#   GATEWAY_ACCESS_LOG [on]         nginx access log (on|off)
#   PINGPONG_PROFILE [release]      cargo profile to build and run (release|debug)
#   PINGPONG_BIN_DIR [unset]        run ping/pong from this directory instead of building
#   PINGPONG_LOCAL_DIR [.local]     pid files, logs, nginx prefix, private broker data
#   LOCAL_RABBITMQ_NODE [pingpong-local@localhost], LOCAL_RABBITMQ_DIST_PORT [RABBITMQ_PORT+20000]
#                                   name and distribution port of a broker node started here
#   RUST_LOG, LOG_FORMAT, PONG_MAX_MESSAGES   passed through to the services
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/local/common.sh
source deploy/local/common.sh

[[ $PINGPONG_PROFILE == release || $PINGPONG_PROFILE == debug ]] ||
  fail "PINGPONG_PROFILE must be release or debug, got '$PINGPONG_PROFILE'"
for var in PING_PORT PONG_PORT GATEWAY_PORT RABBITMQ_PORT; do
  [[ ${!var} =~ ^[0-9]+$ && ${!var} -ge 1 && ${!var} -le 65535 ]] ||
    fail "$var must be a TCP port (1-65535), got '${!var}'"
done
[[ $GATEWAY_ACCESS_LOG == on || $GATEWAY_ACCESS_LOG == off ]] ||
  fail "GATEWAY_ACCESS_LOG must be on or off, got '$GATEWAY_ACCESS_LOG'"
nginx_bin=$(find_nginx)
[[ -n $nginx_bin ]] || fail "nginx is not installed (Debian/Ubuntu: apt-get install nginx-light)"
command -v curl >/dev/null || fail "curl is not installed (Debian/Ubuntu: apt-get install curl)"

use_state_dir

on_exit() {
  local rc=$?
  ((rc == 0)) || say "make local failed; 'make local-down' stops whatever it started. Logs: $state_dir" >&2
}
trap on_exit EXIT

# --- binaries -------------------------------------------------------------------------------------
if [[ -n ${PINGPONG_BIN_DIR:-} ]]; then
  say "==> using the binaries in $PINGPONG_BIN_DIR (PINGPONG_BIN_DIR set: no build)"
  bin_dir=$(cd "$PINGPONG_BIN_DIR" && pwd)
else
  say "==> building ping and pong ($PINGPONG_PROFILE)"
  build_flags=()
  [[ $PINGPONG_PROFILE == release ]] && build_flags+=(--release)
  cargo build "${build_flags[@]}" -p pingpong-ping -p pingpong-pong
  target_dir=${CARGO_TARGET_DIR:-target}
  bin_dir=$(cd "$target_dir/$PINGPONG_PROFILE" && pwd)
fi
for bin in ping pong; do
  [[ -x $bin_dir/$bin ]] || fail "$bin_dir/$bin was not built"
done

# --- broker ---------------------------------------------------------------------------------------
start_private_broker() {
  case "$RABBITMQ_HOST" in
    127.* | localhost) ;;
    *) fail "no broker answers on $RABBITMQ_HOST:$RABBITMQ_PORT, and it is not a local address: start it, or unset RABBITMQ_HOST to run one here" ;;
  esac
  if ! command -v rabbitmq-server >/dev/null || ! command -v rabbitmqctl >/dev/null; then
    fail "no broker answers on $RABBITMQ_HOST:$RABBITMQ_PORT and rabbitmq-server is not installed: install it (Debian/Ubuntu: apt-get install rabbitmq-server) or point RABBITMQ_HOST/RABBITMQ_PORT at a running broker"
  fi
  local dist_port=${LOCAL_RABBITMQ_DIST_PORT:-$((RABBITMQ_PORT + 20000))}
  ((dist_port <= 65535)) || fail "set LOCAL_RABBITMQ_DIST_PORT: RABBITMQ_PORT+20000 is not a port"
  mkdir -p "$broker_dir"
  printf '[].\n' >"$broker_dir/enabled_plugins"
  : >"$broker_dir/rabbitmq-env.conf"
  {
    printf 'listeners.tcp.1 = 127.0.0.1:%s\n' "$RABBITMQ_PORT"
    printf 'default_vhost = %s\n' "$RABBITMQ_VHOST"
    if [[ $RABBITMQ_DEFAULT_USER != guest || $RABBITMQ_DEFAULT_PASS != guest ]]; then
      printf 'default_user = %s\ndefault_pass = %s\n' "$RABBITMQ_DEFAULT_USER" "$RABBITMQ_DEFAULT_PASS"
    fi
  } >"$broker_dir/rabbitmq.conf"
  chmod 600 "$broker_dir/rabbitmq.conf"
  # Debian's rabbitmq-server wrapper runs the node as the `rabbitmq` user when called as root.
  if [[ $(id -u) == 0 ]] && id rabbitmq >/dev/null 2>&1; then
    chown -R rabbitmq: "$broker_dir"
  fi
  say "==> starting a private RabbitMQ node $LOCAL_RABBITMQ_NODE on 127.0.0.1:$RABBITMQ_PORT (data: $broker_dir)"
  printf '%s\n' "$LOCAL_RABBITMQ_NODE" >"$broker_marker"
  (
    cd /
    RABBITMQ_NODENAME=$LOCAL_RABBITMQ_NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_NODE_PORT=$RABBITMQ_PORT RABBITMQ_DIST_PORT=$dist_port \
      RABBITMQ_MNESIA_BASE=$broker_dir/mnesia RABBITMQ_LOG_BASE=$broker_dir/log \
      RABBITMQ_PID_FILE=$broker_dir/rabbitmq.pid \
      RABBITMQ_ENABLED_PLUGINS_FILE=$broker_dir/enabled_plugins \
      RABBITMQ_CONFIG_FILE=$broker_dir/rabbitmq.conf \
      RABBITMQ_CONF_ENV_FILE=$broker_dir/rabbitmq-env.conf \
      setsid rabbitmq-server >>"$state_dir/rabbitmq.out" 2>&1 </dev/null &
  )
  local i
  for ((i = 0; i < 120; i++)); do
    listening "$RABBITMQ_HOST" "$RABBITMQ_PORT" && return 0
    sleep 1
  done
  tail -n 30 "$state_dir/rabbitmq.out" >&2 || true
  fail "the private RabbitMQ node did not open 127.0.0.1:$RABBITMQ_PORT within 120 s (log: $state_dir/rabbitmq.out)"
}

if listening "$RABBITMQ_HOST" "$RABBITMQ_PORT"; then
  if [[ -f $broker_marker ]]; then
    broker_note="started by make local (node $(<"$broker_marker"))"
  else
    broker_note="already running, not managed by make local"
  fi
  say "==> RabbitMQ answers on $RABBITMQ_HOST:$RABBITMQ_PORT ($broker_note)"
else
  start_private_broker
  broker_note="started by make local (node $LOCAL_RABBITMQ_NODE)"
fi

# --- services -------------------------------------------------------------------------------------
# recorded_exe NAME: the executable local-up started NAME from (empty if none recorded).
recorded_exe() { if [[ -f $state_dir/$1.exe ]]; then cat "$state_dir/$1.exe"; fi; }

# start_service NAME PORT: start $bin_dir/NAME unless the one recorded in the pid file still runs.
start_service() {
  local name=$1 port=$2 pidfile=$state_dir/$1.pid exe recorded pid
  exe=$(readlink -f "$bin_dir/$name")
  recorded=$(recorded_exe "$name")
  if [[ -n $recorded ]] && pid=$(live_pid "$pidfile" "$recorded"); then
    local running_port
    running_port=$(cat "$state_dir/$name.port" 2>/dev/null || true)
    [[ $running_port == "$port" ]] ||
      fail "$name already runs (pid $pid) on port ${running_port:-?}, not $port: 'make local-down' first"
    if [[ $recorded != "$exe" ]]; then
      say "==> $name already runs (pid $pid) from $recorded; 'make local-down' first to switch binaries"
    elif [[ $(readlink "/proc/$pid/exe") == *' (deleted)' ]]; then
      say "==> $name already runs (pid $pid) but its binary was rebuilt since: 'make local-down && make local' restarts it"
    else
      say "==> $name already runs (pid $pid)"
    fi
    return 0
  fi
  listening 127.0.0.1 "$port" &&
    fail "port $port (for $name) is in use by a process make local did not start; free it or set ${name^^}_PORT"
  say "==> starting $name on 127.0.0.1:$port (log: $state_dir/$name.log)"
  LISTEN_ADDR=127.0.0.1:$port setsid "$exe" >>"$state_dir/$name.log" 2>&1 </dev/null &
  printf '%s\n' "$!" >"$pidfile"
  # The executable, so that local-down can tell this process from a recycled pid.
  printf '%s\n' "$exe" >"$state_dir/$name.exe"
  printf '%s\n' "$port" >"$state_dir/$name.port"
}

# wait_ready NAME PORT: wait for /readyz (200) of a service, or fail with its log.
wait_ready() {
  local name=$1 port=$2 exe i
  exe=$(recorded_exe "$name")
  for ((i = 0; i < 600; i++)); do
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null && return 0
    if ! live_pid "$state_dir/$name.pid" "$exe" >/dev/null; then
      tail -n 30 "$state_dir/$name.log" >&2 || true
      fail "$name exited during start-up (log: $state_dir/$name.log)"
    fi
    sleep 0.1
  done
  tail -n 30 "$state_dir/$name.log" >&2 || true
  fail "$name did not become ready on 127.0.0.1:$port/readyz within 60 s (log: $state_dir/$name.log)"
}

start_service ping "$PING_PORT"
start_service pong "$PONG_PORT"
wait_ready ping "$PING_PORT"
wait_ready pong "$PONG_PORT"

# --- gateway --------------------------------------------------------------------------------------
if [[ $GATEWAY_ACCESS_LOG == on ]]; then
  access_log='logs/access.log combined buffer=64k flush=1s'
else
  access_log=off
fi
mkdir -p "$nginx_prefix/logs" "$nginx_prefix/tmp"
sed -e "s|@GATEWAY_LISTEN@|127.0.0.1:$GATEWAY_PORT|" \
  -e "s|@PING_ADDR@|127.0.0.1:$PING_PORT|" \
  -e "s|@PONG_ADDR@|127.0.0.1:$PONG_PORT|" \
  -e "s|@ACCESS_LOG@|$access_log|" \
  deploy/local/nginx.conf.template >"$nginx_prefix/nginx.conf.new"
nginx_args=(-p "$nginx_prefix/" -e "$nginx_prefix/logs/error.log" -c "$nginx_prefix/nginx.conf")
if pid=$(live_pid "$nginx_prefix/nginx.pid" "$nginx_bin"); then
  if cmp -s "$nginx_prefix/nginx.conf.new" "$nginx_prefix/nginx.conf"; then
    say "==> nginx gateway already runs (pid $pid)"
    rm -f "$nginx_prefix/nginx.conf.new"
  else
    mv "$nginx_prefix/nginx.conf.new" "$nginx_prefix/nginx.conf"
    "$nginx_bin" -t -q "${nginx_args[@]}"
    say "==> nginx gateway runs (pid $pid): reloading its changed configuration"
    kill -HUP "$pid"
  fi
else
  listening 127.0.0.1 "$GATEWAY_PORT" &&
    fail "port $GATEWAY_PORT (gateway) is in use by a process make local did not start; free it or set GATEWAY_PORT"
  mv "$nginx_prefix/nginx.conf.new" "$nginx_prefix/nginx.conf"
  "$nginx_bin" -t -q "${nginx_args[@]}"
  say "==> starting the nginx gateway on 127.0.0.1:$GATEWAY_PORT (logs: $nginx_prefix/logs)"
  "$nginx_bin" "${nginx_args[@]}"
fi

gateway=http://127.0.0.1:$GATEWAY_PORT
for ((i = 0; i < 100; i++)); do
  curl -fsS -o /dev/null --max-time 2 "$gateway/pong?limit=1" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null --max-time 5 "$gateway/pong?limit=1" ||
  fail "the gateway does not answer GET $gateway/pong (log: $nginx_prefix/logs/error.log)"

cat <<EOF

pingpong runs locally:
  gateway  $gateway            POST /ping, GET /pong
  ping     http://127.0.0.1:$PING_PORT    /healthz /readyz /metrics (not exposed by the gateway)
  pong     http://127.0.0.1:$PONG_PORT    /healthz /readyz /metrics (not exposed by the gateway)
  broker   amqp://$RABBITMQ_HOST:$RABBITMQ_PORT, queue '$RABBITMQ_QUEUE' ($broker_note)
  logs     $state_dir/{ping,pong}.log, $nginx_prefix/logs/

Try:
  curl -s -X POST $gateway/ping -H 'Content-Type: application/json' -d '{"msg": "hello"}'
  curl -s '$gateway/pong?limit=10'
Stop everything with: make local-down
EOF
