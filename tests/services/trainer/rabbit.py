"""Real-RabbitMQ helpers for the trainer tests: a private observer queue and a bus loop in a thread.

The broker is shared with other test runs: every queue made here has a unique name, expires on its
own if a test dies, and is deleted afterwards.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pika
import pika.exceptions
import pytest

from services.common.bus import Bus, Delivery
from services.common.settings import ServiceSettings
from services.common.topology import TRAINER_EXPERIENCE, Queue

AMQP_URL = ServiceSettings().amqp_url
QUEUE_EXPIRES_MS = 120_000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def require_broker() -> None:
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except pika.exceptions.AMQPConnectionError as err:
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL}: {err!r}")


def purge_experience_queue() -> None:
    """Empty the shared eat.trainer.experience (declared as the topology says) before a test."""
    bus = Bus(AMQP_URL, queues=(TRAINER_EXPERIENCE,))
    bus.connect()
    try:
        bus._channel.queue_purge(TRAINER_EXPERIENCE.name)
    finally:
        bus.close()


class Observer:
    """The test's own bus with one private queue bound where the test listens."""

    def __init__(self, bindings: tuple[tuple[str, str], ...]) -> None:
        self.bus = Bus(AMQP_URL, queues=())
        self.queue = Queue(
            unique("test.trainer.observer"),
            bindings,
            dead_letter=False,
            arguments={"x-expires": QUEUE_EXPIRES_MS},
        )
        self.bus.declare(self.queue)
        self.bus.connect()
        self.seen: list[Delivery] = []

    def wait_for(self, done: Callable[[list[Delivery]], bool], timeout_s: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout_s
        while not done(self.seen):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s} s; saw {[d.type_name for d in self.seen]}")
            self.seen.extend(self.bus.drain(self.queue.name, timeout_s=0.05))
        return self.seen

    def close(self) -> None:
        try:
            self.bus._channel.queue_delete(self.queue.name)
        finally:
            self.bus.close()


@contextmanager
def observer(*bindings: tuple[str, str]) -> Iterator[Observer]:
    require_broker()
    obs = Observer(tuple(bindings))
    try:
        yield obs
    finally:
        obs.close()


@contextmanager
def bus_thread(bus: Bus) -> Iterator[Bus]:
    """Run `bus.run()` in a thread, as the service's main loop; stop and join it afterwards."""
    thread = threading.Thread(target=bus.run, name="trainer-bus-under-test", daemon=True)
    thread.start()
    try:
        yield bus
    finally:
        bus.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the bus loop did not stop"
