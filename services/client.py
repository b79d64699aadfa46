"""A client of the stack: submit tasks and follow their events (used by `eat submit`, the demo, the
pipeline benchmark and the integration tests).

Events come back on the client's own exclusive queue (TaskSubmission.reply_to). If that queue is gone
by the time an event is published, it goes to the shared eat.client.events queue instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pika
from google.protobuf.message import Message

from eat.v1 import tasks_pb2
from services.common.bus import Bus
from services.common.topology import INGEST, SUBMIT_KEY

EVENT_TYPES: dict[str, tuple[str, type[Message]]] = {
    m.DESCRIPTOR.full_name: (kind, m)
    for kind, m in (
        ("accepted", tasks_pb2.TaskAccepted),
        ("rejected", tasks_pb2.TaskRejected),
        ("completed", tasks_pb2.TaskCompleted),
        ("failed", tasks_pb2.TaskFailed),
    )
}
TERMINAL = ("completed", "failed")


@dataclass(frozen=True)
class TaskEvent:
    kind: str  # accepted, rejected, completed or failed
    task_id: str
    message: Message
    received_at: float

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL


class Client:
    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.reply_queue = self.channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self.history: list[TaskEvent] = []
        self._stream: Iterator[tuple] | None = None

    def submit(self, submission: tasks_pb2.TaskSubmission) -> None:
        """Publish one submission (reply_to = this client's queue unless set) and wait for the confirm."""
        if not submission.reply_to:
            submission.reply_to = self.reply_queue
        self.publish_raw(submission.SerializeToString(), submission.DESCRIPTOR.full_name)

    def submit_many(self, submissions: list[tasks_pb2.TaskSubmission]) -> None:
        """Publish many submissions back to back and wait once for all their confirms (load tests)."""
        for submission in submissions:
            if not submission.reply_to:
                submission.reply_to = self.reply_queue
        publisher = Bus(self.amqp_url, queues=())  # one per batch: an idle connection would miss heartbeats
        try:
            publisher.publish_many((INGEST.name, SUBMIT_KEY, s) for s in submissions)
        finally:
            publisher.close()

    def publish_raw(self, body: bytes, type_name: str = "") -> None:
        """Any bytes to ingest (tests use it for malformed messages)."""
        props = pika.BasicProperties(
            content_type="application/x-protobuf",
            delivery_mode=pika.DeliveryMode.Persistent,
            type=type_name or None,
            reply_to=self.reply_queue,
        )
        self.channel.basic_publish(INGEST.name, SUBMIT_KEY, body, props)

    def events(self, timeout_s: float) -> Iterator[TaskEvent]:
        """Events as they arrive, for up to `timeout_s`. One consumer serves every call, and a message
        is acked only once its event has been handed out, so stopping early loses nothing."""
        if self._stream is None:
            self._stream = self.channel.consume(self.reply_queue, inactivity_timeout=0.1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            method, props, body = next(self._stream)
            if method is None:
                continue
            event = self._event(props.type or "", body)
            self.channel.basic_ack(method.delivery_tag)
            if event is not None:
                self.history.append(event)
                yield event

    def _event(self, type_name: str, body: bytes) -> TaskEvent | None:
        if type_name not in EVENT_TYPES:
            return None
        kind, message_type = EVENT_TYPES[type_name]
        message = message_type()
        message.ParseFromString(body)
        return TaskEvent(kind, message.task_id, message, time.time())

    def wait(self, task_ids: set[str], timeout_s: float) -> dict[str, TaskEvent]:
        """The first terminal event (or rejection) of each task, waiting up to `timeout_s`."""
        done: dict[str, TaskEvent] = {}
        if task_ids:
            for event in self.events(timeout_s):
                if (event.terminal or event.kind == "rejected") and event.task_id in task_ids:
                    done.setdefault(event.task_id, event)
                    if len(done) == len(task_ids):
                        break
        return done

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
