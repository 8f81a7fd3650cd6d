#!/usr/bin/env bash
# `make bench-ha`: quorum queue on a private three-node RabbitMQ cluster vs classic queue on a
# private single node, on this machine, in one run (not a test; nothing is asserted).
#
# Release build, then scripts/bench_ha.py: for each setup, release ping and pong, an nginx gateway,
# the broker's own ceiling (pingpong-loadgen ceiling) and wrk POST /ping through nginx at 16 and 64
# connections (req/s, p50/p99), plus CPU seconds per 1,000 acknowledged pings for ping, pong, nginx
# and the broker. The shared broker on 5672 is never touched. Prints a markdown report and writes
# it into the broker-HA section of BENCHMARKS.md (BENCH_WRITE=0 to skip).
#
# Environment: BENCH_DURATION (15, seconds per wrk row), BENCH_CEILING_SECONDS (10), BENCH_WRITE (1).
# Needs: rabbitmq-server, nginx, wrk, curl, python3 (.venv from scripts/venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

need wrk "Debian: apt-get install wrk"
need rabbitmq-server "Debian: apt-get install rabbitmq-server"
need curl "Debian: apt-get install curl"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step "python tools (.venv)"
scripts/venv.sh
step "building release binaries"
cargo build --release -p pingpong-ping -p pingpong-pong -p pingpong-loadgen >&2
export PINGPONG_BIN_DIR="$CARGO_TARGET_DIR/release"
step "measuring (about $(( ${BENCH_DURATION:-15} * 4 + ${BENCH_CEILING_SECONDS:-10} * 2 + 60 )) s)"
exec .venv/bin/python scripts/bench_ha.py
