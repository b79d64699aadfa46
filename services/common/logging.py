"""structlog configured once per process: JSON lines in production, readable lines on a terminal.

Bind context per task with `structlog.contextvars.bound_contextvars(task_id=...)` (or `log.bind`):
every line logged inside carries it.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(service: str, log_format: str = "auto", level: str = "info") -> None:
    """Route structlog (and the standard library's logging) to stderr for `service`."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # pika and grpc log through the standard library: keep their warnings, drop their chatter.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)
