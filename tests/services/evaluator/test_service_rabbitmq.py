"""The evaluator on the real RabbitMQ: TaskResults in, QualityReports on eat.quality out, bad messages
to the dead letters.

The service's bus loop runs in a thread, consuming a private copy of its input queue (published to
through the default exchange), so other test runs' results on eat.results never reach it and its own
never reach theirs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from prometheus_client import REGISTRY

from eat.v1 import common_pb2, executor_pb2, quality_pb2
from policy_models.profiles import quality_of_steps
from services.common import topology
from services.common.bus import Bus, Delivery
from services.common.topology import Queue
from services.evaluator.clip_scorer import ClipScorer
from services.evaluator.service import SCORES_FILE, EvaluatorService
from services.evaluator.settings import EvaluatorSettings
from tests.services.evaluator.images import PROMPTS, candidate_images, store_png
from tests.services.rabbit import (
    AMQP_URL,
    QUEUE_EXPIRES_MS,
    Observer,
    bus_thread,
    messages,
    observer,
    unique,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
BATCH_WINDOW_S = 0.3  # wide enough that results published together share a batch
REAL_STEPS = 12


@contextmanager
def running_evaluator(result_store: Path, scorer: ClipScorer) -> Iterator[EvaluatorService]:
    settings = EvaluatorSettings.from_env(
        {},
        result_store=result_store,
        state_dir=result_store,  # the scores file lands in the test's folder
        batch_size=8,
        batch_window_s=BATCH_WINDOW_S,
        log_format="json",
    )
    inbox = Queue(unique("test.evaluator.in"), arguments={"x-expires": QUEUE_EXPIRES_MS})
    bus = Bus(AMQP_URL, queues=())
    service = EvaluatorService(settings, bus, scorer, queue=inbox)
    service.start()
    bus.connect()  # declares the inbox before the test publishes to it; the thread then owns the bus
    with bus_thread(bus, inbox.name):
        yield service


def send(obs: Observer, service: EvaluatorService, result: executor_pb2.TaskResult) -> None:
    obs.bind(topology.QUALITY.name, topology.quality_key(result.task_id))
    obs.publish("", service.queue.name, result)


def simulated_result(task_id: str, steps: int = 25) -> executor_pb2.TaskResult:
    return executor_pb2.TaskResult(
        task_id=task_id,
        attempt=1,
        success=True,
        simulated=True,
        simulated_quality=quality_of_steps(steps),
        prompt="a red fox",
        steps=steps,
    )


def real_result(task_id: str, prompt: str, uri: str, sha256: str = "") -> executor_pb2.TaskResult:
    result = executor_pb2.TaskResult(
        task_id=task_id, attempt=2, success=True, prompt=prompt, model="tiny-sd", steps=REAL_STEPS
    )
    result.image.CopyFrom(common_pb2.ImageRef(uri=uri, sha256=sha256, format="png"))
    return result


def reports_for(seen: list[Delivery], task_id: str) -> list[quality_pb2.QualityReport]:
    return [r for r in messages(seen, quality_pb2.QualityReport) if r.task_id == task_id]


def has_reports(*task_ids: str) -> Callable[[list[Delivery]], bool]:
    return lambda seen: all(reports_for(seen, t) for t in task_ids)


def batches_scored() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("eat_evaluator_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("eat_evaluator_batch_size_sum") or 0.0
    return count, total


@pytest.mark.broker
def test_simulated_and_real_results_get_quality_reports(tmp_path: Path, tiny_scorer: ClipScorer) -> None:
    sim_task, real_task, other_task, missing_task, failed_task = (unique("task") for _ in range(5))
    images = candidate_images(2)
    uri, digest = store_png(tmp_path, f"{real_task}/2.png", images[0])
    other_uri, _ = store_png(tmp_path, f"{other_task}/2.png", images[1])
    batches_before = batches_scored()

    with observer() as obs, running_evaluator(tmp_path, tiny_scorer) as service:
        send(obs, service, simulated_result(sim_task))
        send(obs, service, real_result(real_task, PROMPTS[0], uri, digest))
        send(obs, service, real_result(other_task, PROMPTS[1], other_uri))
        send(obs, service, real_result(missing_task, PROMPTS[2], (tmp_path / "gone.png").as_uri()))
        failed = executor_pb2.TaskResult(task_id=failed_task, attempt=1, success=False)
        failed.error.CopyFrom(common_pb2.Error(reason=common_pb2.FAILURE_REASON_EXECUTOR_ERROR, message="x"))
        send(obs, service, failed)
        obs.wait_for(has_reports(sim_task, real_task, other_task, missing_task))
        obs.collect_for(0.3)  # a report for the failed result, if any, would have come with the others

    (sim,) = reports_for(obs.seen, sim_task)
    assert sim.simulated and sim.evaluator_model == "simulator" and sim.eval_s == 0.0 and not sim.error
    assert sim.clip_score == pytest.approx(quality_of_steps(25), rel=1e-6)

    (real,) = reports_for(obs.seen, real_task)
    assert not real.simulated and real.evaluator_model == "open_clip:tiny" and not real.error
    assert real.attempt == 2 and real.eval_s > 0 and real.evaluated_at.seconds > 0
    assert real.clip_score == pytest.approx(tiny_scorer.score([images[0]], [PROMPTS[0]])[0], abs=1e-5)
    (other,) = reports_for(obs.seen, other_task)
    assert other.clip_score == pytest.approx(tiny_scorer.score([images[1]], [PROMPTS[1]])[0], abs=1e-5)

    (missing,) = reports_for(obs.seen, missing_task)
    assert "cannot read" in missing.error and missing.evaluator_model == "open_clip:tiny"
    assert reports_for(obs.seen, failed_task) == []

    count, total = (after - before for after, before in zip(batches_scored(), batches_before, strict=True))
    assert total == 3 and count < 3  # the three real results shared batches

    # One score line per real image scored without error, for `eat calibrate`; none for the others.
    lines = [json.loads(line) for line in (tmp_path / SCORES_FILE).read_text().splitlines()]
    assert sorted(line["task_id"] for line in lines) == sorted([real_task, other_task])
    by_task = {line["task_id"]: line for line in lines}
    assert by_task[real_task]["clip_score"] == pytest.approx(real.clip_score, abs=1e-6)
    assert {(line["model"], line["steps"], line["attempt"]) for line in lines} == {("tiny-sd", REAL_STEPS, 2)}


@pytest.mark.broker
def test_malformed_results_are_dead_lettered_with_a_reason(tmp_path: Path, tiny_scorer: ClipScorer) -> None:
    """The broker copies every dead letter to eat.dead_letters and to this test's queue bound to the
    fanout eat.dlx; reading the copy keeps other runs draining eat.dead_letters harmless."""
    with observer((topology.DLX.name, "")) as obs, running_evaluator(tmp_path, tiny_scorer) as service:
        inbox = service.queue.name
        garbage = pika.BasicProperties(type=executor_pb2.TaskResult.DESCRIPTOR.full_name)
        obs.bus._channel.basic_publish("", inbox, b"\xff\xff\xff not protobuf", garbage)
        obs.publish("", inbox, quality_pb2.QualityReport(task_id="wrong-type"))
        obs.publish("", inbox, executor_pb2.TaskResult(success=True, simulated=True))  # no task id
        obs.wait_for(lambda seen: len(dead_from(seen, inbox)) == 3)

    reasons = [d.headers[topology.REASON_HEADER] for d in dead_from(obs.seen, inbox)]
    assert "cannot decode eat.v1.TaskResult" in reasons[0]
    assert "expected a eat.v1.TaskResult message" in reasons[1]
    assert "task_id is empty" in reasons[2]


def dead_from(seen: list[Delivery], queue_name: str) -> list[Delivery]:
    return [d for d in seen if d.headers.get(topology.SOURCE_HEADER) == queue_name]


@pytest.mark.slow
def test_the_process_builds_its_model_and_stops_on_signals(tmp_path: Path) -> None:
    """`python -m services.evaluator` with a broker that is not there: it builds the tiny model, keeps
    retrying the connection, and exits cleanly on the second SIGTERM (the first waits to flush)."""
    env = {
        **os.environ,
        **EvaluatorSettings(amqp_url="amqp://guest:guest@127.0.0.1:9/%2F", log_format="json").to_env(),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.evaluator"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = []
        deadline = time.monotonic() + 120
        while not any("broker unreachable" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stderr.readline())
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = "".join(lines) + rest
    assert process.returncode == 0, log
    assert "CLIP model ready" in log and "open_clip:tiny" in log and "evaluator stopped" in log


def test_the_service_consumes_the_shared_results_queue_by_default(tiny_scorer: ClipScorer) -> None:
    service = EvaluatorService(EvaluatorSettings(), Bus(AMQP_URL), tiny_scorer)
    assert service.queue == topology.EVALUATOR_RESULTS
    assert (topology.RESULTS.name, "result.#") in service.queue.bindings
