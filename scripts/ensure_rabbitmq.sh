#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672: start it if installed, install it if not.
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if port_open; then
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "RabbitMQ is not installed; installing it with apt-get (Debian)..."
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq rabbitmq-server
  else sudo apt-get update -qq && sudo apt-get install -y -qq rabbitmq-server; fi
fi
echo "Starting RabbitMQ (rabbitmq-server -detached)..."
rabbitmq-server -detached || true
for _ in $(seq 1 60); do
  if port_open; then echo "RabbitMQ is up on 127.0.0.1:5672"; exit 0; fi
  sleep 1
done
echo "RabbitMQ did not come up on 127.0.0.1:5672 within 60 s" >&2
exit 1
