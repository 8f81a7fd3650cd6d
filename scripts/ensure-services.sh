#!/usr/bin/env bash
# Make sure the servers the tests talk to answer on this machine, starting installed ones that do
# not: RabbitMQ (RABBITMQ_HOST:RABBITMQ_PORT, default 127.0.0.1:5672), PostgreSQL (127.0.0.1:5432,
# trust auth for the tests' `postgres` user) and Redis (127.0.0.1:6379).
# It never installs anything: `.ci/run` does that on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # name host port
  for _ in $(seq 1 60); do
    if listening "$2" "$3"; then echo "$1 answers on $2:$3"; return 0; fi
    sleep 1
  done
  echo "$1 did not open $2:$3 within 60 s" >&2
  return 1
}

scripts/ensure-broker.sh

if listening 127.0.0.1 5432; then
  echo "PostgreSQL answers on 127.0.0.1:5432"
elif command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -V | tail -n 1)
  echo "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for PostgreSQL 127.0.0.1 5432
else
  echo "PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2
  exit 1
fi

if listening 127.0.0.1 6379; then
  echo "Redis answers on 127.0.0.1:6379"
elif command -v redis-server >/dev/null; then
  echo "starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis 127.0.0.1 6379
else
  echo "Redis is not installed (Debian: apt-get install redis-server)" >&2
  exit 1
fi
