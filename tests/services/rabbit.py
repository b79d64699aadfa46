"""Test helpers on the real RabbitMQ: a private observer queue, and a service's bus run in a thread.

Tests share the broker with other test runs, so every name here is unique (uuid) and every queue is
deleted afterwards (and expires on its own if a test dies before deleting it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pika
import pika.exceptions
import pytest
from google.protobuf.message import Message

from services.common.bus import Bus, Delivery
from services.common.settings import ServiceSettings
from services.common.topology import TRAINER_EXPERIENCE, Queue

AMQP_URL = ServiceSettings().amqp_url
QUEUE_EXPIRES_MS = 120_000  # a forgotten test queue disappears two minutes after its last use
M = TypeVar("M", bound=Message)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def require_broker() -> None:
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except pika.exceptions.AMQPConnectionError as err:
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL} (make test starts it): {err!r}")


class Observer:
    """A bus of the test's own with one private queue bound where the test wants to listen."""

    def __init__(self, bindings: tuple[tuple[str, str], ...]) -> None:
        self.bus = Bus(AMQP_URL, queues=())
        self.queue = Queue(
            unique("test.observer"),
            bindings,
            dead_letter=False,
            arguments={"x-expires": QUEUE_EXPIRES_MS},
        )
        self.bus.declare(self.queue)
        self.bus.connect()
        self.seen: list[Delivery] = []

    def bind(self, exchange: str, key: str) -> None:
        self.bus._channel.queue_bind(self.queue.name, exchange, routing_key=key)

    def publish(self, exchange: str, key: str, message: Message, **kwargs: object) -> None:
        self.bus.publish(exchange, key, message, **kwargs)  # type: ignore[arg-type]

    def wait_for(self, done: Callable[[list[Delivery]], bool], timeout_s: float = 10.0) -> list[Delivery]:
        """Collect deliveries into `seen` until `done(seen)` holds; fails the test on timeout."""
        deadline = time.monotonic() + timeout_s
        while not done(self.seen):
            if time.monotonic() > deadline:
                kinds = [d.type_name.rsplit(".", 1)[-1] for d in self.seen]
                pytest.fail(f"timed out after {timeout_s} s; saw {len(self.seen)} messages: {kinds}")
            self.seen.extend(self.bus.drain(self.queue.name, timeout_s=0.05))
        return self.seen

    def collect_for(self, seconds: float) -> list[Delivery]:
        """Everything that arrives within `seconds` (to check that something does not come)."""
        self.seen.extend(self.bus.drain(self.queue.name, timeout_s=seconds))
        return self.seen

    def close(self) -> None:
        try:
            self.bus._channel.queue_delete(self.queue.name)
        finally:
            self.bus.close()


def messages(deliveries: list[Delivery], message_type: type[M]) -> list[M]:
    name = message_type.DESCRIPTOR.full_name
    return [d.parse(message_type) for d in deliveries if d.type_name == name]


@contextmanager
def observer(*bindings: tuple[str, str]) -> Iterator[Observer]:
    require_broker()
    obs = Observer(tuple(bindings))
    try:
        yield obs
    finally:
        obs.close()


@contextmanager
def bus_thread(bus: Bus, *cleanup_queues: str) -> Iterator[Bus]:
    """Run `bus.run()` in a thread (the service's own loop); stop it and delete `cleanup_queues` after."""
    thread = threading.Thread(target=bus.run, name="bus-under-test", daemon=True)
    thread.start()
    try:
        yield bus
    finally:
        bus.stop()
        thread.join(timeout=10)
        delete_queues(*cleanup_queues)
        assert not thread.is_alive(), "the bus loop did not stop"


def delete_queues(*names: str) -> None:
    if not names:
        return
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


def purge_experience_queue() -> None:
    """Empty the shared eat.trainer.experience (declared as the topology says) before a test."""
    bus = Bus(AMQP_URL, queues=(TRAINER_EXPERIENCE,))
    bus.connect()
    try:
        bus._channel.queue_purge(TRAINER_EXPERIENCE.name)
    finally:
        bus.close()
