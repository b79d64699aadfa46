"""Client events (accepted, rejected, completed, failed): to the client's reply queue when it named
one, else (or when that queue is gone) to the shared eat.events exchange, so no event is lost.

A client reply queue is a broker-named exclusive queue (`amq.gen-...`), what `services.client.Client`
declares. The broker refuses to let anyone declare a queue whose name starts with `amq.`, and every
queue of the topology is named `eat.*`, so a reply_to of that form can never name an internal queue:
ingest refuses any other reply_to, and ingest and the aggregator pass every task's reply_to through
`client_reply_to` before publishing to it.
"""

from __future__ import annotations

import re

import structlog
from google.protobuf.message import Message

from services.common.bus import Bus, NotRouted
from services.common.topology import EVENTS, event_key

log = structlog.get_logger("events")
CLIENT_REPLY_QUEUE = re.compile(r"amq\.gen-[A-Za-z0-9_-]{1,200}")
CLIENT_REPLY_QUEUE_TEXT = "a client reply queue (amq.gen-..., the broker-named queue a client declares)"


def is_client_reply_queue(name: str) -> bool:
    return CLIENT_REPLY_QUEUE.fullmatch(name) is not None


def client_reply_to(name: str) -> str:
    """`name` when it is a client reply queue, else "" (the shared events queue): a client event is never
    published into an internal queue, whatever a message claims."""
    return name if is_client_reply_queue(name) else ""


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
