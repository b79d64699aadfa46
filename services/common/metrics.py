"""Prometheus metrics shared by every service, and the /metrics endpoint.

Each service process serves its own registry on `metrics_port` (0 = off), on `metrics_host`: 127.0.0.1
unless a deployment whose scraper runs elsewhere opens it (EAT_METRICS_HOST=0.0.0.0). Metric names start with
`eat_`; per-service metrics live beside the service and use the same registry (the default one).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES_CONSUMED = Counter("eat_bus_consumed_total", "Messages handled and acked", ["queue", "type"])
MESSAGES_PUBLISHED = Counter("eat_bus_published_total", "Messages published (confirmed)", ["exchange"])
DEAD_LETTERED = Counter("eat_bus_dead_lettered_total", "Messages sent to the dead-letter queue", ["queue"])
RECONNECTS = Counter("eat_bus_reconnects_total", "Broker (re)connections after a loss")
CONNECTED = Gauge("eat_bus_connected", "1 while connected to the broker")
HANDLER_SECONDS = Histogram(
    "eat_bus_handler_seconds",
    "Time to handle one message",
    ["queue"],
    buckets=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
)


DEFAULT_HOST = "127.0.0.1"


def start_metrics(port: int, host: str = DEFAULT_HOST) -> None:
    """Serve /metrics on `host`:`port` in a daemon thread (no-op for port 0). The default host keeps
    the endpoint off the network: prometheus_client's own default would listen on every interface."""
    if port:
        start_http_server(port, addr=host)
