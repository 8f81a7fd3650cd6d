#!/usr/bin/env bash
# The pingpong stack on this machine, without Kubernetes:
#   scripts/local.sh up       (`make local`) start it in the background
#   scripts/local.sh down     (`make local-down`) stop exactly what `up` started
#   scripts/local.sh status   what runs, by pid file
#
# `up` runs:
#   RabbitMQ  the broker already answering on RABBITMQ_HOST:RABBITMQ_PORT, or a private node of the
#             installed rabbitmq-server started here (data and logs under $PINGPONG_LOCAL_DIR);
#   ping      127.0.0.1:$PING_PORT  (default 8001)
#   pong      127.0.0.1:$PONG_PORT  (default 8002)
#   nginx     gateway on 127.0.0.1:$GATEWAY_PORT (default 8080): POST /ping -> ping, GET /pong -> pong
#   Jaeger    v2 all-in-one (LOCAL_TRACES=on, the default): OTLP/HTTP on 127.0.0.1:$JAEGER_OTLP_PORT
#             (default 4318), query API and UI on 127.0.0.1:$JAEGER_UI_PORT (default 16686), memory
#             storage; ping and pong export their traces to it. Built once from Go modules by
#             scripts/observability/build.sh jaeger (cached); without Go, traces stay off.
# First it installs what is missing (nginx, curl, and rabbitmq-server when no broker answers) from
# the Debian packages, when it runs as root or sudo works, saying exactly what it installs;
# otherwise it prints the one command to run. Idempotent: what already runs (checked by pid file
# and executable) is left alone. Returns once both services are ready and a request through the
# gateway succeeded.
#
# `down` stops the gateway, pong, ping and the RabbitMQ node only if `up` started it; a broker that
# was already running is left alone. Logs and the private broker's data stay for the next run.
#
# Environment (defaults in brackets):
#   RABBITMQ_HOST [127.0.0.1], RABBITMQ_PORT [5672], RABBITMQ_VHOST [/], RABBITMQ_DEFAULT_USER [guest],
#   RABBITMQ_DEFAULT_PASS [guest], RABBITMQ_QUEUE [pingpong]   broker and queue, passed to the services
#   PING_PORT [8001], PONG_PORT [8002], GATEWAY_PORT [8080]     listen ports, all on 127.0.0.1
#   GATEWAY_ACCESS_LOG [on]         nginx access log (on|off)
#   PINGPONG_PROFILE [release]      cargo profile to build and run (release|debug)
#   PINGPONG_BIN_DIR [unset]        run ping/pong from this directory instead of building
#   PINGPONG_LOCAL_DIR [.local]     pid files, logs, nginx prefix, private broker data
#   PINGPONG_INSTALL [auto]         auto: install missing packages when possible; 0: never install
#   LOCAL_RABBITMQ_NODE [pingpong-local@localhost], LOCAL_RABBITMQ_DIST_PORT [RABBITMQ_PORT+20000]
#                                   name and distribution port of a broker node started here
#   LOCAL_TRACES [on]               on: run Jaeger and send the services' traces to it; off: none
#   JAEGER_OTLP_PORT [4318], JAEGER_UI_PORT [16686], JAEGER_GRPC_PORT [16685]   Jaeger's ports
#   RUST_LOG, LOG_FORMAT, PONG_MAX_MESSAGES, OTEL_*   passed through to the services
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=deploy/local/common.sh
source deploy/local/common.sh

usage() {
  echo "usage: $0 up|down|status" >&2
  exit 2
}

# --- prerequisites --------------------------------------------------------------------------------
# broker_is_local: true when RABBITMQ_HOST names this machine (a private node may be started).
broker_is_local() { [[ $RABBITMQ_HOST == 127.* || $RABBITMQ_HOST == localhost ]]; }

# ensure_prerequisites: cargo (unless PINGPONG_BIN_DIR), then the Debian packages that are missing.
ensure_prerequisites() {
  if [[ -z ${PINGPONG_BIN_DIR:-} ]]; then
    need cargo "install a Rust toolchain >= 1.89: https://rustup.rs, then run make local again"
  fi
  local pkgs=()
  [[ -n $(find_nginx) ]] || pkgs+=(nginx)
  have curl || pkgs+=(curl)
  if ! listening "$RABBITMQ_HOST" "$RABBITMQ_PORT" && broker_is_local &&
    ! { have rabbitmq-server && have rabbitmqctl; }; then
    pkgs+=(rabbitmq-server)
  fi
  ((${#pkgs[@]} == 0)) || install_packages --no-install-recommends "make local" "${pkgs[@]}"
  nginx_bin=$(find_nginx)
  [[ -n $nginx_bin ]] || fail "nginx is still not installed (Debian/Ubuntu: apt-get install nginx)"
}

# --- up -------------------------------------------------------------------------------------------
# check_settings: every setting is valid before anything starts.
check_settings() {
  local var
  [[ $PINGPONG_PROFILE == release || $PINGPONG_PROFILE == debug ]] ||
    fail "PINGPONG_PROFILE must be release or debug, got '$PINGPONG_PROFILE'"
  for var in PING_PORT PONG_PORT GATEWAY_PORT RABBITMQ_PORT JAEGER_OTLP_PORT JAEGER_UI_PORT JAEGER_GRPC_PORT; do
    [[ ${!var} =~ ^[0-9]+$ && ${!var} -ge 1 && ${!var} -le 65535 ]] ||
      fail "$var must be a TCP port (1-65535), got '${!var}'"
  done
  [[ $GATEWAY_ACCESS_LOG == on || $GATEWAY_ACCESS_LOG == off ]] ||
    fail "GATEWAY_ACCESS_LOG must be on or off, got '$GATEWAY_ACCESS_LOG'"
  [[ $PINGPONG_INSTALL == auto || $PINGPONG_INSTALL == 0 ]] ||
    fail "PINGPONG_INSTALL must be auto or 0, got '$PINGPONG_INSTALL'"
  [[ $LOCAL_TRACES == on || $LOCAL_TRACES == off ]] ||
    fail "LOCAL_TRACES must be on or off, got '$LOCAL_TRACES'"
}

# start_jaeger: Jaeger v2 all-in-one on loopback (scripts/observability/jaeger.yaml), unless it
# already runs; sets traces_note and, when Jaeger is up, exports OTEL_EXPORTER_OTLP_ENDPOINT for
# the services started after it. Without Go (and no cached build) traces stay off: a note, not an
# error.
start_jaeger() {
  traces_note="off (LOCAL_TRACES=off)"
  [[ $LOCAL_TRACES == on ]] || return 0
  local bin pidfile=$jaeger_dir/jaeger.pid pid
  mkdir -p "$jaeger_dir"
  if ! bin=$(scripts/observability/build.sh --cached jaeger 2>/dev/null | tail -n 1); then
    if ! have go; then
      traces_note="off: Jaeger is not built and Go is missing (install Go, then make local again)"
      say "==> traces $traces_note"
      return 0
    fi
    say "==> building Jaeger v2 from Go modules once (cold: several minutes on 2 cores)"
    bin=$(scripts/observability/build.sh jaeger | tail -n 1)
  fi
  bin=$(readlink -f "$bin")
  if pid=$(live_pid "$pidfile" "$bin"); then
    say "==> Jaeger already runs (pid $pid)"
  else
    listening 127.0.0.1 "$JAEGER_OTLP_PORT" &&
      fail "port $JAEGER_OTLP_PORT (Jaeger OTLP) is in use by a process make local did not start; free it, set JAEGER_OTLP_PORT or LOCAL_TRACES=off"
    listening 127.0.0.1 "$JAEGER_UI_PORT" &&
      fail "port $JAEGER_UI_PORT (Jaeger UI) is in use by a process make local did not start; free it, set JAEGER_UI_PORT or LOCAL_TRACES=off"
    say "==> starting Jaeger on 127.0.0.1:$JAEGER_UI_PORT (OTLP 127.0.0.1:$JAEGER_OTLP_PORT, log: $jaeger_dir/jaeger.log)"
    JAEGER_LISTEN_HOST=127.0.0.1 JAEGER_OTLP_HTTP_PORT=$JAEGER_OTLP_PORT \
      JAEGER_QUERY_PORT=$JAEGER_UI_PORT JAEGER_QUERY_GRPC_PORT=$JAEGER_GRPC_PORT \
      setsid "$bin" --config "$PWD/scripts/observability/jaeger.yaml" >>"$jaeger_dir/jaeger.log" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$pidfile"
    printf '%s\n' "$bin" >"$jaeger_dir/jaeger.exe"
    if ! wait_http "http://127.0.0.1:$JAEGER_UI_PORT/api/services" 60 "$pid"; then
      tail -n 30 "$jaeger_dir/jaeger.log" >&2 || true
      fail "Jaeger did not answer on 127.0.0.1:$JAEGER_UI_PORT within 60 s (log: $jaeger_dir/jaeger.log)"
    fi
  fi
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$JAEGER_OTLP_PORT
  traces_note="http://127.0.0.1:$JAEGER_UI_PORT (Jaeger; API: /api/traces/<trace id>)"
}

# build_services: sets bin_dir to the directory holding the ping and pong executables.
build_services() {
  if [[ -n ${PINGPONG_BIN_DIR:-} ]]; then
    say "==> using the binaries in $PINGPONG_BIN_DIR (PINGPONG_BIN_DIR set: no build)"
    bin_dir=$(cd "$PINGPONG_BIN_DIR" && pwd)
  else
    local build_flags=() target_dir=${CARGO_TARGET_DIR:-target}
    [[ $PINGPONG_PROFILE == release ]] && build_flags+=(--release)
    if [[ ! -x $target_dir/$PINGPONG_PROFILE/ping || ! -x $target_dir/$PINGPONG_PROFILE/pong ]]; then
      say "==> building ping and pong ($PINGPONG_PROFILE) for the first time: about 5 minutes on 2 cores, cargo shows each crate"
    else
      say "==> building ping and pong ($PINGPONG_PROFILE)"
    fi
    # Cargo prints one line per crate and a progress bar on a terminal.
    cargo build "${build_flags[@]}" -p pingpong-ping -p pingpong-pong
    bin_dir=$(cd "$target_dir/$PINGPONG_PROFILE" && pwd)
  fi
  local bin
  for bin in ping pong; do
    [[ -x $bin_dir/$bin ]] || fail "$bin_dir/$bin was not built"
  done
}

# start_private_broker: a RabbitMQ node of the installed rabbitmq-server, data under $broker_dir.
start_private_broker() {
  broker_is_local ||
    fail "no broker answers on $RABBITMQ_HOST:$RABBITMQ_PORT, and it is not a local address: start it, or unset RABBITMQ_HOST to run one here"
  if ! have rabbitmq-server || ! have rabbitmqctl; then
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
  if ! wait_port "the private RabbitMQ node" "$RABBITMQ_HOST" "$RABBITMQ_PORT" 120; then
    tail -n 30 "$state_dir/rabbitmq.out" >&2 || true
    fail "see the broker log: $state_dir/rabbitmq.out"
  fi
}

# ensure_broker: sets broker_note to who runs the broker.
ensure_broker() {
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
}

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
  local name=$1 port=$2 pid status=0
  pid=$(live_pid "$state_dir/$name.pid" "$(recorded_exe "$name")") || pid=0
  wait_http "http://127.0.0.1:$port/readyz" 60 "$pid" || status=$?
  ((status == 0)) && return 0
  tail -n 30 "$state_dir/$name.log" >&2 || true
  ((status == 2)) && fail "$name exited during start-up (log: $state_dir/$name.log)"
  fail "$name did not become ready on 127.0.0.1:$port/readyz within 60 s (log: $state_dir/$name.log)"
}

# start_gateway: render the nginx configuration; start nginx, or reload it when it changed.
start_gateway() {
  local access_log pid nginx_args
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
}

up() {
  check_settings
  use_state_dir
  trap 'rc=$?; ((rc == 0)) || say "make local failed; make local-down stops whatever it started. Logs: $state_dir" >&2' EXIT
  ensure_prerequisites
  build_services
  ensure_broker
  start_jaeger
  start_service ping "$PING_PORT"
  start_service pong "$PONG_PORT"
  wait_ready ping "$PING_PORT"
  wait_ready pong "$PONG_PORT"
  start_gateway

  local gateway=http://127.0.0.1:$GATEWAY_PORT
  wait_http "$gateway/pong?limit=1" 10 ||
    fail "the gateway does not answer GET $gateway/pong (log: $nginx_prefix/logs/error.log)"
  cat <<EOF

pingpong runs locally:
  gateway  $gateway            POST /ping, GET /pong
  ping     http://127.0.0.1:$PING_PORT    /healthz /readyz /metrics (not exposed by the gateway)
  pong     http://127.0.0.1:$PONG_PORT    /healthz /readyz /metrics (not exposed by the gateway)
  broker   amqp://$RABBITMQ_HOST:$RABBITMQ_PORT, queue '$RABBITMQ_QUEUE' ($broker_note)
  traces   $traces_note
  logs     $state_dir/{ping,pong}.log, $nginx_prefix/logs/

Try:
  curl -s -X POST $gateway/ping -H 'Content-Type: application/json' -d '{"msg": "hello"}'
  curl -s '$gateway/pong?from=newest&limit=10'
Stop everything with: make local-down
EOF
}

# --- down -----------------------------------------------------------------------------------------
down() {
  if [[ ! -d $PINGPONG_LOCAL_DIR ]]; then
    say "nothing to stop ($PINGPONG_LOCAL_DIR does not exist)"
    return 0
  fi
  use_state_dir
  say "==> stopping what make local started ($state_dir)"
  local stopped=0 pid name pidfile exefile node nginx_bin
  nginx_bin=$(find_nginx)
  # SIGQUIT: graceful shutdown of nginx (finish in-flight requests).
  if [[ -n $nginx_bin ]] && pid=$(live_pid "$nginx_prefix/nginx.pid" "$nginx_bin"); then
    stop_pid "$nginx_prefix/nginx.pid" QUIT "$pid" "nginx gateway" 15
    stopped=$((stopped + 1))
  fi
  # The consumer first, so a last ping's message is left in the durable queue for the next run
  # rather than half-processed.
  for name in pong ping; do
    pidfile=$state_dir/$name.pid
    exefile=$state_dir/$name.exe
    if [[ -f $pidfile && -f $exefile ]] && pid=$(live_pid "$pidfile" "$(<"$exefile")"); then
      # SIGTERM: graceful shutdown (drain requests, settle confirms and acks).
      stop_pid "$pidfile" TERM "$pid" "$name" 20
      stopped=$((stopped + 1))
    fi
    rm -f "$pidfile" "$exefile" "$state_dir/$name.port"
  done
  if [[ -f $jaeger_dir/jaeger.pid && -f $jaeger_dir/jaeger.exe ]] &&
    pid=$(live_pid "$jaeger_dir/jaeger.pid" "$(<"$jaeger_dir/jaeger.exe")"); then
    stop_pid "$jaeger_dir/jaeger.pid" TERM "$pid" "Jaeger" 15
    stopped=$((stopped + 1))
  fi
  rm -f "$jaeger_dir/jaeger.pid" "$jaeger_dir/jaeger.exe"
  if [[ -f $broker_marker ]]; then
    node=$(<"$broker_marker")
    say "  stopping RabbitMQ node $node (started by make local)"
    if rabbitmqctl -q -n "$node" stop >/dev/null 2>&1; then
      say "  stopped RabbitMQ node $node"
    else
      say "  RabbitMQ node $node was not running"
    fi
    rm -f "$broker_marker"
    stopped=$((stopped + 1))
  fi
  ((stopped > 0)) || say "nothing was running"
}

# --- status ---------------------------------------------------------------------------------------
status() {
  if [[ ! -d $PINGPONG_LOCAL_DIR ]]; then
    say "nothing runs ($PINGPONG_LOCAL_DIR does not exist)"
    return 0
  fi
  use_state_dir
  local name pid nginx_bin
  for name in ping pong; do
    if pid=$(live_pid "$state_dir/$name.pid" "$(recorded_exe "$name")"); then
      say "$name     runs (pid $pid) on 127.0.0.1:$(<"$state_dir/$name.port")"
    else
      say "$name     not running"
    fi
  done
  nginx_bin=$(find_nginx)
  if [[ -n $nginx_bin ]] && pid=$(live_pid "$nginx_prefix/nginx.pid" "$nginx_bin"); then
    say "gateway  runs (pid $pid)"
  else
    say "gateway  not running"
  fi
  if [[ -f $jaeger_dir/jaeger.exe ]] && pid=$(live_pid "$jaeger_dir/jaeger.pid" "$(<"$jaeger_dir/jaeger.exe")"); then
    say "jaeger   runs (pid $pid) on http://127.0.0.1:$JAEGER_UI_PORT"
  else
    say "jaeger   not running"
  fi
  if [[ -f $broker_marker ]]; then
    say "broker   node $(<"$broker_marker") (started by make local)"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) usage ;;
esac
