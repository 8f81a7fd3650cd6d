#!/usr/bin/env bash
# `make cluster-down`: stop exactly the processes `make cluster` started (by their pid files in
# .cluster/run/, never by name) and delete the cluster's state. Logs stay in .cluster/logs/ and
# .cluster/operator.log until the next `make cluster`; the built binaries stay in their cache.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/cluster/common.sh
source scripts/cluster/common.sh

stop() { # NAME: TERM, up to 10 s, then KILL
  local pidfile="$CLUSTER_DIR/run/$1.pid" pid i
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

[ -d "$CLUSTER_DIR/run" ] || { echo "no local cluster in $CLUSTER_DIR"; exit 0; }
# The real node first (its pods, containerd, kubelet, network namespace), while its pid files are there.
if [ -d "$CLUSTER_DIR/node" ] || [ -s "$CLUSTER_DIR/run/containerd.pid" ] || [ -s "$CLUSTER_DIR/run/kubelet.pid" ]; then
  scripts/cluster/node.sh down
fi
# Operators (and any extra ones the e2e suite started) first, the store last.
for f in "$CLUSTER_DIR"/run/*.pid; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .pid)
  case $name in etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok) ;; *) stop "$name" ;; esac
done
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done
# The route up.sh gave kwok's pod range (unreachable), when this host has it.
if [ "$(id -u)" = 0 ] && [ -n "$(ip route show type unreachable "$KWOK_POD_CIDR" 2>/dev/null)" ]; then
  ip route del unreachable "$KWOK_POD_CIDR" || echo "could not remove the route of $KWOK_POD_CIDR"
fi
# The audit log describes a cluster that is gone: the next one starts a new one.
rm -rf "${CLUSTER_DIR:?}"/{data,pki,run,bin} "$CLUSTER_DIR"/logs/audit*.log "$CLUSTER_DIR"/crds "$CLUSTER_DIR"/node-crds "$CLUSTER_DIR"/*.kubeconfig "$CLUSTER_DIR"/*.yaml \
  "$CLUSTER_DIR"/images.txt "$CLUSTER_DIR"/operator.env
echo "local cluster stopped"
