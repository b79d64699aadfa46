"""Client events (accepted, rejected, completed, failed): to the client's reply queue when it named
one, else (or when that queue is gone) to the shared eat.events exchange, so no event is lost."""

from __future__ import annotations

import structlog
from google.protobuf.message import Message

from services.common.bus import Bus, NotRouted
from services.common.topology import EVENTS, event_key

log = structlog.get_logger("events")


def publish_client_event(bus: Bus, kind: str, message: Message, reply_to: str, correlation_id: str) -> None:
    """kind: accepted, rejected, completed or failed."""

    def to_shared_queue() -> None:
        bus.publish(EVENTS.name, event_key(kind), message, correlation_id=correlation_id)

    def reply_queue_gone() -> None:
        log.warning("client reply queue is gone; publishing on eat.events", reply_to=reply_to, kind=kind)
        to_shared_queue()

    if not reply_to:
        to_shared_queue()
        return
    try:
        bus.publish(
            "",
            reply_to,
            message,
            correlation_id=correlation_id,
            mandatory=True,
            on_unroutable=reply_queue_gone,
        )
    except NotRouted:  # outside the bus loop the return is reported by raising
        reply_queue_gone()
