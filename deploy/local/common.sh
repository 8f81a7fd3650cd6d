# shellcheck shell=bash
# Settings of the local stack, shared by scripts/local.sh and scripts/bench.sh (sourced after
# scripts/lib.sh, never run).
#
# Every setting comes from the environment with a default; see the README "Run locally" section.
# State (pid files, logs, the nginx prefix, a broker started by us) lives in $PINGPONG_LOCAL_DIR.

RABBITMQ_HOST=${RABBITMQ_HOST:-127.0.0.1}
RABBITMQ_PORT=${RABBITMQ_PORT:-5672}
RABBITMQ_VHOST=${RABBITMQ_VHOST:-/}
RABBITMQ_DEFAULT_USER=${RABBITMQ_DEFAULT_USER:-guest}
RABBITMQ_DEFAULT_PASS=${RABBITMQ_DEFAULT_PASS:-guest}
RABBITMQ_QUEUE=${RABBITMQ_QUEUE:-pingpong}
export RABBITMQ_HOST RABBITMQ_PORT RABBITMQ_VHOST RABBITMQ_DEFAULT_USER RABBITMQ_DEFAULT_PASS RABBITMQ_QUEUE

PING_PORT=${PING_PORT:-8001}
PONG_PORT=${PONG_PORT:-8002}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
GATEWAY_ACCESS_LOG=${GATEWAY_ACCESS_LOG:-on}
PINGPONG_PROFILE=${PINGPONG_PROFILE:-release}
PINGPONG_LOCAL_DIR=${PINGPONG_LOCAL_DIR:-.local}
LOCAL_RABBITMQ_NODE=${LOCAL_RABBITMQ_NODE:-pingpong-local@localhost}
# auto: install missing Debian packages when root or sudo allows it; 0: only print the command.
PINGPONG_INSTALL=${PINGPONG_INSTALL:-auto}
# on: run Jaeger v2 on loopback and export ping's and pong's traces to it; off: no traces.
LOCAL_TRACES=${LOCAL_TRACES:-on}
JAEGER_OTLP_PORT=${JAEGER_OTLP_PORT:-4318}
JAEGER_UI_PORT=${JAEGER_UI_PORT:-16686}
JAEGER_GRPC_PORT=${JAEGER_GRPC_PORT:-16685}

# shellcheck disable=SC2034 # used by the scripts that source this file
# use_state_dir: make $PINGPONG_LOCAL_DIR absolute and derive the paths inside it.
use_state_dir() {
  mkdir -p "$PINGPONG_LOCAL_DIR"
  state_dir=$(cd "$PINGPONG_LOCAL_DIR" && pwd)
  nginx_prefix=$state_dir/nginx
  broker_dir=$state_dir/rabbitmq
  # Written only when `local.sh up` started the broker; holds the node name `down` must stop.
  broker_marker=$broker_dir/started-by-local-up
  jaeger_dir=$state_dir/jaeger
}
