"""The executor on the real RabbitMQ: dispatch in, statuses, heartbeats and results out.

Executors run in threads with their own Bus (and once as `python -m services.executor`), at
time_scale 100 so a 30 simulated-second attempt takes 0.3 wall seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eat.v1 import common_pb2, executor_pb2
from policy_models.profiles import REFERENCE, quality_of_steps
from services.common import topology
from services.common.bus import Bus, Delivery
from services.executor.service import ExecutorService
from services.executor.settings import ExecutorSettings
from tests.services.rabbit import (
    AMQP_URL,
    Observer,
    bus_thread,
    delete_queues,
    messages,
    observer,
    unique,
)

pytestmark = pytest.mark.broker
TIME_SCALE = 100.0
REPO_ROOT = Path(__file__).resolve().parents[3]

Status = executor_pb2.ExecutorStatus
Result = executor_pb2.TaskResult
SEQUENCED = {t.DESCRIPTOR.full_name: t for t in (Status, executor_pb2.ExecutorHeartbeat)}


def sequence_of(delivery: Delivery) -> int:
    return delivery.parse(SEQUENCED[delivery.type_name]).sequence


def executor_settings(executor_id: str, state_dir: Path, status_s: float = 0.5) -> ExecutorSettings:
    return ExecutorSettings.from_env(
        {},
        executor_id=executor_id,
        time_scale=TIME_SCALE,
        heartbeat_s=0.2,
        status_s=status_s,
        state_dir=state_dir,
        log_format="json",
    )


@contextmanager
def running_executor(executor_id: str, state_dir: Path, status_s: float = 0.5) -> Iterator[ExecutorService]:
    """An executor's bus loop in a thread; its queue is deleted afterwards."""
    bus = Bus(AMQP_URL, queues=())  # the executor's own queue only: leave the shared ones alone
    service = ExecutorService(executor_settings(executor_id, state_dir, status_s), bus)
    service.start()
    with bus_thread(bus, service.queue.name):
        yield service


def listen_to(obs: Observer, *executor_ids: str) -> None:
    for executor_id in executor_ids:
        obs.bind(topology.EXECUTORS.name, topology.status_key(executor_id))
        obs.bind(topology.EXECUTORS.name, topology.heartbeat_key(executor_id))


def statuses_of(seen: list[Delivery], executor_id: str) -> list[executor_pb2.ExecutorStatus]:
    return [s for s in messages(seen, Status) if s.executor_id == executor_id]


def has_state(executor_id: str, state: int, task_id: str = "") -> Callable[[list[Delivery]], bool]:
    def done(seen: list[Delivery]) -> bool:
        return any(
            s.state == state and (not task_id or s.current_task_id == task_id)
            for s in statuses_of(seen, executor_id)
        )

    return done


def is_idle_again(seen: list[Delivery], executor_id: str) -> bool:
    """An IDLE status after the first BUSY one."""
    states = [s.state for s in statuses_of(seen, executor_id)]
    busy = executor_pb2.EXECUTOR_STATE_BUSY
    return busy in states and executor_pb2.EXECUTOR_STATE_IDLE in states[states.index(busy) :]


def results_for(seen: list[Delivery], task_id: str) -> list[executor_pb2.TaskResult]:
    return [r for r in messages(seen, Result) if r.task_id == task_id]


def dispatch(
    obs: Observer, task_id: str, members: list[str], rank: int, *, attempt: int = 1, **fields: object
) -> None:
    """Publish one member's copy of a GangDispatch (and listen for the task's result)."""
    obs.bind(topology.RESULTS.name, topology.result_key(task_id))
    message = executor_pb2.GangDispatch(
        task_id=task_id,
        attempt=attempt,
        prompt=fields.pop("prompt", "a lighthouse at dusk"),
        model=fields.pop("model", "sd-v1-4"),
        steps=fields.pop("steps", 20),
        seed=42,
        rank=rank,
        **fields,
    )
    message.gang.members.extend(members)
    message.gang.group_id = 77
    message.dispatched_at.FromDatetime(datetime.now(UTC))
    obs.publish(topology.DISPATCH.name, topology.dispatch_key(members[rank]), message, mandatory=True)


def dispatch_to_gang(obs: Observer, task_id: str, members: list[str], **fields: object) -> None:
    for rank in range(len(members)):
        dispatch(obs, task_id, members, rank, **dict(fields))


def test_single_executor_runs_a_task_then_reuses_the_model(tmp_path: Path) -> None:
    executor_id = unique("exec")
    task_id, again = unique("task"), unique("task")
    # No periodic status within the test: every status seen comes from the start or a state change.
    with observer() as obs, running_executor(executor_id, tmp_path, status_s=60.0) as service:
        listen_to(obs, executor_id)
        obs.wait_for(has_state(executor_id, executor_pb2.EXECUTOR_STATE_IDLE))

        sent = time.monotonic()
        dispatch(obs, task_id, [executor_id], 0)
        obs.wait_for(lambda seen: bool(results_for(seen, task_id)))
        waited = time.monotonic() - sent
        obs.wait_for(lambda seen: is_idle_again(seen, executor_id))

        (result,) = results_for(obs.seen, task_id)
        assert result.success and result.simulated and not result.HasField("image")
        assert result.simulated_quality == pytest.approx(quality_of_steps(20), rel=1e-6)
        assert result.timings.init_s == REFERENCE.init_s[1]
        assert result.timings.step_mean_s == pytest.approx(REFERENCE.step_s[1])
        assert result.timings.denoise_s == pytest.approx(REFERENCE.step_s[1] * 20)
        assert result.timings.total_s == pytest.approx(REFERENCE.init_s[1] + REFERENCE.step_s[1] * 20)
        assert result.timings.queue_wait_s >= 0.0
        assert not result.model_reused
        assert list(result.executor_ids) == [executor_id] and result.group_id == 77
        assert (result.prompt, result.model) == ("a lighthouse at dusk", "sd-v1-4")
        assert (result.steps, result.seed) == (20, 42)
        assert result.finished_at.seconds > 0
        assert waited >= result.timings.total_s / TIME_SCALE * 0.9  # it really waited the scaled time

        statuses = statuses_of(obs.seen, executor_id)
        busy = [s for s in statuses if s.state == executor_pb2.EXECUTOR_STATE_BUSY]
        assert busy and busy[0].current_task_id == task_id and busy[0].current_attempt == 1
        assert 0 < busy[0].remaining_s <= result.timings.total_s
        assert list(busy[0].resident_models) == ["sd-v1-4"]
        last = statuses[-1]
        assert last.state == executor_pb2.EXECUTOR_STATE_IDLE and last.current_task_id == ""
        assert last.remaining_s == 0.0
        assert {s.incarnation for s in statuses} == {service.core.incarnation}
        assert (last.max_resident_models, last.device, last.host) == (2, "sim", "127.0.0.1")

        dispatch(obs, again, [executor_id], 0)
        obs.wait_for(lambda seen: bool(results_for(seen, again)))
        (warm,) = results_for(obs.seen, again)
        assert warm.model_reused and warm.timings.init_s == 0.0

    heartbeats = messages(obs.seen, executor_pb2.ExecutorHeartbeat)
    assert heartbeats and {h.incarnation for h in heartbeats} == {service.core.incarnation}
    sequences = [sequence_of(d) for d in obs.seen if d.type_name in SEQUENCED]
    assert sequences == sorted(set(sequences))  # strictly increasing across statuses and heartbeats
    lines = (tmp_path / f"executor-{executor_id}-timings.jsonl").read_text().splitlines()
    assert len(lines) == 2 and f'"task_id": "{task_id}"' in lines[0] and '"reused": true' in lines[1]


def test_a_gang_of_two_reports_once_from_rank_zero(tmp_path: Path) -> None:
    first, second = unique("exec"), unique("exec")
    task_id = unique("task")
    with ExitStack() as stack:
        obs = stack.enter_context(observer())
        listen_to(obs, first, second)
        stack.enter_context(running_executor(first, tmp_path))
        stack.enter_context(running_executor(second, tmp_path))
        for executor_id in (first, second):
            obs.wait_for(has_state(executor_id, executor_pb2.EXECUTOR_STATE_IDLE))

        dispatch_to_gang(obs, task_id, [first, second])
        for executor_id in (first, second):
            obs.wait_for(has_state(executor_id, executor_pb2.EXECUTOR_STATE_BUSY, task_id))
        obs.wait_for(lambda seen: bool(results_for(seen, task_id)))
        for executor_id in (first, second):
            obs.wait_for(lambda seen, e=executor_id: is_idle_again(seen, e))
        obs.collect_for(0.3)  # a second result, if any, would have arrived by now

    (result,) = results_for(obs.seen, task_id)
    assert result.success and list(result.executor_ids) == [first, second]
    assert result.timings.init_s == REFERENCE.init_s[2]
    assert result.timings.step_mean_s == pytest.approx(REFERENCE.step_s[2])


def test_refused_dispatches_get_failed_results(tmp_path: Path) -> None:
    executor_id, other = unique("exec"), unique("exec")
    wrong_rank, long_task, busy, unknown, late = (unique("task") for _ in range(5))
    with observer() as obs, running_executor(executor_id, tmp_path):
        listen_to(obs, executor_id)
        obs.wait_for(has_state(executor_id, executor_pb2.EXECUTOR_STATE_IDLE))

        # Addressed to this executor's queue, but rank 0 of [other, executor_id] is the other one.
        message = executor_pb2.GangDispatch(task_id=wrong_rank, attempt=1, model="sd-v1-4", steps=20, rank=0)
        message.gang.members.extend([other, executor_id])
        obs.bind(topology.RESULTS.name, topology.result_key(wrong_rank))
        obs.publish(topology.DISPATCH.name, topology.dispatch_key(executor_id), message)

        dispatch(obs, unknown, [executor_id], 0, model="sdxl-turbo")
        past = executor_pb2.GangDispatch().deadline
        past.FromDatetime(datetime.now(UTC) - timedelta(seconds=5))
        dispatch(obs, late, [executor_id], 0, deadline=past)
        dispatch(obs, long_task, [executor_id], 0, steps=50)
        obs.wait_for(has_state(executor_id, executor_pb2.EXECUTOR_STATE_BUSY, long_task))
        dispatch(obs, busy, [executor_id], 0)
        for task in (wrong_rank, unknown, late, busy, long_task):
            obs.wait_for(lambda seen, t=task: bool(results_for(seen, t)))

    def error_of(task: str) -> tuple[str, str]:
        (result,) = results_for(obs.seen, task)
        assert not result.success and not result.HasField("image")
        return common_pb2.FailureReason.Name(result.error.reason), result.error.message

    assert error_of(wrong_rank)[0] == "FAILURE_REASON_INTERNAL"
    assert results_for(obs.seen, wrong_rank)[0].executor_ids == [other, executor_id]
    assert error_of(unknown)[0] == "FAILURE_REASON_MODEL_LOAD_FAILED"
    assert error_of(late)[0] == "FAILURE_REASON_DEADLINE_EXCEEDED"
    assert error_of(busy) == ("FAILURE_REASON_EXECUTOR_BUSY", f"busy with {long_task}")
    assert results_for(obs.seen, long_task)[0].success  # the refusals did not disturb the running one


def dead_from(seen: list[Delivery], queue_name: str) -> list[Delivery]:
    return [d for d in seen if d.headers.get(topology.SOURCE_HEADER) == queue_name]


def test_a_malformed_dispatch_is_dead_lettered_with_a_reason(tmp_path: Path) -> None:
    """The broker copies every dead letter to eat.dead_letters and to this test's own queue bound to
    the fanout eat.dlx; reading the copy keeps other test runs draining eat.dead_letters harmless."""
    executor_id = unique("exec")
    with observer((topology.DLX.name, "")) as obs, running_executor(executor_id, tmp_path) as service:
        listen_to(obs, executor_id)
        obs.wait_for(has_state(executor_id, executor_pb2.EXECUTOR_STATE_IDLE))
        obs.publish(topology.DISPATCH.name, topology.dispatch_key(executor_id), executor_pb2.GangDispatch())
        obs.wait_for(lambda seen: bool(dead_from(seen, service.queue.name)))
    (dead,) = dead_from(obs.seen, service.queue.name)
    assert "task_id is empty" in dead.headers[topology.REASON_HEADER]


def test_the_process_drains_on_sigterm(tmp_path: Path) -> None:
    executor_id, task_id = unique("exec"), unique("task")
    env = {
        **os.environ,
        **executor_settings(executor_id, tmp_path).to_env(),
        "OMP_NUM_THREADS": "1",
    }
    with observer() as obs:
        listen_to(obs, executor_id)
        process = subprocess.Popen(
            [sys.executable, "-m", "services.executor"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            obs.wait_for(has_state(executor_id, executor_pb2.EXECUTOR_STATE_IDLE), timeout_s=30)
            dispatch(obs, task_id, [executor_id], 0)
            obs.wait_for(lambda seen: bool(results_for(seen, task_id)))
            process.send_signal(signal.SIGTERM)
            obs.wait_for(has_state(executor_id, executor_pb2.EXECUTOR_STATE_DRAINING))
            _, stderr = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            delete_queues(topology.executor_queue(executor_id).name)
    assert process.returncode == 0, stderr
    assert results_for(obs.seen, task_id)[0].success
    assert statuses_of(obs.seen, executor_id)[-1].state == executor_pb2.EXECUTOR_STATE_DRAINING
    assert "executor stopped" in stderr
