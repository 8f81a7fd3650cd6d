#!/usr/bin/env bash
# Run every test of the project: what `make test` and CI run.
# Needs a Rust toolchain (>= 1.89, rustfmt, clippy) and Go (>= 1.26, with the module proxy); the
# first step (scripts/test-deps.sh) installs every other missing Debian package as `make local`
# does (as root or through sudo, else it stops and prints the one command): RabbitMQ, PostgreSQL,
# Redis, nginx, wrk, shellcheck, jq, openssl, and as root the real node's runc, CNI plugins,
# buildah, debootstrap, iptables, iproute2, conntrack, catatonit and socat. Then scripts/ensure-services.sh
# starts the servers (RabbitMQ on RABBITMQ_HOST:RABBITMQ_PORT, default 127.0.0.1:5672, guest/guest;
# PostgreSQL on 127.0.0.1:5432, user postgres, trust; Redis on 127.0.0.1:6379). A server that
# still does not answer stops the run: no test may pass without the server it checks.
# The end-to-end suite builds and starts a local control plane (scripts/cluster/) with, as root,
# the real node (containerd, kubelet, kube-proxy, CoreDNS, the Traefik Gateway; images built by
# images/build.sh), on which its data-path scenarios run. CLUSTER_REAL_NODE=0 leaves the node out
# (those scenarios then skip, or fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# One target directory for every step and every workflow (the default ./target unless set).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step "what the tests need (scripts/test-deps.sh installs missing Debian packages)"
scripts/test-deps.sh

step "servers the tests talk to (RabbitMQ, PostgreSQL, Redis)"
scripts/ensure-services.sh ||
  fail "a server the tests need does not answer (see above); no test may pass without it"

step "python tools (.venv)"
scripts/venv.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "generated files are up to date"
scripts/generate.sh --check

step "rust tests (unit, handler, golden, in-memory API, real broker)"
cargo test --workspace --no-fail-fast

step "build binaries for the system tests"
cargo build --workspace --bins
export PINGPONG_BIN_DIR="$CARGO_TARGET_DIR/debug"

step "the previous release's operator and chart for the upgrade test (built once per commit, cached outside git)"
# scripts/previous-release.sh: builds that commit's operator in this target directory (only the
# operator crate compiles, about a minute cold, nothing warm), then this checkout's operator
# again, and fails unless target/debug/pingpong-operator is this checkout's afterwards.
if ! scripts/previous-release.sh >/dev/null; then
  [[ ${CI:-} == true ]] &&
    fail "tests/e2e/test_e2e_55_release_upgrade.py needs the previous release (scripts/previous-release.sh, see above)"
  say "warning: no previous release (see above): the release-upgrade scenario will be skipped"
fi

step "local Kubernetes control plane (built once from Go modules, cached outside git)"
scripts/cluster/build.sh
if ((EUID == 0)) && [[ ${CLUSTER_REAL_NODE:-} != 0 ]]; then
  step "the real node's containerd, CoreDNS and Traefik (built once from Go modules, cached outside git)"
  scripts/cluster/build-node.sh
elif [[ ${CI:-} == true ]]; then
  fail "the e2e suite's real node needs root (CI=true runs every scenario): run make test as root"
else
  say "warning: not root or CLUSTER_REAL_NODE=0: the e2e scenarios on real pods will be skipped"
fi

step "promtool and Jaeger for the alert-rule and trace tests (built once from Go modules, cached outside git)"
PROMTOOL=$(scripts/observability/build.sh promtool | tail -n 1)
JAEGER=$(scripts/observability/build.sh jaeger | tail -n 1)
export PROMTOOL JAEGER

if [[ ${CI:-} == true ]]; then
  # A CI machine is throwaway and its disk is shared: Go's build and module caches (several GB
  # after Kubernetes, containerd, Traefik, Jaeger and promtool) are not needed once the binaries
  # above are cached. Never done outside CI: they are the user's own caches.
  step "CI: drop Go's build and module caches (the binaries are cached; disk before: $(disk_free .))"
  go clean -cache -modcache
  say "disk after: $(disk_free .)"
fi

step "python tests (chart, manifests, schemas, nginx end-to-end, broker faults, e2e on a local control plane)"
# E2E_START_CLUSTER=1: tests/e2e starts its own control plane in .cluster-test/ and stops it after.
# The real node's ping, pong and operator images take the debug binaries built above.
# --durations: the slowest tests, to read a slow run against.
E2E_START_CLUSTER=1 PINGPONG_IMAGE_PROFILE=debug .venv/bin/pytest -q --durations=30 tests
