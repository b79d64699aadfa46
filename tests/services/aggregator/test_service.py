"""The aggregator's shell without a broker: internal messages it refuses and decisions it overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from eat.v1 import executor_pb2, tasks_pb2
from policy_models.live import Decision, LiveScheduler, ModelCatalog, Snapshot, live_config
from policy_models.policies import make_policy
from services.aggregator.core import AggregatorCore, CoreConfig
from services.aggregator.journal import Journal
from services.aggregator.service import Aggregator
from services.common.bus import Delivery, Reject
from services.common.convert import timestamp
from services.common.domain import ExecutorReport
from services.policy_server.client import PolicyReply

MODELS = ("sd-a",)


class RecordingBus:
    """The part of the Bus the aggregator uses; call_later runs at once (one decision turn)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, Message]] = []

    def consume(self, queue: Any, handler: Any) -> None:
        pass

    def every(self, period_s: float, fn: Any) -> None:
        pass

    def call_later(self, delay_s: float, fn: Any) -> None:
        fn()

    def publish(self, exchange: str, routing_key: str, message: Message, **_: Any) -> None:
        self.published.append((exchange, routing_key, message))


class ForgedPolicy:
    """A policy server whose every decision launches the first task with 2^32 - 1 steps."""

    def decide(self, snapshot: Snapshot) -> PolicyReply:
        return PolicyReply(
            Decision(True, snapshot.queue[0].task_id, 2**32 - 1, 0, (1.0, 0.0)), 7, "forged", 1
        )


def aggregator(tmp_path: Path, policy: Any = None) -> tuple[Aggregator, RecordingBus]:
    cfg = live_config(4, MODELS)
    bus = RecordingBus()
    fallback = LiveScheduler(make_policy("reuse", cfg), cfg, ModelCatalog(MODELS))
    journal = Journal(tmp_path / "aggregator.sqlite3")
    service = Aggregator(AggregatorCore(CoreConfig()), bus, journal, fallback, policy, recheck_wall_s=1.0)  # type: ignore[arg-type]
    return service, bus


def accepted(reply_to: str) -> Delivery:
    submission = tasks_pb2.TaskSubmission(
        task_id="t-1", prompt="p", model="sd-a", patches=1, reply_to=reply_to
    )
    message = tasks_pb2.TaskAccepted(task_id="t-1", submission=submission, accepted_at=timestamp(1.0))
    return Delivery(
        "eat.aggregator.tasks", message.DESCRIPTOR.full_name, message.SerializeToString(), {}, False, ""
    )


def test_a_task_accepted_with_an_internal_reply_to_is_refused(tmp_path: Path) -> None:
    service, bus = aggregator(tmp_path)
    with pytest.raises(Reject, match=r"submission\.reply_to: must be a client reply queue"):
        service.on_accepted(accepted("eat.aggregator.tasks"))
    assert not service.core.tasks and not bus.published


def test_a_remote_decision_outside_the_step_range_is_decided_by_the_fallback(tmp_path: Path) -> None:
    service, bus = aggregator(tmp_path, ForgedPolicy())
    now = service.clock()
    service.core.executor_report(ExecutorReport("e0", "i", 1, host="h", sent_at=now), now)
    service.on_accepted(accepted("amq.gen-abc"))
    dispatches = [m for _, _, m in bus.published if isinstance(m, executor_pb2.GangDispatch)]
    assert len(dispatches) == 1 and 1 <= dispatches[0].steps <= 32
    assert dispatches[0].policy_version == 0  # the fallback's decision, not the forged one
