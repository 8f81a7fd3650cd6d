#!/usr/bin/env bash
# `make down`: delete the kind cluster `make up` created (and nothing else).
#   KIND_CLUSTER_NAME   cluster name (default pingpong, as in kind-config.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER_NAME:-pingpong}
if ! command -v kind >/dev/null 2>&1; then
  echo "missing tool: kind -- install it: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
  exit 1
fi
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind delete cluster --name "$cluster"
else
  echo "no kind cluster named '$cluster'; nothing to delete"
fi
rm -f .local/skaffold-artifacts.json
