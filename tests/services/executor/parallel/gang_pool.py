"""Long-lived worker processes that stand in for executors: they keep a model warm across gangs.

The pool starts processes with the forkserver method: one clean server process imports torch, diffusers
and the jobs once, and every worker is forked from it (no threads or locks inherited from the test
process, and no 7-second import per worker). Each worker builds its model once and then runs one job at
a time from its own queue. `run_gang` hands a
job to a chosen set of workers as ranks 0..k-1 of a new formation (fresh port, unique group name) and
collects every member's outcome, noticing a worker that died instead of answering.
"""

from __future__ import annotations

import importlib
import itertools
import queue
import socket
import time
import traceback
from dataclasses import dataclass
from multiprocessing.context import ForkServerProcess
from multiprocessing.queues import Queue
from typing import Any

import torch.multiprocessing as mp

JOBS_MODULE = "tests.services.executor.parallel.gang_jobs"
POLL_S = 0.1
_formations = itertools.count()
_job_ids = itertools.count()


@dataclass(frozen=True)
class Outcome:
    """What one member reported: a value, an error (type name and text), or nothing because it died."""

    value: Any = None
    error: str | None = None
    exitcode: int | None = None
    job_id: int = -1

    @property
    def ok(self) -> bool:
        return self.error is None and self.exitcode is None


@dataclass
class Worker:
    process: ForkServerProcess
    inbox: Queue
    outbox: Queue
    last_job_id: int = -1  # outcomes of older jobs (left over by a failed test) are skipped


def worker_main(inbox: Queue, outbox: Queue) -> None:
    """Run jobs (name, kwargs) from `inbox` until None; put an Outcome for each on `outbox`."""
    jobs = importlib.import_module(JOBS_MODULE)
    jobs.init_worker()
    while (request := inbox.get()) is not None:
        job_id, name, kwargs = request
        try:
            outbox.put(Outcome(value=getattr(jobs, name)(**kwargs), job_id=job_id))
        except Exception as err:  # reported to the test, which decides
            outbox.put(Outcome(error=f"{type(err).__name__}: {err}\n{traceback.format_exc()}", job_id=job_id))


def new_group_name() -> str:
    """Unique per formation, as the aggregator's group names are."""
    return f"test-formation-{next(_formations)}-{time.monotonic_ns()}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WorkerPool:
    def __init__(self, size: int) -> None:
        self._context = mp.get_context("forkserver")
        self._context.set_forkserver_preload([JOBS_MODULE])
        self.workers = [self._spawn() for _ in range(size)]

    def _spawn(self) -> Worker:
        inbox, outbox = self._context.Queue(), self._context.Queue()
        process = self._context.Process(target=worker_main, args=(inbox, outbox), daemon=True)
        process.start()
        return Worker(process, inbox, outbox)

    def run_gang(
        self,
        members: list[int],
        job: str,
        answer_within_s: float = 120.0,
        port: int | None = None,
        **kwargs: Any,
    ) -> list[Outcome]:
        """Run `job` on workers `members` as ranks 0..k-1 of a new gang; outcomes in rank order."""
        port = port or free_port()
        group = new_group_name()
        for rank, index in enumerate(members):
            self.submit(index, job, rank=rank, world=len(members), port=port, group_name=group, **kwargs)
        return self.collect(members, answer_within_s)

    def submit(self, index: int, job: str, **kwargs: Any) -> None:
        """Queue `job(**kwargs)` on worker `index` (a dead worker is replaced first)."""
        self._revive(index)
        worker = self.workers[index]
        worker.last_job_id = next(_job_ids)
        worker.inbox.put((worker.last_job_id, job, kwargs))

    def collect(self, members: list[int], answer_within_s: float = 120.0) -> list[Outcome]:
        """The next outcome of each of `members`, in order."""
        deadline = time.monotonic() + answer_within_s
        return [self._outcome(self.workers[index], deadline) for index in members]

    def _outcome(self, worker: Worker, deadline: float) -> Outcome:
        while time.monotonic() < deadline:
            try:
                outcome = worker.outbox.get(timeout=POLL_S)
                if outcome.job_id == worker.last_job_id:
                    return outcome
            except queue.Empty:
                if not worker.process.is_alive():
                    return Outcome(exitcode=worker.process.exitcode)
        raise TimeoutError(f"worker {worker.process.pid} did not answer in time")

    def _revive(self, index: int) -> None:
        """Replace a worker that died (a test killed it) with a fresh one."""
        if not self.workers[index].process.is_alive():
            self.workers[index].process.join()
            self.workers[index] = self._spawn()

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.is_alive():
                worker.inbox.put(None)
        for worker in self.workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
