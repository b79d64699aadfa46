"""The coordinator's state machine without a broker: rounds, plans into batches and handoffs, reports
into one terminal event each, silent or late devices taken back to the edge, duplicates ignored."""

from __future__ import annotations

import math
from pathlib import Path

from services.common.domain import ImageInfo
from services.common.hybrid import (
    DeviceHeartbeat,
    DeviceReport,
    EdgeOutcome,
    EdgeReport,
    OutcomeKind,
    PersonalRequest,
    Place,
)
from services.offload.core import (
    Complete,
    Coordinator,
    CoordinatorConfig,
    DispatchBatch,
    Fail,
    SendHandoff,
    Stage,
    request_problems,
    splits_of,
)
from services.offload.journal import OffloadJournal, Outgoing
from services.policy_server.offload_core import Placement, PlannedBatch, RoundPlan, ServerPlan

IMAGE = ImageInfo(uri="file:///x.png", sha256="ab")


def config(**changes: object) -> CoordinatorConfig:
    base: dict[str, object] = dict(
        servers=("edge-0",), availability=(1.0,), round_size=3, round_window_s=1.0, heartbeat_timeout_s=2.0
    )
    return CoordinatorConfig(**{**base, **changes})  # type: ignore[arg-type]


def request(task_id: str, user: str = "ana", steps: int = 6, speed: float = 2.0) -> PersonalRequest:
    return PersonalRequest(task_id, user, "a red circle", 1, steps, speed, 4.0, 0.02)


def planned(coordinator: Coordinator, now: float = 0.0) -> list:
    """Submit t1..t3 (a full round) and plan: t1+t2 batched to split 2, t3 local."""
    for i, user in enumerate(("ana", "ben", "cai"), 1):
        assert coordinator.submit(request(f"t{i}", user), now)
    plan_round = coordinator.take_round(now)
    assert plan_round is not None
    plan = RoundPlan(
        placements=(
            Placement("t1", "edge-0", 0, 2),
            Placement("t2", "edge-0", 0, 2),
            Placement("t3"),
        ),
        servers=(ServerPlan("edge-0", (PlannedBatch(("t1", "t2"), 2),)),),
    )
    return coordinator.apply_plan(plan_round, plan, "drl-convex", now)


def handed_off(coordinator: Coordinator, batch_id: str, now: float) -> None:
    outcomes = tuple(EdgeOutcome(t, OutcomeKind.HANDED_OFF, 2) for t in ("t1", "t2"))
    assert coordinator.on_edge_report(EdgeReport(batch_id, "edge-0", outcomes, 0.1), now) == []


def device_report(task_id: str, user: str, split: int, error: str = "") -> DeviceReport:
    return DeviceReport(task_id, user, f"{user}@d", split, 6, IMAGE, False, error, 1.0)


def test_a_round_closes_when_full_or_when_its_oldest_waited_the_window() -> None:
    coordinator = Coordinator(config())
    coordinator.submit(request("a"), 0.0)
    coordinator.submit(request("b", steps=8), 0.5)
    assert coordinator.take_round(0.9) is None
    first = coordinator.take_round(1.0)
    assert first is not None and [r.task_id for r in first.requests] == ["a"]
    assert first.offload_round.steps == 6 and [u.user_id for u in first.offload_round.users] == ["a"]
    assert coordinator.take_round(1.2) is None  # b waited 0.7 s
    coordinator.submit(request("c", steps=8), 1.2)
    coordinator.submit(request("d", steps=8), 1.2)
    full = coordinator.take_round(1.2)
    assert full is not None and len(full.requests) == 3


def test_a_plan_becomes_edge_batches_and_step_zero_handoffs() -> None:
    effects = planned(Coordinator(config()))
    (batch,) = [e.batch for e in effects if isinstance(e, DispatchBatch)]
    assert [m.task_id for m in batch.members] == ["t1", "t2"] and batch.split_step == 2
    assert batch.adapter_user == ""  # two users share the base model
    (local,) = [e.handoff for e in effects if isinstance(e, SendHandoff)]
    assert local.member.task_id == "t3" and local.done_step == 0 and local.latent is None
    assert splits_of(effects) == {"t1": 2, "t2": 2, "t3": 0}


def test_a_planned_batch_of_one_carries_its_users_adapter() -> None:
    coordinator = Coordinator(config(round_size=1))
    coordinator.submit(request("solo", "dee"), 0.0)
    plan_round = coordinator.take_round(0.0)
    assert plan_round is not None
    plan = RoundPlan(
        (Placement("solo", "edge-0", 0, 6),), (ServerPlan("edge-0", (PlannedBatch(("solo",), 6),)),)
    )
    (effect,) = coordinator.apply_plan(plan_round, plan, "drl-convex", 0.0)
    assert isinstance(effect, DispatchBatch) and effect.batch.adapter_user == "dee" and effect.batch.finishes


def test_every_request_ends_once_and_duplicates_are_ignored() -> None:
    coordinator = Coordinator(config())
    effects = planned(coordinator)
    batch_id = next(e.batch.batch_id for e in effects if isinstance(e, DispatchBatch))
    handed_off(coordinator, batch_id, 1.0)
    handed_off(coordinator, batch_id, 1.1)  # redelivered report: no change
    (done,) = coordinator.on_device_report(device_report("t1", "ana", 2), 2.0)
    assert isinstance(done, Complete)
    event = done.event
    assert (event.split_step, event.planned_split, event.early, event.late) == (
        2,
        2,
        Place.EDGE,
        Place.DEVICE,
    )
    assert event.server_id == "edge-0" and not event.fell_back
    assert coordinator.on_device_report(device_report("t1", "ana", 2), 2.1) == []
    assert not coordinator.submit(request("t1"), 2.2)
    (local,) = coordinator.on_device_report(device_report("t3", "cai", 0), 2.5)
    assert isinstance(local, Complete) and local.event.early is Place.NONE and local.event.server_id == ""


def test_a_silent_device_has_its_request_finished_at_the_edge() -> None:
    coordinator = Coordinator(config())
    effects = planned(coordinator)
    batch_id = next(e.batch.batch_id for e in effects if isinstance(e, DispatchBatch))
    handed_off(coordinator, batch_id, 1.0)
    for user in ("ana", "ben", "cai"):
        coordinator.on_heartbeat(DeviceHeartbeat(user, f"{user}@d", 2.0, (), False), 1.5)
    coordinator.on_heartbeat(DeviceHeartbeat("ana", "ana@d", 2.0, ("t1",), False), 3.0)
    coordinator.on_heartbeat(DeviceHeartbeat("cai", "cai@d", 2.0, ("t3",), False), 3.0)
    fallbacks = coordinator.tick(3.6)  # ben silent for 2.1 s
    (effect,) = fallbacks
    assert isinstance(effect, DispatchBatch)
    batch = effect.batch
    assert [m.task_id for m in batch.members] == ["t2"] and batch.adapter_user == "ben" and batch.finishes
    assert coordinator.on_device_report(device_report("t2", "ben", 2), 3.7) == []  # taken back: ignored
    finished = EdgeReport(batch.batch_id, "edge-0", (EdgeOutcome("t2", OutcomeKind.FINISHED, 6, IMAGE),), 0.3)
    (done,) = coordinator.on_edge_report(finished, 4.0)
    assert isinstance(done, Complete) and done.event.fell_back and done.event.split_step == 6
    assert done.event.planned_split == 2 and done.event.early is Place.EDGE and done.event.late is Place.NONE


def test_a_device_past_its_report_deadline_is_taken_back_and_a_second_loss_fails() -> None:
    coordinator = Coordinator(config(report_slack=1.0, report_grace_s=1.0, heartbeat_timeout_s=100.0))
    planned(coordinator)
    # t3 is local: 6 steps at 2 steps/s = 3 s, + 1 s grace.
    assert not [e for e in coordinator.tick(3.9) if "t3" in str(e)]
    (effect,) = [e for e in coordinator.tick(4.1) if isinstance(e, DispatchBatch)]
    report = EdgeReport(
        effect.batch.batch_id, "edge-0", (EdgeOutcome("t3", OutcomeKind.FAILED, 0, error="boom"),), 0.1
    )
    (failed,) = coordinator.on_edge_report(report, 4.5)
    assert isinstance(failed, Fail) and "boom" in failed.reason


def test_a_device_error_falls_back_and_an_edge_timeout_fails_with_a_reason() -> None:
    coordinator = Coordinator(config(edge_timeout_s=5.0))
    planned(coordinator)
    (effect,) = coordinator.on_device_report(device_report("t3", "cai", 0, error="out of memory"), 1.0)
    assert isinstance(effect, DispatchBatch) and effect.batch.adapter_user == "cai"
    ends = [e for e in coordinator.tick(6.5) if isinstance(e, Fail)]
    assert {e.task_id for e in ends} == {"t1", "t2", "t3"}  # the edge never reported
    assert all("did not report" in e.reason for e in ends)
    assert coordinator.tick(7.0) == [] and list(coordinator.open_tasks()) == []


def test_no_plan_sends_every_request_to_its_device() -> None:
    coordinator = Coordinator(config())
    for i in range(3):
        coordinator.submit(request(f"t{i}"), 0.0)
    plan_round = coordinator.take_round(0.0)
    assert plan_round is not None
    effects = coordinator.plan_locally(plan_round, 0.0)
    assert all(isinstance(e, SendHandoff) and e.handoff.done_step == 0 for e in effects) and len(effects) == 3


def test_invalid_requests_are_named_field_by_field() -> None:
    bad = PersonalRequest("../x", "", " ", 1, 0, 0.0, -1.0, float("nan"))
    problems = " ".join(request_problems(bad))
    for name in ("task_id", "user_id", "prompt", "steps", "steps_per_s", "memory_gib", "latency_weight"):
        assert name in problems
    assert request_problems(request("ok")) == []


def test_the_journal_gives_back_unfinished_tracks_and_unconfirmed_messages(tmp_path: Path) -> None:
    coordinator = Coordinator(config())
    effects = planned(coordinator, now=10.0)
    journal = OffloadJournal(tmp_path / "offload.sqlite3")
    batch = next(e.batch for e in effects if isinstance(e, DispatchBatch))
    written = journal.commit(coordinator.take_dirty(), [Outgoing("batch", batch.batch_id, "edge-0", b"x")])
    (done,) = coordinator.on_device_report(device_report("t3", "cai", 0), 12.0)
    assert isinstance(done, Complete)
    journal.commit(coordinator.take_dirty(), [Outgoing("completed", "t3", "reply", b"event")])
    assert "t3" not in coordinator.tracks  # ended: from now on only the journal holds it
    journal.close()

    reopened = OffloadJournal(tmp_path / "offload.sqlite3")  # a restarted coordinator
    assert [(o.kind, o.task_id) for o in reopened.unsent()] == [
        ("batch", batch.batch_id),
        ("completed", "t3"),
    ]
    reopened.sent([written[0].seq])
    assert [o.task_id for o in reopened.unsent()] == ["t3"]
    tracks = {t.request.task_id: t for t in reopened.unfinished()}
    assert sorted(tracks) == ["t1", "t2"] and tracks["t1"].batch_id == batch.batch_id
    assert tracks["t1"].planned_split == 2 and tracks["t1"].received_at == 10.0
    ended = reopened.terminal("t3")
    assert ended is not None and (ended.kind, ended.body, ended.target) == ("completed", b"event", "")
    assert reopened.known("t3") and reopened.terminal("t1") is None


def test_a_restored_coordinator_re_arms_deadlines_and_redecides_an_undecided_round() -> None:
    before = Coordinator(config(heartbeat_timeout_s=2.0, edge_timeout_s=5.0))
    planned(before, now=0.0)
    before.submit(request("t4", "dee"), 0.0)
    deciding = before.take_round(1.0)
    assert deciding is not None and before.tracks["t4"].stage is Stage.EDGE
    after = Coordinator(config(heartbeat_timeout_s=2.0, edge_timeout_s=5.0), session="b-")
    for track in before.tracks.values():
        after.restore(track, 100.0)  # long after every deadline
    assert after.tick(101.0) == []  # reports still queued get their chance
    assert after.tracks["t3"].deadline == 102.0 and after.last_seen["cai"] == 100.0
    assert after.tracks["t4"].stage is Stage.WAITING and math.isinf(after.tracks["t4"].deadline)
    next_round = after.take_round(100.0, flush=True)
    assert next_round is not None and next_round.round_id == "b-r1"
    assert [r.task_id for r in next_round.requests] == ["t4"]
    (fallback,) = [e for e in after.tick(102.5) if isinstance(e, DispatchBatch)]  # t3: silent device
    assert fallback.batch.members[0].task_id == "t3"
