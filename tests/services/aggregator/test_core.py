"""The aggregator's pure core: lifecycle, retries, failure detection, decisions and experience."""

from __future__ import annotations

import pytest

from policy_models.live import Decision, LiveScheduler, ModelCatalog, live_config
from policy_models.policies import make_policy
from policy_models.profiles import get_profile
from services.aggregator.core import (
    AggregatorCore,
    CoreConfig,
    DispatchGang,
    TaskDone,
    TaskFailedOut,
    Transition,
    attempt_bound_s,
)
from services.common.domain import (
    AttemptResult,
    ExecState,
    ExecutorReport,
    QosSpec,
    QualityResult,
    Reason,
    Task,
)

MODELS = ("sd-a", "sd-b")
CFG = live_config(4, MODELS)


def make_core(**overrides: object) -> AggregatorCore:
    return AggregatorCore(CoreConfig(**{"nodes": 4, "max_attempts": 2, **overrides}))


def report(executor_id: str, seq: int, state: ExecState = ExecState.IDLE, **kw: object) -> ExecutorReport:
    return ExecutorReport(executor_id, "inc-" + executor_id, seq, state, **kw)


def up(core: AggregatorCore, n: int = 4, now: float = 0.0) -> list[str]:
    ids = [f"e{i}" for i in range(n)]
    for i in ids:
        core.executor_report(report(i, 1, host="127.0.0.1"), now)
    return ids


def task(task_id: str, patches: int = 1, model: str = "sd-a", **kw: object) -> Task:
    return Task(task_id, "a prompt", model, patches, accepted_at=kw.pop("accepted_at", 0.0), **kw)


def launch(core: AggregatorCore, task_id: str, steps: int = 20, now: float = 1.0) -> DispatchGang:
    snapshot = core.snapshot(now)
    slot = next(i for i, t in enumerate(snapshot.queue) if t.task_id == task_id)
    assert core.apply(snapshot, Decision(True, task_id, steps, slot, (1.0, 0.0)), 3, now)
    (effect,) = [e for e in core.take_effects() if isinstance(e, DispatchGang)]
    return effect


def test_a_task_runs_to_completion_with_one_terminal_effect_and_its_reward() -> None:
    core = make_core()
    up(core)
    assert core.accept(task("t1", patches=2), 0.0)
    assert not core.accept(task("t1", patches=2), 0.0)  # a duplicate is ignored
    dispatch = launch(core, "t1")
    assert len(dispatch.placement.server_ids) == 2 and not dispatch.placement.reused
    assert dispatch.record.attempt == 1 and core.tasks["t1"].state == "running"
    assert not any(core.executors[m].schedulable for m in dispatch.placement.server_ids)
    core.attempt_result(AttemptResult("t1", 1, True, init_s=24.0, run_s=3.0, simulated=True), 2.0)
    assert core.tasks["t1"].state == "evaluating"
    assert core.quality(QualityResult("t1", 1, 0.25, simulated=True), 3.0)
    effects = core.take_effects()
    (done,) = [e for e in effects if isinstance(e, TaskDone)]
    assert done.quality == pytest.approx(0.25) and core.tasks["t1"].state == "completed"
    # The launch's transition closes at the next decision (its s').
    core.accept(task("t2"), 4.0)
    snapshot = core.snapshot(5.0)
    core.apply(snapshot, Decision(False, action=(-1.0,)), 3, 5.0)
    (transition,) = [e for e in core.take_effects() if isinstance(e, Transition)]
    assert transition.executed and transition.task_id == "t1" and transition.reward > 0
    assert transition.next_observation is snapshot and transition.policy_version == 3


def test_quality_before_result_is_deferred() -> None:
    core = make_core()
    up(core)
    core.accept(task("t1"), 0.0)
    launch(core, "t1")
    assert not core.quality(QualityResult("t1", 1, 0.2, simulated=True), 1.5)
    core.attempt_result(AttemptResult("t1", 1, True), 2.0)
    assert core.quality(QualityResult("t1", 1, 0.2, simulated=True), 2.1)
    assert core.tasks["t1"].state == "completed"


def test_failed_attempt_is_retried_first_then_exhausted() -> None:
    core = make_core(max_attempts=2)
    up(core)
    core.accept(task("t0"), 0.0)
    core.accept(task("t1"), 0.0)
    launch(core, "t1")
    core.attempt_result(AttemptResult("t1", 1, False, Reason.EXECUTOR_ERROR, "boom"), 2.0)
    assert list(core.queue) == ["t1", "t0"] and core.tasks["t1"].state == "queued"
    assert all(e.schedulable for e in core.executors.values())
    launch(core, "t1", now=3.0)
    core.attempt_result(AttemptResult("t1", 1, False, Reason.EXECUTOR_ERROR, "stale"), 3.5)  # ignored
    assert core.tasks["t1"].state == "running"
    core.attempt_result(AttemptResult("t1", 2, False, Reason.EXECUTOR_ERROR, "boom again"), 4.0)
    (failed,) = [e for e in core.take_effects() if isinstance(e, TaskFailedOut)]
    assert failed.reason is Reason.RETRIES_EXHAUSTED and "boom again" in failed.message
    assert core.tasks["t1"].state == "failed"


def test_a_busy_refusal_holds_the_gang_and_does_not_count_as_an_attempt() -> None:
    core = make_core(max_attempts=1, busy_hold_s=2.0)
    ids = up(core)
    core.accept(task("t1", patches=4), 0.0)
    launch(core, "t1")
    # A member was still finishing its previous attempt: it refused, and the attempt never ran.
    core.attempt_result(AttemptResult("t1", 1, False, Reason.EXECUTOR_BUSY, "busy with t0"), 1.1)
    record = core.tasks["t1"]
    assert record.state == "queued" and record.busy_refusals == 1 and list(core.queue) == ["t1"]
    assert not any(isinstance(e, TaskFailedOut) for e in core.take_effects())
    # Held off: the stale idle view may not send a member work until it reports again.
    assert not core.needs_decision()
    for seq, member in enumerate(ids[:3], start=2):
        core.executor_report(report(member, seq), 1.2)
    assert [core.executors[i].schedulable for i in ids] == [True, True, True, False]
    core.executor_report(report(ids[3], 2), 1.3)
    assert all(core.executors[i].schedulable for i in ids)
    launch(core, "t1", now=1.4)
    assert core.tasks["t1"].attempt == 2
    # A real failure still counts: with max_attempts=1, this one ends the task.
    core.attempt_result(AttemptResult("t1", 2, False, Reason.EXECUTOR_ERROR, "boom"), 1.5)
    (failed,) = [e for e in core.take_effects() if isinstance(e, TaskFailedOut)]
    assert failed.reason is Reason.RETRIES_EXHAUSTED and failed.message.startswith("1 attempts")


def test_a_busy_hold_runs_out_without_reports_and_busy_refusals_are_capped() -> None:
    core = make_core(max_attempts=1, busy_hold_s=2.0, max_busy_refusals=1)
    up(core)
    core.accept(task("t1", patches=4), 0.0)
    launch(core, "t1")
    core.attempt_result(AttemptResult("t1", 1, False, Reason.EXECUTOR_BUSY, "busy with t0"), 1.0)
    core.tick(2.5)
    assert not core.needs_decision()
    core.tick(3.0)  # 2 s later: free again, even though no member reported
    assert core.needs_decision()
    launch(core, "t1", now=3.1)
    core.attempt_result(AttemptResult("t1", 2, False, Reason.EXECUTOR_BUSY, "busy with t0"), 3.2)
    (failed,) = [e for e in core.take_effects() if isinstance(e, TaskFailedOut)]
    assert failed.reason is Reason.RETRIES_EXHAUSTED and "busy with t0" in failed.message


def test_missed_heartbeats_fail_the_gang_and_the_task_is_retried_elsewhere() -> None:
    core = make_core(heartbeat_timeout_s=3.0)
    up(core)
    core.accept(task("t1", patches=2), 0.0)
    dispatch = launch(core, "t1")
    lost, _ = dispatch.placement.server_ids
    for executor_id in core.executors:
        if executor_id != lost:
            core.executor_report(report(executor_id, 2, heartbeat_only=True), 3.5)
    core.tick(4.5)
    assert not core.executors[lost].alive and core.tasks["t1"].state == "queued"
    assert core.tasks["t1"].last_error.startswith("GANG_MEMBER_LOST")
    retry = launch(core, "t1", now=5.0)
    assert lost not in retry.placement.server_ids and retry.record.attempt == 2


def test_a_restarted_executor_fails_its_attempt() -> None:
    core = make_core()
    up(core)
    core.accept(task("t1"), 0.0)
    (member,) = launch(core, "t1").placement.server_ids
    core.executor_report(ExecutorReport(member, "new-incarnation", 1), 2.0)
    assert core.tasks["t1"].state == "queued" and core.executors[member].schedulable


def test_deadline_and_capacity_failures() -> None:
    core = make_core(no_capacity_after_s=10.0)
    up(core, n=2)
    core.accept(task("late", qos=QosSpec(deadline_s=5.0), accepted_at=0.0), 0.0)
    core.accept(task("huge", patches=4), 0.0)
    core.tick(6.0)
    reasons = {e.record.task.task_id: e.reason for e in core.take_effects() if isinstance(e, TaskFailedOut)}
    assert reasons == {"late": Reason.DEADLINE_EXCEEDED}
    core.tick(11.0)
    reasons = {e.record.task.task_id: e.reason for e in core.take_effects() if isinstance(e, TaskFailedOut)}
    assert reasons == {"huge": Reason.NO_CAPACITY}


def test_orphaned_gang_is_failed_after_grace() -> None:
    core = make_core(orphan_grace_s=2.0)
    up(core)
    core.accept(task("t1"), 0.0)
    launch(core, "t1", now=0.0)
    core.tick(1.0)
    assert core.tasks["t1"].state == "running"
    core.tick(2.5)  # no member shows the task: the grace starts
    core.tick(5.0)
    assert core.tasks["t1"].state == "queued"


def test_busy_member_reporting_the_task_is_not_orphaned() -> None:
    core = make_core(orphan_grace_s=2.0)
    up(core)
    core.accept(task("t1"), 0.0)
    (member,) = launch(core, "t1", now=0.0).placement.server_ids
    core.executor_report(report(member, 2, ExecState.BUSY, current_task_id="t1"), 0.1)
    for seq, t in enumerate((2.5, 5.0, 9.0), start=3):
        core.executor_report(report(member, seq, heartbeat_only=True), t)
        core.tick(t)
    assert core.tasks["t1"].state == "running"


def test_reuse_first_gang_and_snapshot_time_scale() -> None:
    core = make_core(time_scale=100.0)
    core.executor_report(report("e0", 1, resident_models=("sd-b",)), 0.0)
    core.executor_report(report("e1", 1, resident_models=("sd-a",)), 0.0)
    core.accept(task("t1", model="sd-a", accepted_at=0.0), 0.0)
    snapshot = core.snapshot(0.5)
    assert snapshot.queue[0].waiting_s == pytest.approx(50.0)
    dispatch = launch(core, "t1", now=0.5)
    assert dispatch.placement.server_ids == ("e1",) and dispatch.placement.reused


def test_fallback_scheduler_launches_through_the_core() -> None:
    core = make_core()
    up(core)
    scheduler = LiveScheduler(make_policy("reuse", CFG), CFG, ModelCatalog(MODELS))
    for i in range(3):
        core.accept(task(f"t{i}", patches=1), 0.0)
    launched = 0
    while core.needs_decision():
        snapshot = core.snapshot(1.0)
        if not core.apply(snapshot, scheduler.decide(snapshot), 0, 1.0):
            break
        launched += 1
    assert launched == 3 and not core.queue


def test_an_ended_task_leaves_memory_once_handed_to_the_journal() -> None:
    core = make_core()
    up(core)
    core.accept(task("t1"), 0.0)
    launch(core, "t1")
    core.attempt_result(AttemptResult("t1", 1, True, init_s=1.0, run_s=1.0, simulated=True), 1.0)
    core.quality(QualityResult("t1", 1, 0.3, simulated=True), 1.5)
    assert [e for e in core.take_effects() if isinstance(e, TaskDone)]
    core.accept(task("t2"), 2.0)
    assert core.counts() == {"completed": 1, "queued": 1}
    journaled = {record.task.task_id: record.state for record in core.take_dirty()}
    assert journaled == {"t1": "completed", "t2": "queued"}
    assert "t1" not in core.tasks and "t2" in core.tasks
    assert core.counts() == {"completed": 1, "queued": 1}  # ended tasks are still counted
    # Late or repeated reports about it change nothing.
    core.attempt_result(AttemptResult("t1", 1, True, simulated=True), 3.0)
    assert core.quality(QualityResult("t1", 1, 0.3, simulated=True), 3.0)
    assert not [e for e in core.take_effects() if isinstance(e, TaskDone)] and not list(core.take_dirty())


def test_a_decision_outside_the_step_range_is_refused() -> None:
    core = make_core()
    up(core)
    core.accept(task("t1"), 0.0)
    snapshot = core.snapshot(1.0)
    # 2^32 - 1 steps would keep the gang busy for ~1.35e9 s on the reference profile.
    assert not core.apply(snapshot, Decision(True, "t1", 2**32 - 1, 0, (1.0, 0.0)), 3, 1.0)
    assert not core.apply(core.snapshot(1.0), Decision(True, "t1", 0, 0, (1.0, 0.0)), 3, 1.0)
    assert not [e for e in core.take_effects() if isinstance(e, DispatchGang)]
    assert list(core.queue) == ["t1"] and all(e.schedulable for e in core.executors.values())
    launch(core, "t1", steps=32)  # the task still starts on a decision within the range


def test_claimed_attempt_times_are_capped_at_the_profiles_bound() -> None:
    bound = attempt_bound_s(get_profile("reference"), 32)
    assert bound == pytest.approx(10 * (32.0 + 32 * 0.315))
    core = make_core()
    up(core)
    for seq, claimed in enumerate((1.35e9, float("inf"), float("nan"), -5.0), start=2):
        core.executor_report(report("e0", seq, ExecState.BUSY, remaining_s=claimed), 1.0)
        remaining = next(s.remaining_s for s in core.snapshot(1.0).servers if s.server_id == "e0")
        assert remaining == (0.0 if claimed < 0 else bound)
    core.accept(task("t1", patches=1), 0.0)
    launch(core, "t1")
    forged = AttemptResult("t1", 1, True, init_s=-1e30, run_s=1e30, simulated=True)
    core.attempt_result(forged, 2.0)
    result = core.tasks["t1"].result
    assert result is not None and (result.init_s, result.run_s) == (0.0, bound)
    core.quality(QualityResult("t1", 1, 0.25, simulated=True), 3.0)
    (done,) = [e for e in core.take_effects() if isinstance(e, TaskDone)]
    assert 0.0 <= core._reward(done.record, result, 0.25) <= 20.0
