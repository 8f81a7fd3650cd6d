#!/usr/bin/env bash
# `make bench-autoscale`: the autoscaler's step response on real processes (not a test).
#
# Release build, then scripts/bench_autoscale.py, which runs tests/system/test_system_autoscale.py
# with the release binaries (a private RabbitMQ node with the management API, a private
# PostgreSQL, pong replicas as host processes, `pingpong-operator autoscale` deciding) and writes
# the times from a 100,000-message burst to the first replica, to the maximum, to an empty backlog
# and back to zero into BENCHMARKS.md (BENCH_WRITE=0 to skip). About two minutes.
#
# Environment: AUTOSCALE_BURST (100000), BENCH_WRITE (1), BENCH_PROFILE (release; `debug` reuses
# the debug build, which the report then names: the step response is bound by the management API's
# 5 s statistics interval and the decision period far more than by the binaries' speed).
# Needs: rabbitmq-server (with its management plugin), postgresql, python3 (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

need rabbitmq-server "Debian: apt-get install rabbitmq-server"
need psql "Debian: apt-get install postgresql"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step "python tools (.venv)"
scripts/venv.sh
profile=${BENCH_PROFILE:-release}
case $profile in
  release) step "building release binaries"
           cargo build --release -p pingpong-ping -p pingpong-pong -p pingpong-loadgen -p pingpong-operator >&2 ;;
  debug) step "building debug binaries"
         cargo build -p pingpong-ping -p pingpong-pong -p pingpong-loadgen -p pingpong-operator >&2 ;;
  *) die "BENCH_PROFILE must be release or debug, not $profile" ;;
esac
export PINGPONG_BIN_DIR="$CARGO_TARGET_DIR/$profile" BENCH_PROFILE=$profile
step "measuring (about two minutes)"
exec .venv/bin/python scripts/bench_autoscale.py
