"""The diffusers runner on the tiny pipeline: real PNGs with their SHA-256 and measured timings, warm
models, seeded determinism, clear failures, and the executor service running it on RabbitMQ."""

from __future__ import annotations

import hashlib
import queue
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from eat.v1 import executor_pb2
from services.common import topology
from services.common.bus import Bus
from services.common.settings import SettingsError
from services.executor.core import AttemptFailed, Dispatch, Failure, FailureCode, RunReport
from services.executor.diffusers_runner import DiffusersRunner, Fallbacks
from services.executor.models import ModelRegistry
from services.executor.service import ExecutorService
from services.executor.settings import ExecutorSettings
from tests.services.executor.conftest import TINY
from tests.services.rabbit import AMQP_URL, bus_thread, messages, observer, unique

RESOLUTION = 64
FALLBACKS = Fallbacks(step_s=0.5, load_s=3.0)


class BusThreadStandIn:
    """What the bus does with `call_threadsafe`: queue the function for the test's thread to run."""

    def __init__(self) -> None:
        self.calls: queue.Queue[Callable[[], None]] = queue.Queue()

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        self.calls.put(fn)

    def run_next(self, timeout_s: float = 60.0) -> None:
        self.calls.get(timeout=timeout_s)()


@pytest.fixture
def handback() -> BusThreadStandIn:
    return BusThreadStandIn()


@pytest.fixture
def runner(tiny_models_dir: Path, tmp_path: Path, handback: BusThreadStandIn) -> Iterator[DiffusersRunner]:
    registry = ModelRegistry(tiny_models_dir, memory_budget_bytes=2**30, max_models=2)
    runner = DiffusersRunner(
        registry,
        result_store=tmp_path / "results",
        resolution=RESOLUTION,
        time_scale=1.0,
        fallbacks=FALLBACKS,
        call_threadsafe=handback.call_threadsafe,
    )
    yield runner
    runner.close()


def dispatch_of(task_id: str, *, seed: int = 7, steps: int = 4, model: str = TINY, k: int = 1) -> Dispatch:
    members = tuple(f"edge-{i}" for i in range(k))
    return Dispatch(task_id, 1, "a red fox in snow", model, steps, seed, members, group_id=3, rank=0)


def run(runner: DiffusersRunner, handback: BusThreadStandIn, dispatch: Dispatch) -> RunReport | Failure:
    """Start an attempt and return what `done` receives, called on this (the "bus") thread."""
    outcomes: list[RunReport | Failure] = []
    runner.start(dispatch, outcomes.append)
    assert outcomes == []  # nothing before the worker hands the outcome back
    handback.run_next()
    (outcome,) = outcomes
    return outcome


def report_of(outcome: RunReport | Failure) -> RunReport:
    assert isinstance(outcome, RunReport), outcome
    return outcome


def test_an_attempt_stores_a_png_with_its_hash_and_timings(
    runner: DiffusersRunner, handback: BusThreadStandIn, tmp_path: Path
) -> None:
    report = report_of(run(runner, handback, dispatch_of("task-1", steps=5)))
    image = report.image
    assert image is not None and not report.simulated and not report.model_reused
    path = Path(urlparse(image.uri).path)
    assert image.uri.startswith("file:///") and path == (tmp_path / "results" / "task-1" / "1.png").resolve()
    data = path.read_bytes()
    assert image.sha256 == hashlib.sha256(data).hexdigest() and image.size_bytes == len(data)
    assert (image.format, image.width, image.height) == ("png", RESOLUTION, RESOLUTION)
    with Image.open(path) as stored:
        assert (stored.format, stored.size, stored.mode) == ("PNG", (RESOLUTION, RESOLUTION), "RGB")
    assert [p.name for p in path.parent.iterdir()] == ["1.png"]  # no temporary file left

    t = report.timings
    assert t.init_s > 0 and t.step_mean_s > 0 and t.denoise_s > 0 and t.decode_s > 0
    assert t.denoise_s == pytest.approx(t.step_mean_s * 5)
    assert t.total_s >= t.init_s + t.denoise_s + t.decode_s
    assert t.group_setup_s == 0.0 and t.queue_wait_s == 0.0
    assert runner.resident_models() == (TINY,)


def test_three_tasks_on_one_model_load_it_once(runner: DiffusersRunner, handback: BusThreadStandIn) -> None:
    reports = [report_of(run(runner, handback, dispatch_of(f"warm-{i}"))) for i in range(3)]
    assert runner.registry.loads == {TINY: 1}
    assert [r.model_reused for r in reports] == [False, True, True]
    assert reports[0].timings.init_s > 0
    assert [r.timings.init_s for r in reports[1:]] == [0.0, 0.0]


def test_the_seed_decides_the_image(runner: DiffusersRunner, handback: BusThreadStandIn) -> None:
    first = report_of(run(runner, handback, dispatch_of("seed-a", seed=11)))
    same = report_of(run(runner, handback, dispatch_of("seed-b", seed=11)))
    other = report_of(run(runner, handback, dispatch_of("seed-c", seed=12)))
    assert first.image and same.image and other.image
    assert first.image.sha256 == same.image.sha256
    assert (
        Path(urlparse(first.image.uri).path).read_bytes() == Path(urlparse(same.image.uri).path).read_bytes()
    )
    assert other.image.sha256 != first.image.sha256


def test_the_expected_duration_learns_from_measurements(
    runner: DiffusersRunner, handback: BusThreadStandIn
) -> None:
    outcomes: list[RunReport | Failure] = []
    cold_guess = runner.start(dispatch_of("guess", steps=4), outcomes.append)
    assert cold_guess == pytest.approx(FALLBACKS.load_s + 4 * FALLBACKS.step_s)
    handback.run_next()
    measured = report_of(outcomes[0]).timings
    warm_guess = runner.start(dispatch_of("guess-2", steps=8), outcomes.append)
    assert warm_guess == pytest.approx(8 * measured.step_mean_s)  # warm: no load, measured steps
    handback.run_next()


def test_an_unknown_model_fails_to_load(
    runner: DiffusersRunner, handback: BusThreadStandIn, tiny_models_dir: Path
) -> None:
    with pytest.raises(AttemptFailed) as refused:
        runner.start(dispatch_of("unknown", model="sd-nope"), lambda outcome: None)
    assert refused.value.failure.code is FailureCode.MODEL_LOAD_FAILED
    assert "sd-nope" in refused.value.failure.message


def test_a_model_that_cannot_load_fails_the_attempt(
    tiny_models_dir: Path, tmp_path: Path, handback: BusThreadStandIn
) -> None:
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "model_index.json").write_text("{not json")
    registry = ModelRegistry(tmp_path / "models", memory_budget_bytes=2**30, max_models=2)
    runner = DiffusersRunner(
        registry,
        result_store=tmp_path / "results",
        resolution=RESOLUTION,
        time_scale=1.0,
        fallbacks=FALLBACKS,
        call_threadsafe=handback.call_threadsafe,
    )
    try:
        outcome = run(runner, handback, dispatch_of("broken", model="broken"))
    finally:
        runner.close()
    assert isinstance(outcome, Failure) and outcome.code is FailureCode.MODEL_LOAD_FAILED
    assert "model 'broken': cannot load" in outcome.message


def test_a_task_id_that_would_leave_the_result_store_is_refused(runner: DiffusersRunner) -> None:
    with pytest.raises(AttemptFailed, match="cannot name a result folder"):
        runner.start(dispatch_of(".."), lambda outcome: None)


def test_closing_abandons_the_running_attempt_unreported(
    runner: DiffusersRunner, handback: BusThreadStandIn, tmp_path: Path
) -> None:
    runner.start(dispatch_of("long", steps=500), lambda outcome: None)
    runner.close(timeout_s=60.0)
    assert not runner._worker.is_alive()
    assert handback.calls.empty()  # no outcome: the aggregator retries once heartbeats stop
    assert not (tmp_path / "results" / "long").exists()
    with pytest.raises(AttemptFailed, match="closing"):
        runner.start(dispatch_of("after"), lambda outcome: None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"device": "sim"}, "EAT_DEVICE must be cpu, cuda or cuda:<n>"),
        ({"resolution": 60}, "EAT_RESOLUTION must be a positive multiple of 8"),
        ({"dtype": "float64"}, "EAT_DTYPE must be one of"),
        ({"memory_budget_gb": 0.0}, "EAT_MEMORY_BUDGET_GB must be > 0"),
    ],
)
def test_diffusers_settings_are_checked(overrides: dict, message: str) -> None:
    good = {"runner": "diffusers", "device": "cuda:1", "resolution": 64}
    assert ExecutorSettings.from_env({}, **good).dtype == "float32"
    with pytest.raises(SettingsError, match=message):
        ExecutorSettings.from_env({}, **(good | overrides))


@pytest.mark.broker
def test_the_executor_service_runs_it_and_reports_resident_models(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    executor_id, task_id = unique("exec"), unique("task")
    settings = ExecutorSettings.from_env(
        {},
        executor_id=executor_id,
        runner="diffusers",
        device="cpu",
        models=(TINY,),
        models_dir=tiny_models_dir,
        resolution=RESOLUTION,
        result_store=tmp_path / "results",
        state_dir=tmp_path / "state",
        heartbeat_s=0.2,
        status_s=0.3,
        log_format="json",
    )
    bus = Bus(AMQP_URL, queues=())
    service = ExecutorService(settings, bus)
    service.start()
    with observer() as obs, bus_thread(bus, service.queue.name):
        obs.bind(topology.EXECUTORS.name, topology.status_key(executor_id))
        obs.bind(topology.RESULTS.name, topology.result_key(task_id))
        obs.wait_for(lambda seen: bool(messages(seen, executor_pb2.ExecutorStatus)))  # its queue is up
        message = executor_pb2.GangDispatch(task_id=task_id, attempt=1, prompt="a fox", model=TINY, steps=3)
        message.seed, message.rank = 5, 0
        message.gang.members.append(executor_id)
        message.gang.group_id = 1
        message.dispatched_at.FromDatetime(datetime.now(UTC))
        obs.publish(topology.DISPATCH.name, topology.dispatch_key(executor_id), message, mandatory=True)

        def resident_reported(seen: list) -> bool:
            statuses = messages(seen, executor_pb2.ExecutorStatus)
            return bool(messages(seen, executor_pb2.TaskResult)) and any(
                list(s.resident_models) == [TINY] for s in statuses
            )

        assert list(messages(obs.seen, executor_pb2.ExecutorStatus)[0].resident_models) == []

        obs.wait_for(resident_reported, timeout_s=60.0)
    service.runner.close()
    (result,) = messages(obs.seen, executor_pb2.TaskResult)
    assert result.success and not result.simulated and result.timings.total_s > 0
    assert result.image.uri.endswith(f"/results/{task_id}/1.png") and result.image.width == RESOLUTION
    stored = Path(urlparse(result.image.uri).path).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == result.image.sha256
    assert messages(obs.seen, executor_pb2.ExecutorStatus)[-1].device == "cpu"
