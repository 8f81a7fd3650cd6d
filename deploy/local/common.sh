# shellcheck shell=bash
# Shared settings and helpers of scripts/local-up.sh, local-down.sh and bench.sh (sourced, not run).
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

# shellcheck disable=SC2034 # used by the scripts that source this file
# use_state_dir: make $PINGPONG_LOCAL_DIR absolute and derive the paths inside it.
use_state_dir() {
  mkdir -p "$PINGPONG_LOCAL_DIR"
  state_dir=$(cd "$PINGPONG_LOCAL_DIR" && pwd)
  nginx_prefix=$state_dir/nginx
  broker_dir=$state_dir/rabbitmq
  # Written only when local-up started the broker; holds the node name local-down must stop.
  broker_marker=$broker_dir/started-by-local-up
}

say() { printf '%s\n' "$*"; }
fail() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# The nginx executable, resolved through links; empty when not installed. Debian installs it in
# /usr/sbin, which is not on a normal user's PATH.
find_nginx() {
  local bin
  bin=$(command -v nginx || true)
  [[ -z $bin && -x /usr/sbin/nginx ]] && bin=/usr/sbin/nginx
  [[ -n $bin ]] && readlink -f "$bin"
  return 0
}

# True when something accepts TCP connections on $1:$2.
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# The pid recorded in pid file $1 when that process is alive and runs executable $2; else nothing.
# Checking the executable protects against a recycled pid.
live_pid() {
  local pidfile=$1 exe=$2 pid path
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 1
  path=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${path% (deleted)} == "$exe" ]] || return 1
  printf '%s\n' "$pid"
}

# Send signal $2 to pid $3 (recorded in $1 for executable $4) and wait up to $5 s for it to exit;
# SIGKILL after that. Removes the pid file.
stop_pid() {
  local pidfile=$1 signal=$2 pid=$3 name=$4 wait_s=$5 i
  kill "-$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < wait_s * 10; i++)); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then
    say "  $name (pid $pid) did not stop within ${wait_s}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "  stopped $name (pid $pid)"
}
