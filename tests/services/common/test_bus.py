"""The bus against the real RabbitMQ, in a virtual host of its own: acks after confirms, dead-lettering
with reasons, holds, the outbox across a dropped connection, mandatory publishing and timers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest

from eat.v1 import tasks_pb2
from services.common import vhost as vhosts
from services.common.bus import Bus, Delivery, Hold, NotRouted, Reject
from services.common.topology import (
    DEAD_LETTER_QUEUE,
    DEAD_LETTERS,
    EVENTS,
    REASON_HEADER,
    SOURCE_HEADER,
    Queue,
)

IN = Queue("eat.test.in", ((EVENTS.name, "event.test-in"),))
OUT = Queue("eat.test.out", ((EVENTS.name, "event.test-out"),))


@pytest.fixture
def amqp_url() -> Iterator[str]:
    if not vhosts.can_manage():
        pytest.fail("rabbitmqctl is needed for a private virtual host")
    name = f"eat-bus-{uuid.uuid4().hex[:8]}"
    url = vhosts.create(name)
    yield url
    vhosts.delete(name)


def accepted(task_id: str) -> tasks_pb2.TaskAccepted:
    return tasks_pb2.TaskAccepted(task_id=task_id)


def queue_depth(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        method = connection.channel().queue_declare(queue, passive=True).method
        return method.message_count, method.consumer_count
    finally:
        connection.close()


class Running:
    """A bus loop in a thread, with a handler that records what it saw."""

    def __init__(self, url: str, handler: Callable[[Bus, Delivery], None]) -> None:
        self.bus = Bus(url, queues=(IN, OUT, DEAD_LETTERS))
        self.seen: list[str] = []

        def handle(delivery: Delivery) -> None:
            self.seen.append(delivery.parse(tasks_pb2.TaskAccepted).task_id)
            handler(self.bus, delivery)

        self.bus.consume(IN, handle)
        self.bus.connect()
        self.thread = threading.Thread(target=self.bus.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.bus.stop()
        self.thread.join(timeout=10)


def publish(url: str, *messages: tuple[str, str, tasks_pb2.TaskAccepted]) -> None:
    bus = Bus(url, queues=(IN, OUT, DEAD_LETTERS))
    bus.publish_many(messages)
    bus.close()


def drain(url: str, queue: str, wait_s: float = 3.0, count: int = 1) -> list[Delivery]:
    bus = Bus(url, queues=(IN, OUT, DEAD_LETTERS))
    got: list[Delivery] = []
    deadline = time.monotonic() + wait_s
    while len(got) < count and time.monotonic() < deadline:
        got += list(bus.drain(queue, timeout_s=0.1))
    bus.close()
    return got


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_handled_messages_are_forwarded_and_acked(amqp_url: str) -> None:
    def forward(bus: Bus, delivery: Delivery) -> None:
        bus.publish(EVENTS.name, "event.test-out", delivery.parse(tasks_pb2.TaskAccepted))

    running = Running(amqp_url, forward)
    publish(amqp_url, *[(EVENTS.name, "event.test-in", accepted(f"t{i}")) for i in range(50)])
    out = drain(amqp_url, OUT.name, count=50)
    running.stop()
    assert sorted(d.parse(tasks_pb2.TaskAccepted).task_id for d in out) == sorted(f"t{i}" for i in range(50))
    assert queue_depth(amqp_url, IN.name)[0] == 0  # all acked: nothing comes back after the stop


def test_rejected_and_failing_messages_are_dead_lettered_with_reasons(amqp_url: str) -> None:
    def judge(bus: Bus, delivery: Delivery) -> None:
        task_id = delivery.parse(tasks_pb2.TaskAccepted).task_id
        if task_id == "bad":
            raise Reject("task_id: bad is not allowed")
        if task_id == "bug":
            raise ZeroDivisionError("oops")

    running = Running(amqp_url, judge)
    publish(
        amqp_url,
        (EVENTS.name, "event.test-in", accepted("bad")),
        (EVENTS.name, "event.test-in", accepted("bug")),
        (EVENTS.name, "event.test-in", accepted("ok")),
    )
    letters = drain(amqp_url, DEAD_LETTER_QUEUE, count=2)
    running.stop()
    reasons = sorted(d.headers[REASON_HEADER] for d in letters)
    assert (
        reasons[0].startswith("handler error: ZeroDivisionError")
        and reasons[1] == "task_id: bad is not allowed"
    )
    assert {d.headers[SOURCE_HEADER] for d in letters} == {IN.name}
    assert sorted(running.seen) == ["bad", "bug", "ok"]


def test_an_undecodable_message_is_dead_lettered(amqp_url: str) -> None:
    running = Running(amqp_url, lambda bus, delivery: None)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    props = pika.BasicProperties(type=tasks_pb2.TaskAccepted.DESCRIPTOR.full_name)
    connection.channel().basic_publish(EVENTS.name, "event.test-in", b"\xff\xff not protobuf", props)
    connection.close()
    (letter,) = drain(amqp_url, DEAD_LETTER_QUEUE)
    running.stop()
    assert "cannot decode eat.v1.TaskAccepted" in letter.headers[REASON_HEADER]


def test_a_held_delivery_is_acked_only_after_its_release(amqp_url: str) -> None:
    holds: list[Hold] = []
    running = Running(amqp_url, lambda bus, delivery: holds.append(bus.hold()))
    publish(amqp_url, (EVENTS.name, "event.test-in", accepted("held")))
    wait_for(lambda: len(holds) == 1)
    time.sleep(0.3)
    running.bus.call_threadsafe(running.bus.stop)  # stop without releasing: the delivery goes back
    running.thread.join(timeout=10)
    assert queue_depth(amqp_url, IN.name)[0] == 1
    holds.clear()
    running = Running(amqp_url, lambda bus, delivery: holds.append(bus.hold()))
    wait_for(lambda: len(holds) == 1)

    def answer_and_release() -> None:
        running.bus.publish(EVENTS.name, "event.test-out", accepted("answer"), on_behalf=holds[0])
        running.bus.release(holds[0])

    running.bus.call_threadsafe(answer_and_release)
    assert [d.parse(tasks_pb2.TaskAccepted).task_id for d in drain(amqp_url, OUT.name)] == ["answer"]
    wait_for(lambda: not running.bus._inflight and not running.bus._settled)  # its ack has been sent
    running.stop()
    assert queue_depth(amqp_url, IN.name)[0] == 0


def test_the_outbox_survives_a_dropped_connection(amqp_url: str) -> None:
    """Messages published while the connection is down are sent after the reconnect."""
    bus = Bus(amqp_url, queues=(IN, OUT, DEAD_LETTERS), reconnect_max_s=0.5)
    published = threading.Event()

    def publish_burst() -> None:
        for i in range(20):
            bus.publish(EVENTS.name, "event.test-out", accepted(f"o{i}"))
        published.set()

    bus.connect()
    thread = threading.Thread(target=bus.run, daemon=True)
    thread.start()
    vhosts.drop_connections(amqp_url.rsplit("/", 1)[1])
    bus.call_threadsafe(publish_burst)
    wait_for(published.is_set, 10)
    out = drain(amqp_url, OUT.name, wait_s=10, count=20)
    bus.stop()
    thread.join(timeout=10)
    assert sorted(d.parse(tasks_pb2.TaskAccepted).task_id for d in out) == sorted(f"o{i}" for i in range(20))
    assert bus.connections >= 2 and bus.unconfirmed == 0


def test_mandatory_publishing_reports_unroutable_messages(amqp_url: str) -> None:
    bus = Bus(amqp_url, queues=())
    with pytest.raises(NotRouted):
        bus.publish("", "no-such-queue", accepted("x"), mandatory=True)
    bus.close()
    returned: list[str] = []
    running = Running(
        amqp_url,
        lambda b, d: b.publish(
            "", "nowhere", accepted("y"), mandatory=True, on_unroutable=lambda: returned.append("y")
        ),
    )
    publish(amqp_url, (EVENTS.name, "event.test-in", accepted("trigger")))
    wait_for(lambda: returned == ["y"])
    running.stop()


def test_timers_run_on_the_loop_and_can_be_cancelled(amqp_url: str) -> None:
    bus = Bus(amqp_url, queues=())
    ticks: list[float] = []
    fired: list[str] = []
    bus.every(0.05, lambda: ticks.append(time.monotonic()))
    bus.call_later(0.1, lambda: fired.append("once"))
    bus.call_later(0.1, lambda: fired.append("cancelled")).cancel()
    bus.call_later(0.5, bus.stop)
    bus.run()
    assert fired == ["once"] and 5 <= len(ticks) <= 12
