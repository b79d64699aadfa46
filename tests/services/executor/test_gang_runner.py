"""Gangs in the diffusers runner: DiffusersRunner instances in separate processes (as separate executors)
form real gloo gangs on the trained tiny-world pipeline. A gang's image equals the single-server image
and shows its prompt, regrouping never reloads a model, displaced mode stays close to sync, and gangs
that cannot meet fail as they should.

No broker: each member process drives its runner as the executor service does (start, then run the
outcome callback the runner hands back).
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
import torch.multiprocessing as mp
from PIL import Image

from services.executor.core import AttemptFailed, Dispatch, Failure, FailureCode, Rendezvous, RunReport
from services.executor.gang_runner import GangConfig
from tests.services.executor.conftest import WORLD
from tinyworld.judge import Judge
from tinyworld.scenes import Scene
from tinyworld.weights import JUDGE_DIR

THIS_MODULE = "tests.services.executor.test_gang_runner"
RESOLUTION = 32  # the tiny world's
STEPS = 8
SEED = 11
SCENE = Scene("triangle", "blue", "large", "left", 1, "gray")
PROMPT = SCENE.caption
HOST = "127.0.0.1"
pytestmark = pytest.mark.slow
ANSWER_WITHIN_S = 120.0
_task_ids = itertools.count()


@dataclass(frozen=True)
class MemberOutcome:
    """What one member process reported for one dispatch, and its registry's load counts after it."""

    outcome: RunReport | Failure
    loads: dict[str, int]


# ----- the member processes ---------------------------------------------------------------------------
def member_main(models_dir: Path, result_store: Path, inbox: Queue, outbox: Queue) -> None:
    """One executor's runner, kept (with its warm model) across dispatches until None arrives."""
    import torch

    from services.executor.diffusers_runner import DiffusersRunner, Fallbacks
    from services.executor.models import ModelRegistry

    torch.set_num_threads(1)
    handed_back: queue.Queue[Any] = queue.Queue()
    registry = ModelRegistry(models_dir, memory_budget_bytes=2**30, max_models=2)
    runner = DiffusersRunner(
        registry,
        result_store=result_store,
        resolution=RESOLUTION,
        time_scale=1.0,
        fallbacks=Fallbacks(step_s=0.5, load_s=3.0),
        call_threadsafe=handed_back.put,
    )
    while (request := inbox.get()) is not None:
        dispatch, patch_mode, warmup_steps = request
        runner.gang = replace(runner.gang, patch_mode=patch_mode, warmup_steps=warmup_steps)
        outcomes: list[RunReport | Failure] = []
        try:
            runner.start(dispatch, outcomes.append)
            handed_back.get(timeout=ANSWER_WITHIN_S)()  # what the bus thread does with the hand-back
        except AttemptFailed as err:
            outcomes.append(err.failure)
        outbox.put(MemberOutcome(outcomes[0], registry.loads))
    runner.close()


class Members:
    """Member processes forked from one forkserver that imported torch and diffusers once."""

    def __init__(self, size: int, models_dir: Path, result_store: Path) -> None:
        context = mp.get_context("forkserver")
        context.set_forkserver_preload([THIS_MODULE, "services.executor.diffusers_runner"])
        self.inboxes = [context.Queue() for _ in range(size)]
        self.outboxes = [context.Queue() for _ in range(size)]
        self.processes = [
            context.Process(target=member_main, args=(models_dir, result_store, inbox, outbox), daemon=True)
            for inbox, outbox in zip(self.inboxes, self.outboxes, strict=True)
        ]
        for process in self.processes:
            process.start()

    def run(
        self,
        members: list[int],
        *,
        ranks: list[int] | None = None,
        patch_mode: str = "sync",
        warmup_steps: int = 4,
        steps: int = STEPS,
        rendezvous_timeout_s: float = 30.0,
    ) -> list[MemberOutcome]:
        """Dispatch one task to `members` as a gang (only `ranks` of it are sent, all by default)."""
        dispatches = gang_dispatches(len(members), steps, rendezvous_timeout_s)
        sent = ranks if ranks is not None else list(range(len(members)))
        for rank in sent:
            self.inboxes[members[rank]].put((dispatches[rank], patch_mode, warmup_steps))
        return [self.outboxes[members[rank]].get(timeout=ANSWER_WITHIN_S) for rank in sent]

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def gang_dispatches(k: int, steps: int, rendezvous_timeout_s: float) -> list[Dispatch]:
    """Every member's copy of one dispatch, as the aggregator names a formation."""
    task_id = f"gang-task-{next(_task_ids)}-{time.monotonic_ns()}"
    executors = tuple(f"edge-{i}" for i in range(k))
    rendezvous = Rendezvous(HOST, free_port(), f"{task_id}-a1-g1", epoch=1, timeout_s=rendezvous_timeout_s)
    return [
        Dispatch(task_id, 1, PROMPT, WORLD, steps, SEED, executors, 1, rank, rendezvous=rendezvous)
        for rank in range(k)
    ]


def single_dispatch(steps: int = STEPS) -> Dispatch:
    task_id = f"single-task-{next(_task_ids)}-{time.monotonic_ns()}"
    return Dispatch(task_id, 1, PROMPT, WORLD, steps, SEED, ("edge-0",), 1, 0)


# ----- fixtures and helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def members(world_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Members]:
    pool = Members(4, world_models_dir, tmp_path_factory.mktemp("gang-results"))
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def single_image(members: Members) -> np.ndarray:
    """The k = 1 image of the test's seed and steps (member 0, which keeps the model warm)."""
    members.inboxes[0].put((single_dispatch(), "sync", 4))
    return pixels(report(members.outboxes[0].get(timeout=ANSWER_WITHIN_S)))


def report(member: MemberOutcome) -> RunReport:
    assert isinstance(member.outcome, RunReport), member.outcome
    return member.outcome


def pixels(run: RunReport) -> np.ndarray:
    """The stored PNG's pixels, after checking the file is the one the report describes."""
    assert run.image is not None
    path = Path(urlparse(run.image.uri).path)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == run.image.sha256
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def check_gang_outcome(outcomes: list[MemberOutcome]) -> RunReport:
    """Every member succeeded; only rank 0 stored an image; rank 0's timings are complete."""
    runs = [report(member) for member in outcomes]
    assert runs[0].image is not None and all(run.image is None for run in runs[1:])
    timings = runs[0].timings
    assert timings.group_setup_s > 0 and timings.denoise_s > 0 and timings.decode_s > 0
    assert timings.step_mean_s == pytest.approx(timings.denoise_s / STEPS)
    assert timings.total_s >= timings.group_setup_s + timings.denoise_s + timings.decode_s
    return runs[0]


# ----- the tests --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 4])
def test_a_gangs_image_equals_the_single_server_image(
    members: Members, single_image: np.ndarray, k: int
) -> None:
    rank0 = check_gang_outcome(members.run(list(range(k))))
    difference = np.abs(pixels(rank0) - single_image)
    assert difference.max() <= 1  # sync patch parallelism is exact up to float rounding


def test_the_image_shows_its_prompt(single_image: np.ndarray) -> None:
    """The trained model draws what it is asked, as a separate judge reads it."""
    agreement = Judge.load(JUDGE_DIR).agreement(single_image.astype(np.uint8)[None], [SCENE])
    assert agreement == dict.fromkeys(agreement, 1.0)


def test_regrouped_gangs_keep_every_model_warm(members: Members, single_image: np.ndarray) -> None:
    """Sizes 2, 4, 2 with different members: each executor loads the weights once, ever."""
    for gang in ([1, 0], [3, 2, 1, 0], [2, 3]):
        outcomes = members.run(gang)
        rank0 = check_gang_outcome(outcomes)
        assert np.abs(pixels(rank0) - single_image).max() <= 1
        assert all(member.loads == {WORLD: 1} for member in outcomes)
        assert all(report(member).model_reused for member in outcomes)


def test_displaced_mode_gives_an_image_close_to_sync(members: Members) -> None:
    steps = 8
    sync = members.run([0, 1, 2, 3], steps=steps)
    displaced = members.run([0, 1, 2, 3], steps=steps, patch_mode="displaced", warmup_steps=2)
    assert psnr_db(pixels(report(displaced[0])), pixels(report(sync[0]))) >= 30.0


def test_a_gang_whose_members_never_meet_fails_with_rendezvous_failed(members: Members) -> None:
    (alone,) = members.run([0, 1], ranks=[0], rendezvous_timeout_s=1.0)
    assert isinstance(alone.outcome, Failure)
    assert alone.outcome.code is FailureCode.RENDEZVOUS_FAILED
    # The failed formation left the model warm and usable for the next gang.
    check_gang_outcome(members.run([0, 1]))
    assert alone.loads == {WORLD: 1}


def test_a_gang_dispatched_without_a_rendezvous_is_refused_at_once(tmp_path: Path) -> None:
    from services.executor.diffusers_runner import DiffusersRunner, Fallbacks
    from services.executor.models import ModelRegistry

    registry = ModelRegistry(tmp_path, memory_budget_bytes=2**30, max_models=1)
    runner = DiffusersRunner(
        registry,
        result_store=tmp_path / "results",
        resolution=RESOLUTION,
        time_scale=1.0,
        fallbacks=Fallbacks(step_s=0.5, load_s=3.0),
        call_threadsafe=lambda fn: None,
        gang=GangConfig(backend="gloo", patch_mode="sync", warmup_steps=4, collective_timeout_s=10.0),
    )
    try:
        dispatch = replace(gang_dispatches(2, STEPS, 30.0)[0], rendezvous=None)
        with pytest.raises(AttemptFailed) as refused:
            runner.start(dispatch, lambda outcome: None)
    finally:
        runner.close()
    assert refused.value.failure.code is FailureCode.RENDEZVOUS_FAILED
