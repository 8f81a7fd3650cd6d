#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on RABBITMQ_HOST:RABBITMQ_PORT (default 127.0.0.1:5672).
# Starts the installed rabbitmq-server (detached) when nothing listens there.
set -euo pipefail
host=${RABBITMQ_HOST:-127.0.0.1}
port=${RABBITMQ_PORT:-5672}

listening() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if listening; then
  echo "RabbitMQ answers on $host:$port"
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null; then
  echo "no broker on $host:$port and rabbitmq-server is not installed." >&2
  echo "install it (Debian: apt-get install rabbitmq-server) or point RABBITMQ_HOST/RABBITMQ_PORT at a broker" >&2
  exit 1
fi
case "$host" in
  127.*|localhost) ;;
  *) echo "no broker on $host:$port (not a local address, will not start one)" >&2; exit 1 ;;
esac
echo "starting rabbitmq-server on port $port"
RABBITMQ_NODE_PORT=$port rabbitmq-server -detached
for _ in $(seq 1 60); do
  if listening; then echo "RabbitMQ answers on $host:$port"; exit 0; fi
  sleep 1
done
echo "rabbitmq-server did not open $host:$port within 60 s" >&2
exit 1
