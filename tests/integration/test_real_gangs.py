"""Patch-parallel gangs through the real stack: four diffusers executors on the tiny pipeline form gloo
gangs from the aggregator's dispatches (rank 0's host, a port per formation), so tasks of 1, 2 and 4
patches complete with real images; and when a gang member is SIGKILLed mid-task the survivors fail the
attempt fast, the task is retried on other servers and ends exactly once."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from eat.v1 import tasks_pb2
from services.client import Client
from services.executor.tiny import make_tiny
from services.stack import Stack

pytestmark = pytest.mark.slow
RESOLUTION = 64
MODEL = "tiny"
EXECUTORS = 4
WAIT_S = 120.0
PROMPT = "a red fox in snow"


@pytest.fixture(scope="module")
def gang_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline (seed 0), built once for this file's stacks."""
    models_dir = tmp_path_factory.mktemp("gang-models")
    make_tiny(models_dir / MODEL, seed=0)
    return models_dir


def gang_stack(make_stack, models_dir: Path) -> Stack:
    executor_env = {
        "EAT_RUNNER": "diffusers",
        "EAT_MODELS_DIR": str(models_dir),
        "EAT_RESOLUTION": str(RESOLUTION),
        "EAT_DEVICE": "cpu",
        "EAT_HOST": "127.0.0.1",
        "EAT_COLLECTIVE_TIMEOUT_S": "3.0",  # a lost member is noticed within seconds
    }
    # A gang whose member died before meeting gives up after 5 s rather than the default 30 s.
    aggregator_env = {"EAT_RENDEZVOUS_TIMEOUT_S": "5.0"}
    return make_stack(
        executors=EXECUTORS,
        time_scale=1.0,
        models=(MODEL,),
        with_trainer=False,
        extra_env={"executor": executor_env, "aggregator": aggregator_env},
    )


def submit(client: Client, task_id: str, patches: int, min_steps: int | None = None) -> None:
    submission = tasks_pb2.TaskSubmission(
        task_id=task_id, prompt="a red fox in snow", model=MODEL, patches=patches
    )
    if min_steps is not None:
        submission.qos.min_steps = min_steps
    client.submit(submission)


def check_real_image(result, results_dir: Path) -> None:
    assert not result.simulated
    path = Path(urlparse(result.image.uri).path)
    assert path.is_file() and path.is_relative_to(results_dir)
    with Image.open(path) as image:
        assert image.size == (RESOLUTION, RESOLUTION)


def log_records(stack: Stack, executor_id: str) -> list[dict]:
    records = []
    for line in stack.log_path(f"executor:{executor_id}").read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # library output that is not ours
    return records


def gang_member_running(stack: Stack, task_id: str, k: int, timeout_s: float) -> str:
    """The id of an executor that logged starting `task_id` as a member of a gang of `k`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for executor_id in stack.config.executor_ids:
            for record in log_records(stack, executor_id):
                started = record.get("event") == "attempt started" and record.get("task_id") == task_id
                if started and record.get("k") == k:
                    return executor_id
        time.sleep(0.05)
    raise AssertionError(f"no executor started {task_id} in a gang of {k} within {timeout_s}s")


def failed_attempts(stack: Stack, executor_id: str, task_id: str) -> list[dict]:
    return [
        record
        for record in log_records(stack, executor_id)
        if record.get("event") == "attempt finished"
        and record.get("task_id") == task_id
        and record.get("success") is False
    ]


def test_tasks_of_1_2_and_4_patches_complete_with_real_images(
    make_stack, amqp_url: str, gang_models_dir: Path
) -> None:
    stack = gang_stack(make_stack, gang_models_dir)
    client = Client(amqp_url)
    patches = {"gang-k1": 1, "gang-k2": 2, "gang-k4": 4}
    for task_id, k in patches.items():
        submit(client, task_id, k)
    done = client.wait(set(patches), timeout_s=WAIT_S)
    client.close()

    assert Counter(event.kind for event in done.values()) == {"completed": len(patches)}, done
    results_dir = (stack.config.work_dir / "results").resolve()
    for task_id, k in patches.items():
        result = done[task_id].message.result
        assert len(result.gang) == k
        check_real_image(result, results_dir)
    assert all(code == 0 for code in stack.stop().values())


def test_a_gang_member_killed_mid_task_fails_the_attempt_and_the_task_completes_elsewhere(
    make_stack, amqp_url: str, gang_models_dir: Path
) -> None:
    stack = gang_stack(make_stack, gang_models_dir)
    client = Client(amqp_url)
    # Warm every executor first, so the gang below is in its denoising loop moments after it starts.
    submit(client, "warm-up", 4)
    assert client.wait({"warm-up"}, timeout_s=WAIT_S)["warm-up"].kind == "completed"

    # 32 steps (the most there are) keep the gang busy for seconds, so the kill lands mid-task.
    submit(client, "doomed-gang", 2, min_steps=32)
    victim = gang_member_running(stack, "doomed-gang", k=2, timeout_s=60.0)
    stack.kill(f"executor:{victim}")
    done = client.wait({"doomed-gang"}, timeout_s=WAIT_S)
    time.sleep(1.0)  # a duplicate terminal event would arrive within this
    list(client.events(0.5))
    client.close()

    event = done["doomed-gang"]
    assert event.kind in ("completed", "failed")
    assert Counter(e.task_id for e in client.history if e.terminal)["doomed-gang"] == 1
    if event.kind == "completed":
        result = event.message.result
        assert victim not in result.gang  # retried on servers that were alive
        check_real_image(result, (stack.config.work_dir / "results").resolve())
    else:
        assert event.message.message  # too few servers: a reason, never silence
    survivors = [e for e in stack.config.executor_ids if e != victim]
    # The task may be retried and done before the survivor's collective times out: wait for its report.
    deadline = time.monotonic() + 30.0
    while not any(failed_attempts(stack, e, "doomed-gang") for e in survivors):
        assert time.monotonic() < deadline, (
            "the surviving member of the first gang never reported its failed attempt"
        )
        time.sleep(0.2)
