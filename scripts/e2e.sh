#!/usr/bin/env bash
# `make e2e`: the end-to-end suite (tests/e2e) against the cluster of KUBECONFIG.
#   - after `make cluster` (KUBECONFIG=.cluster/admin.kubeconfig): local mode, the operator is a host
#     process the suite can start and kill, the API server's audit log is read;
#   - after `make up` (kind): external mode, the operator runs in the cluster and the data path is
#     tested through ingress-nginx (E2E_BASE_URL, default http://localhost).
# Each scenario uses its own namespace; failures print the stack, events, children and the
# operator's log. E2E_KEEP_NAMESPACE=1 keeps the namespaces. Extra arguments go to pytest
# (e.g. `scripts/e2e.sh -k drift`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
if [ -z "${KUBECONFIG:-}" ] && [ -f .cluster/admin.kubeconfig ]; then
  export KUBECONFIG="$PWD/.cluster/admin.kubeconfig" PATH="$PWD/.cluster/bin:$PATH"
fi
exec .venv/bin/pytest -q tests/e2e "$@"
