#!/usr/bin/env bash
# Run every test of the project: what `make test` and CI run.
# Needs: a Rust toolchain, python3 (with venv), nginx, shellcheck, a RabbitMQ broker reachable at
# RABBITMQ_HOST:RABBITMQ_PORT (default 127.0.0.1:5672, guest/guest; `rabbitmq-server` must be
# installed for the fault tests, which start a private broker node of their own), PostgreSQL on
# 127.0.0.1:5432 (user postgres, trust auth) and Redis on 127.0.0.1:6379 (`redis-server` installed).
# The first step (`scripts/ensure-services.sh`) starts installed servers that are not running;
# `.ci/run` installs all of it on a fresh Debian machine.
# The end-to-end suite needs Go >= 1.26 with the module proxy, jq and openssl: it builds and
# starts a local control plane (scripts/cluster/). With CLUSTER_REAL_NODE=1 (as root) it adds the
# real node (containerd, kubelet, kube-proxy, CoreDNS; images built by images/build.sh
# with buildah and debootstrap), on which the data-path scenarios run.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# One target directory for every step and every workflow (the default ./target unless set).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step "servers the tests talk to (RabbitMQ, PostgreSQL, Redis)"
# Starts installed servers that are not running and names the package of any that is missing.
# Outside CI the tests that need a missing server skip; with CI=true they fail (and so does this).
if ! scripts/ensure-services.sh; then
  [[ ${CI:-} != true ]] ||
    fail "a server the tests need is missing (see above); on a fresh Debian machine .ci/run installs everything"
  say "warning: a server is missing (see above): the tests that need it will be skipped"
fi

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

step "local Kubernetes control plane (built once from Go modules, cached outside git)"
scripts/cluster/build.sh
if [ "${CLUSTER_REAL_NODE:-0}" = 1 ]; then
  step "the real node's containerd and CoreDNS (built once from Go modules, cached outside git)"
  scripts/cluster/build-node.sh
fi

step "promtool and Jaeger for the alert-rule and trace tests (built once from Go modules, cached outside git)"
PROMTOOL=$(scripts/observability/build.sh promtool | tail -n 1)
JAEGER=$(scripts/observability/build.sh jaeger | tail -n 1)
export PROMTOOL JAEGER

step "python tests (chart, manifests, schemas, nginx end-to-end, broker faults, e2e on a local control plane)"
# E2E_START_CLUSTER=1: tests/e2e starts its own control plane in .cluster-test/ and stops it after.
# The real node's ping, pong and operator images take the debug binaries built above.
E2E_START_CLUSTER=1 PINGPONG_IMAGE_PROFILE=debug .venv/bin/pytest -q tests
