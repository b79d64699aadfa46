"""Ingest's shell without a broker: what it refuses, where the refusal goes, and what it admits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from eat.v1 import tasks_pb2
from services.common.bus import Delivery, Reject
from services.common.convert import epoch_s, timestamp
from services.common.topology import EVENTS, INGEST_QUEUE, TASKS
from services.ingest.service import Ingest
from services.ingest.settings import IngestSettings

CLIENT_QUEUE = "amq.gen-abc123"


class RecordingBus:
    """The part of the Bus ingest uses: consume once, publish into a list."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, Message]] = []

    def consume(self, queue: Any, handler: Any) -> None:
        assert queue == INGEST_QUEUE

    def publish(self, exchange: str, routing_key: str, message: Message, **_: Any) -> None:
        self.published.append((exchange, routing_key, message))


@pytest.fixture
def ingest(tmp_path: Path) -> tuple[Ingest, RecordingBus]:
    bus = RecordingBus()
    settings = IngestSettings.from_env({}, models=("sd-a",), state_dir=tmp_path, max_clock_skew_s=60.0)
    return Ingest(settings, bus), bus  # type: ignore[arg-type]


def delivery(submission: tasks_pb2.TaskSubmission) -> Delivery:
    body = submission.SerializeToString()
    return Delivery(INGEST_QUEUE.name, submission.DESCRIPTOR.full_name, body, {}, False, "submit")


def submission(**kw: Any) -> tasks_pb2.TaskSubmission:
    values: dict[str, Any] = dict(
        task_id="t-1", prompt="a cat", model="sd-a", patches=2, reply_to=CLIENT_QUEUE
    )
    return tasks_pb2.TaskSubmission(**(values | kw))


def test_patches_no_gang_can_have_are_rejected_naming_the_field(ingest: tuple[Ingest, RecordingBus]) -> None:
    service, bus = ingest
    with pytest.raises(
        Reject, match=r"patches: must be a gang size of the timing profile \(1, 2, 4, 8\), got 3"
    ):
        service.handle(delivery(submission(patches=3)))
    with pytest.raises(Reject, match="patches: needs 8 servers, the cluster has 4"):
        service.handle(delivery(submission(task_id="t-2", patches=8)))
    rejections = [m for _, _, m in bus.published if isinstance(m, tasks_pb2.TaskRejected)]
    assert [(r.task_id, r.errors[0].field) for r in rejections] == [("t-1", "patches"), ("t-2", "patches")]
    assert not any(isinstance(m, tasks_pb2.TaskAccepted) for _, _, m in bus.published)


def test_a_reply_to_naming_an_internal_queue_is_refused_and_never_published_to(
    ingest: tuple[Ingest, RecordingBus],
) -> None:
    service, bus = ingest
    with pytest.raises(Reject, match="reply_to: must be a client reply queue"):
        service.handle(delivery(submission(reply_to="eat.aggregator.tasks")))
    ((exchange, key, rejected),) = bus.published
    assert isinstance(rejected, tasks_pb2.TaskRejected) and rejected.errors[0].field == "reply_to"
    assert exchange == EVENTS.name and key != "eat.aggregator.tasks"  # the shared events queue instead


@pytest.mark.parametrize("offset_s", [1e9, -1e9, 3600.0])
def test_submitted_at_is_bounded_by_the_acceptance_time(
    ingest: tuple[Ingest, RecordingBus], offset_s: float
) -> None:
    service, bus = ingest
    before = time.time()
    service.handle(delivery(submission(submitted_at=timestamp(before + offset_s))))
    after = time.time()
    ((exchange, _, accepted), _) = bus.published
    assert exchange == TASKS.name and isinstance(accepted, tasks_pb2.TaskAccepted)
    submitted, accepted_at = epoch_s(accepted.submission.submitted_at), epoch_s(accepted.accepted_at)
    assert before - 60.0 - 1e-3 <= submitted <= accepted_at <= after + 1e-3
    assert accepted_at - submitted == pytest.approx(0.0 if offset_s > 0 else 60.0, abs=1e-3)


def test_an_honest_submitted_at_is_kept(ingest: tuple[Ingest, RecordingBus]) -> None:
    service, bus = ingest
    sent = time.time() - 2.0  # two seconds in the submissions queue
    service.handle(delivery(submission(submitted_at=timestamp(sent))))
    accepted = bus.published[0][2]
    assert isinstance(accepted, tasks_pb2.TaskAccepted)
    assert epoch_s(accepted.submission.submitted_at) == pytest.approx(sent, abs=1e-6)
