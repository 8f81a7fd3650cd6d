#!/usr/bin/env bash
# Run more operator processes on the local cluster (the e2e suite's leader-election and reinstall
# scenarios use it):
#   scripts/cluster/operator.sh start NAME METRICS_PORT   start one as the chart's ServiceAccount
#                                                         (OPERATOR_KUBECONFIG=FILE: with that
#                                                         kubeconfig, e.g. through a proxy)
#   scripts/cluster/operator.sh stop NAME                 SIGTERM it (SIGKILL after 10 s)
#   scripts/cluster/operator.sh kill NAME                 SIGKILL it (a crashed leader)
#   scripts/cluster/operator.sh new-token                 request a fresh ServiceAccount token
#                                                         (after the chart was reinstalled)
#   scripts/cluster/operator.sh binary                    build (OPERATOR_PROFILE) and print the
#                                                         operator binary's path
# Its log goes to .cluster/NAME.log, its pid to .cluster/run/NAME.pid.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/cluster/common.sh
source scripts/cluster/common.sh
export PATH="$CLUSTER_DIR/bin:$PATH" KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"

signal() { # NAME SIGNAL
  local pidfile="$CLUSTER_DIR/run/$1.pid" pid i
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "-$2" "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case ${1:-} in
  start) start_operator "${2:?name}" "${3:?metrics port}" ;;
  stop) signal "${2:?name}" TERM ;;
  kill) signal "${2:?name}" KILL ;;
  new-token) rm -f "$CLUSTER_DIR/operator.kubeconfig" && start_operator_token ;;
  binary) operator_binary ;;
  *) die "usage: $0 start NAME PORT | stop NAME | kill NAME | new-token | binary" ;;
esac
