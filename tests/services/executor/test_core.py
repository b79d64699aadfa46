"""The executor's pure rules without a broker: timings, the LRU, dispatch checks, results, the sim runner."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from eat.v1 import common_pb2, executor_pb2
from policy_models.profiles import REFERENCE, quality_of_steps
from services.common.convert import dispatch_from_proto, executor_status_to_proto, task_result_to_proto
from services.common.settings import SettingsError
from services.executor.core import (
    AttemptFailed,
    Dispatch,
    ExecutorCore,
    ExecutorState,
    Failure,
    FailureCode,
    ResidentModels,
    RunReport,
    Verdict,
    failed_result,
    plan_sim_attempt,
    queue_wait_s,
    refusal,
    success_result,
)
from services.executor.runners import SimRunner
from services.executor.settings import ExecutorSettings

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_dispatch(**overrides: object) -> Dispatch:
    fields: dict[str, object] = {
        "task_id": "t1",
        "attempt": 1,
        "prompt": "a red fox",
        "model": "sd-v1-4",
        "steps": 20,
        "seed": 7,
        "members": ("edge-0",),
        "group_id": 11,
        "rank": 0,
    }
    fields.update(overrides)
    return Dispatch(**fields)  # type: ignore[arg-type]


# ----- timing rules ---------------------------------------------------------------------------------
def test_cold_load_alone_costs_the_profile_init_and_steps() -> None:
    plan = plan_sim_attempt(REFERENCE, gang_size=1, steps=20, speed_factor=1.0, resident=False)
    assert plan.init_s == 24.0
    assert plan.group_setup_s == 0.0
    assert plan.step_mean_s == pytest.approx(0.315)
    assert plan.denoise_s == pytest.approx(6.3)
    assert plan.total_s == pytest.approx(30.3)
    assert not plan.model_reused


def test_resident_model_alone_starts_at_once() -> None:
    plan = plan_sim_attempt(REFERENCE, gang_size=1, steps=20, speed_factor=1.0, resident=True)
    assert (plan.init_s, plan.group_setup_s) == (0.0, 0.0)
    assert plan.total_s == pytest.approx(6.3)
    assert plan.model_reused


def test_resident_model_in_a_gang_pays_group_setup_only() -> None:
    plan = plan_sim_attempt(REFERENCE, gang_size=4, steps=10, speed_factor=1.0, resident=True)
    assert plan.init_s == 0.0
    assert plan.group_setup_s == REFERENCE.group_setup_s
    assert plan.total_s == pytest.approx(REFERENCE.group_setup_s + 1.4)


def test_gang_cold_load_uses_the_gang_size_init() -> None:
    plan = plan_sim_attempt(REFERENCE, gang_size=4, steps=10, speed_factor=1.0, resident=False)
    assert plan.init_s == 32.0
    assert plan.group_setup_s == 0.0


def test_warm_member_waits_for_the_gang_reload_when_told() -> None:
    plan = plan_sim_attempt(REFERENCE, 2, 10, 1.0, resident=True, expect_reload=True)
    assert plan.init_s == 24.0
    assert plan.model_reused  # it did hold the model, the gang did not
    alone = plan_sim_attempt(REFERENCE, 1, 10, 1.0, resident=True, expect_reload=True)
    assert alone.init_s == 0.0  # nobody to wait for


def test_speed_factor_divides_step_time_not_init() -> None:
    fast = plan_sim_attempt(REFERENCE, gang_size=1, steps=20, speed_factor=2.0, resident=False)
    assert fast.step_mean_s == pytest.approx(0.315 / 2)
    assert fast.init_s == 24.0


def test_gang_size_missing_from_profile_fails_as_executor_error() -> None:
    with pytest.raises(AttemptFailed) as raised:
        plan_sim_attempt(REFERENCE, gang_size=3, steps=20, speed_factor=1.0, resident=False)
    assert raised.value.failure.code is FailureCode.EXECUTOR_ERROR
    assert "3" in raised.value.failure.message


# ----- resident models ------------------------------------------------------------------------------
def test_lru_evicts_the_least_recently_used_beyond_capacity() -> None:
    lru = ResidentModels(2)
    assert lru.use("a") == []
    assert lru.use("b") == []
    assert lru.use("a") == []  # a is now the most recent
    assert lru.use("c") == ["b"]
    assert lru.most_recent_first() == ("c", "a")
    assert "b" not in lru and "a" in lru


def test_lru_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        ResidentModels(0)


# ----- dispatch checks ------------------------------------------------------------------------------
def check(dispatch: Dispatch, running: Dispatch | None = None, draining: bool = False) -> Failure | None:
    return refusal(dispatch, "edge-0", ("sd-v1-4",), running, draining, NOW)


def test_a_valid_dispatch_is_accepted() -> None:
    assert check(make_dispatch()) is None


@pytest.mark.parametrize(
    ("members", "rank"),
    [(("edge-1", "edge-0"), 0), (("edge-0", "edge-1"), 1), (("edge-1",), 0), (("edge-0",), 3)],
)
def test_a_rank_not_matching_the_position_is_internal(members: tuple[str, ...], rank: int) -> None:
    failure = check(make_dispatch(members=members, rank=rank))
    assert failure is not None and failure.code is FailureCode.INTERNAL


def test_busy_with_another_task() -> None:
    failure = check(make_dispatch(task_id="t2"), running=make_dispatch(task_id="t1"))
    assert failure == Failure(FailureCode.EXECUTOR_BUSY, "busy with t1")


def test_draining_refuses_new_work() -> None:
    failure = check(make_dispatch(), draining=True)
    assert failure is not None and failure.code is FailureCode.EXECUTOR_ERROR


def test_passed_deadline_and_unknown_model() -> None:
    late = check(make_dispatch(deadline=NOW - timedelta(seconds=1)))
    assert late is not None and late.code is FailureCode.DEADLINE_EXCEEDED
    assert check(make_dispatch(deadline=NOW + timedelta(seconds=1))) is None
    unknown = check(make_dispatch(model="sdxl"))
    assert unknown is not None and unknown.code is FailureCode.MODEL_LOAD_FAILED


# ----- state machine --------------------------------------------------------------------------------
def test_core_runs_one_attempt_at_a_time_and_ignores_redeliveries() -> None:
    core = ExecutorCore("edge-0", ("sd-v1-4",), "inc")
    first = make_dispatch()
    assert core.admit(first, NOW).verdict is Verdict.RUN
    core.begin(first, expected_s=30.0, started_wall_s=100.0)
    assert core.state is ExecutorState.BUSY
    assert core.admit(first, NOW).verdict is Verdict.IGNORE
    assert core.admit(make_dispatch(task_id="t2"), NOW).verdict is Verdict.REFUSE
    assert core.remaining_s(now_wall_s=100.1, time_scale=100.0) == pytest.approx(20.0)
    assert core.remaining_s(now_wall_s=101.0, time_scale=100.0) == 0.0
    core.finish(first)
    assert core.state is ExecutorState.IDLE
    assert core.admit(first, NOW).verdict is Verdict.IGNORE  # already done here
    assert core.admit(make_dispatch(attempt=2), NOW).verdict is Verdict.RUN  # a retry is new work
    core.drain()
    assert core.state is ExecutorState.DRAINING


def test_sequence_strictly_increases_across_statuses_and_heartbeats() -> None:
    core = ExecutorCore("edge-0", ("sd-v1-4",), "inc")
    numbers = [core.next_sequence()]
    numbers.append(
        core.snapshot(
            resident_models=(),
            max_resident_models=2,
            speed_factor=1.0,
            device="sim",
            host="h",
            time_scale=1.0,
            now_wall_s=0.0,
            reported_at=NOW,
        ).sequence
    )
    numbers.append(core.next_sequence())
    assert numbers == sorted(set(numbers)) and len(numbers) == 3


# ----- results --------------------------------------------------------------------------------------
def test_success_result_carries_the_task_and_scaled_queue_wait() -> None:
    dispatch = make_dispatch(members=("edge-0", "edge-1"), dispatched_at=NOW - timedelta(seconds=0.5))
    plan = plan_sim_attempt(REFERENCE, 2, 20, 1.0, resident=False)
    report = RunReport(plan.timings(), model_reused=False, simulated=True, simulated_quality=0.25)
    wait = queue_wait_s(dispatch.dispatched_at, NOW, time_scale=10.0)
    assert wait == pytest.approx(5.0)
    result = success_result(dispatch, report, wait, NOW)
    message = task_result_to_proto(result)
    assert message.success and message.simulated
    assert message.simulated_quality == pytest.approx(0.25)
    assert list(message.executor_ids) == ["edge-0", "edge-1"]
    assert (message.group_id, message.prompt, message.model, message.steps, message.seed) == (
        11,
        "a red fox",
        "sd-v1-4",
        20,
        7,
    )
    assert message.timings.queue_wait_s == pytest.approx(5.0)
    assert message.timings.init_s == 24.0
    assert message.timings.total_s == pytest.approx(24.0 + 0.15625 * 20)
    assert not message.HasField("error") and not message.HasField("image")
    assert message.finished_at.ToDatetime(tzinfo=UTC) == NOW


@pytest.mark.parametrize("code", list(FailureCode))
def test_every_failure_code_maps_to_a_proto_reason(code: FailureCode) -> None:
    message = task_result_to_proto(failed_result(make_dispatch(), Failure(code, "why"), NOW))
    assert not message.success
    assert common_pb2.FailureReason.Name(message.error.reason) == f"FAILURE_REASON_{code.value}"
    assert message.error.message == "why"


def test_status_and_dispatch_conversions() -> None:
    core = ExecutorCore("edge-0", ("sd-v1-4",), "inc-1")
    core.begin(make_dispatch(members=("edge-0", "edge-1")), expected_s=10.0, started_wall_s=0.0)
    status = executor_status_to_proto(
        core.snapshot(
            resident_models=("b", "a"),
            max_resident_models=2,
            speed_factor=1.5,
            device="sim",
            host="10.0.0.1",
            time_scale=1.0,
            now_wall_s=4.0,
            reported_at=NOW,
        )
    )
    assert status.state == executor_pb2.EXECUTOR_STATE_BUSY
    assert (status.current_task_id, status.current_attempt) == ("t1", 1)
    assert (status.group_id, status.group_size) == (11, 2)
    assert status.remaining_s == pytest.approx(6.0)
    assert list(status.resident_models) == ["b", "a"]
    assert status.incarnation == "inc-1" and status.sequence == 1

    wire = executor_pb2.GangDispatch(task_id="t9", attempt=2, steps=5, rank=1)
    wire.gang.members.extend(["x", "y"])
    wire.deadline.FromDatetime(NOW)
    parsed = dispatch_from_proto(wire)
    assert parsed.members == ("x", "y") and parsed.deadline == NOW and parsed.dispatched_at is None


# ----- the sim runner -------------------------------------------------------------------------------
class RecordingScheduler:
    """Keeps what the runner asked to run later, so the test decides when time passes."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay_s: float, fn: Callable[[], None]) -> None:
        self.calls.append((delay_s, fn))


def test_sim_runner_waits_scaled_time_and_keeps_models_warm() -> None:
    schedule = RecordingScheduler()
    runner = SimRunner(
        REFERENCE, speed_factor=1.0, max_resident_models=1, time_scale=100.0, schedule=schedule
    )
    outcomes: list[RunReport | Failure] = []
    expected = runner.start(make_dispatch(), outcomes.append)
    assert expected == pytest.approx(30.3)
    assert schedule.calls[0][0] == pytest.approx(0.303)
    assert runner.resident_models() == ("sd-v1-4",)
    schedule.calls[0][1]()
    (report,) = outcomes
    assert isinstance(report, RunReport)
    assert report.simulated and not report.model_reused
    assert report.simulated_quality == pytest.approx(quality_of_steps(20))

    assert runner.start(make_dispatch(attempt=2), outcomes.append) == pytest.approx(6.3)  # warm now
    runner.start(make_dispatch(attempt=3, model="other"), outcomes.append)
    assert runner.resident_models() == ("other",)  # capacity 1: sd-v1-4 evicted


# ----- settings -------------------------------------------------------------------------------------
def test_settings_read_the_environment() -> None:
    settings = ExecutorSettings.from_env(
        {"EAT_EXECUTOR_ID": "edge-7", "EAT_MODELS": "sd-v1-4, sd-v1-5", "EAT_SPEED_FACTOR": "1.5"}
    )
    assert settings.executor_id == "edge-7"
    assert settings.models == ("sd-v1-4", "sd-v1-5")
    assert settings.speed_factor == 1.5


@pytest.mark.parametrize(
    "env",
    [
        {"EAT_EXECUTOR_ID": "edge.1"},
        {"EAT_RUNNER": "magic"},
        {"EAT_PROFILE": "nope"},
        {"EAT_SPEED_FACTOR": "0"},
        {"EAT_MAX_RESIDENT_MODELS": "0"},
    ],
)
def test_settings_reject_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        ExecutorSettings.from_env(env)
