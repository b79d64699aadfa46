"""What every service shares: settings, logging, the RabbitMQ topology and bus, protobuf conversion,
metrics. Services import from here; nothing here imports a service."""
