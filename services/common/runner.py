"""Process plumbing shared by the services: signals, logging and metrics start-up."""

from __future__ import annotations

import signal
from collections.abc import Callable

import structlog

from services.common.logging import configure_logging
from services.common.metrics import start_metrics
from services.common.settings import ServiceSettings


def start_service(name: str, settings: ServiceSettings) -> structlog.stdlib.BoundLogger:
    """Configure logging and /metrics for service `name`; returns its logger."""
    configure_logging(name, settings.log_format, settings.log_level)
    start_metrics(settings.metrics_port, settings.metrics_host)
    return structlog.get_logger(name)


def on_shutdown(stop: Callable[[], None]) -> None:
    """Call `stop` on SIGTERM or SIGINT (Ctrl-C): services finish the message at hand and exit, their
    unacked deliveries going back to the broker."""

    def handler(signum: int, frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
