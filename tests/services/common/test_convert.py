"""Protobuf <-> domain conversion keeps every field (values chosen exact in float32, the wire type of
speeds and qualities)."""

from __future__ import annotations

from policy_models.live import Decision, ServerInfo, Snapshot, TaskInfo
from services.common.convert import (
    decision_from_proto,
    decision_to_proto,
    snapshot_from_proto,
    snapshot_to_proto,
    task_from_submission,
    task_to_submission,
)
from services.common.domain import QosSpec, Task


def test_snapshot_round_trip() -> None:
    snapshot = Snapshot(
        now_s=12.5,
        servers=(ServerInfo("e0", True, 0.0, ("a", "b"), 1.25), ServerInfo("e1", False, 3.5, (), 0.75, 7, 2)),
        queue=(TaskInfo("t0", 4.0, 2, "a", min_steps=5, max_steps=20, min_quality=0.25, priority=3),),
        total_queued=6,
        arrived=9,
        launched=3,
    )
    assert snapshot_from_proto(snapshot_to_proto(snapshot)) == snapshot


def test_decision_round_trip_finds_the_slot() -> None:
    snapshot = Snapshot(
        0.0, (ServerInfo("e0", True),), (TaskInfo("x", 1, 1, "a"), TaskInfo("y", 1, 1, "a")), 2
    )
    decision = Decision(True, "y", 17, 1, (1.0, 0.5, -1.0, 1.0))
    message = decision_to_proto(decision, "r1", 4, "eat", 250)
    assert message.policy_version == 4 and message.decide_latency_us == 250
    back = decision_from_proto(message, snapshot)
    assert (back.execute, back.task_id, back.steps, back.slot) == (True, "y", 17, 1)
    assert back.action == decision.action


def test_task_round_trip() -> None:
    task = Task("t", "p", "m", 4, QosSpec(0.25, 30.0, 1, 25, None), 100.0, 101.0, 42, "reply", "corr")
    again = task_from_submission(task_to_submission(task), accepted_at=101.0)
    assert again.task_id == task.task_id and again.qos == task.qos and again.seed == 42
    assert abs(again.submitted_at - task.submitted_at) < 1e-6 and again.reply_to == "reply"
