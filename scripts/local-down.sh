#!/usr/bin/env bash
# `make local-down`: stop exactly what `make local` (scripts/local-up.sh) started, found through
# its pid files in $PINGPONG_LOCAL_DIR (default .local): the nginx gateway, pong, ping, and the
# RabbitMQ node only if local-up started it. A broker that was already running is left alone.
# Logs and the private broker's data stay in $PINGPONG_LOCAL_DIR for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/local/common.sh
source deploy/local/common.sh

if [[ ! -d $PINGPONG_LOCAL_DIR ]]; then
  say "nothing to stop ($PINGPONG_LOCAL_DIR does not exist)"
  exit 0
fi
use_state_dir

say "==> stopping what make local started ($state_dir)"
stopped=0

nginx_bin=$(find_nginx)
if [[ -n $nginx_bin ]]; then
  # SIGQUIT: graceful shutdown (finish in-flight requests).
  if pid=$(live_pid "$nginx_prefix/nginx.pid" "$nginx_bin"); then
    stop_pid "$nginx_prefix/nginx.pid" QUIT "$pid" "nginx gateway" 15
    stopped=$((stopped + 1))
  fi
fi

# pong before ping would lose nothing either way (messages stay in the durable queue); stop the
# consumer first so a last ping's message is left for the next run rather than half-processed.
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

if ((stopped == 0)); then
  say "nothing was running"
fi
