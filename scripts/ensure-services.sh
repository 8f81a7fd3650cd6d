#!/usr/bin/env bash
# Make sure the servers the tests talk to answer on this machine, starting installed ones that do
# not (it never installs anything: `.ci/run` does that on a fresh machine, `make local` for its own
# needs):
#   rabbitmq   RABBITMQ_HOST:RABBITMQ_PORT (default 127.0.0.1:5672)
#   postgres   127.0.0.1:5432 (trust auth for the tests' `postgres` user)
#   redis      127.0.0.1:6379
# Usage: scripts/ensure-services.sh [rabbitmq|postgres|redis]...   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_rabbitmq() {
  local host=${RABBITMQ_HOST:-127.0.0.1} port=${RABBITMQ_PORT:-5672}
  if listening "$host" "$port"; then
    say "RabbitMQ answers on $host:$port"
    return 0
  fi
  command -v rabbitmq-server >/dev/null ||
    fail "no broker on $host:$port and rabbitmq-server is not installed: install it (Debian: apt-get install rabbitmq-server) or point RABBITMQ_HOST/RABBITMQ_PORT at a broker"
  [[ $host == 127.* || $host == localhost ]] ||
    fail "no broker on $host:$port (not a local address, will not start one)"
  say "starting rabbitmq-server on port $port"
  RABBITMQ_NODE_PORT=$port rabbitmq-server -detached
  wait_port RabbitMQ "$host" "$port" 60
  say "RabbitMQ answers on $host:$port"
}

ensure_postgres() {
  local version
  if listening 127.0.0.1 5432; then
    say "PostgreSQL answers on 127.0.0.1:5432"
  elif command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
    version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -V | tail -n 1)
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_port PostgreSQL 127.0.0.1 5432 60
    say "PostgreSQL answers on 127.0.0.1:5432"
  else
    fail "PostgreSQL is not installed (Debian: apt-get install postgresql)"
  fi
}

ensure_redis() {
  if listening 127.0.0.1 6379; then
    say "Redis answers on 127.0.0.1:6379"
  elif command -v redis-server >/dev/null; then
    say "starting redis-server"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port Redis 127.0.0.1 6379 60
    say "Redis answers on 127.0.0.1:6379"
  else
    fail "Redis is not installed (Debian: apt-get install redis-server)"
  fi
}

services=("$@")
((${#services[@]} > 0)) || services=(rabbitmq postgres redis)
for service in "${services[@]}"; do
  case "$service" in
    rabbitmq | postgres | redis) "ensure_$service" ;;
    *) fail "unknown service '$service' (rabbitmq, postgres or redis)" ;;
  esac
done
