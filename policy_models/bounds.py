"""A hindsight floor on mean response time in paper mode: no policy, even one that knows every
arrival in advance, can respond faster on average while serving every task at a given mean quality.

Response = wait + init + run. The floor adds two parts, each a lower bound for every schedule:

* **run**: the least total run time over step counts whose mean quality reaches the floor
  (`run_floor`, a Lagrangian bound of that knapsack: valid for every multiplier, we keep the best).
* **wait + init** (`wait_init_floor`), from the paper-mode reload rule. Where a task may span the
  whole cluster (k = N), call tasks of size N class F and the rest class R. Right after an F task
  starts, its group covers every server, so no R group is left; right after an R task starts, no
  intact N-group is left. So in start order the tasks form phases of one class, and:
  1. when a phase starts (at its first task's start sigma; the first phase included, as nothing is
     loaded at t=0), no group of its class exists: each task of the phase either loads (init[k]) or
     reuses a group a task of this phase loaded, which it can do only from sigma + init[k] on. A task
     that arrived by sigma therefore pays at least (sigma - arrival) + init[k]; one arriving later,
     at least sigma + init[k] - arrival, if that is positive;
  2. a phase lasts at least the init of its class (its first task loads, and the next phase needs
     the servers it holds), so the next phase starts no earlier than its start plus that init;
  3. tasks start no earlier than they arrive.
  Server capacity inside a phase is relaxed away. The least cost over all alternations of phases is
  a small dynamic programme over phase starts, which can be taken at arrival times (moving a start
  back to the latest arrival before it helps every task).

Capacity inside a phase is ignored, so the floor is loose where queues of one class build up (high
rates); it is tight where arrivals are sparse and the cost is the reloads that alternating sizes force.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policy_models.config import SimConfig
from policy_models.profiles import profile_quality_table
from policy_models.workload import make_rng, sample_workload

# Multipliers tried for the run-time bound (seconds per unit of quality); each gives a valid bound.
_MULTIPLIERS = np.concatenate([[0.0], np.geomspace(1e-2, 1e5, 4000)])


@dataclass(frozen=True)
class ResponseFloor:
    """One episode's floor on the sums, and on the mean over its tasks."""

    tasks: int
    wait_init_s: float
    run_s: float

    @property
    def mean_response_s(self) -> float:
        return (self.wait_init_s + self.run_s) / self.tasks


def run_floor(
    patches: np.ndarray,
    step_s: dict[int, float],
    quality: np.ndarray,
    quality_floor: float,
    min_steps: int = 1,
) -> float:
    """Least total run time (s) of tasks of these sizes whose mean quality is at least `quality_floor`:
    max over multipliers mu >= 0 of sum_j min_s (run_j(s) - mu q(s)) + mu * floor * T (weak duality).
    `quality[s]` is the quality at s steps; raises when the floor is above the best quality."""
    steps = np.arange(min_steps, len(quality))
    q = np.asarray(quality, dtype=np.float64)[steps]
    if quality_floor > q.max() + 1e-12:
        raise ValueError(f"quality floor {quality_floor} is above the best quality {q.max():.3f}")
    sizes, counts = np.unique(np.asarray(patches), return_counts=True)
    total = np.zeros_like(_MULTIPLIERS)
    for k, count in zip(sizes, counts, strict=True):
        lagrangian = step_s[int(k)] * steps[None, :] - _MULTIPLIERS[:, None] * q[None, :]
        total += count * lagrangian.min(axis=1)
    total += _MULTIPLIERS * quality_floor * len(patches)
    return float(max(total.max(), 0.0))


def wait_init_floor(
    arrival_s: np.ndarray, patches: np.ndarray, n_servers: int, init_s: dict[int, float]
) -> float:
    """Least total wait + init of the tasks (one episode, any order) under facts 1-3 of the module doc."""
    order = np.argsort(arrival_s, kind="stable")
    arrival = np.asarray(arrival_s, dtype=np.float64)[order]
    size = np.asarray(patches)[order]
    init = np.array([init_s[int(k)] for k in size])
    return _PhaseProgramme(arrival, (size == n_servers).astype(int), init).least_cost()


class _PhaseProgramme:
    """The dynamic programme over phases. A phase of class c switched into at times[e] after one
    switched into at times[b] starts at sigma >= max(times[e], times[b] + the least init of class
    1-c) (fact 2; times[b] stands for that phase's own start, which is no earlier). A task of class c
    arrived since the phase before (or at all, before the first phase of its class) waits for it; one
    arriving while its class runs joins it (fact 1 both). The last phase must leave no task waiting.

    best[e, c, f]: least cost of the tasks settled by a switch into class c at times[e], f = 1 when
    it is the first phase. A phase with no task waiting is allowed: its first task is then one that
    the programme let start in an earlier phase of its class, whose true cost exceeds what it was
    charged there by at least the time since the last switch (capped at the two classes' inits)."""

    def __init__(self, arrival: np.ndarray, cls: np.ndarray, init: np.ndarray) -> None:
        self.arrival, self.cls, self.init = arrival, cls, init
        self.times = np.unique(arrival)
        self.at = np.searchsorted(self.times, arrival)  # each task's arrival time index
        present = [init[cls == c] for c in (0, 1)]
        self.least_init = [float(p.min()) if p.size else np.inf for p in present]

    def joining(self, c: int, after: int, until: int) -> float:
        """Tasks of class c arriving in (times[after], times[until]] while a phase of c that started
        at times[after] runs."""
        pick = (self.cls == c) & (self.at > after) & (self.at <= until)
        late = self.times[after] + self.init[pick] - self.arrival[pick]
        return float(np.maximum(late, 0.0).sum())

    def switch(self, c: int, since: int, e: int, start: float, previous: int) -> float:
        """Tasks of class c arrived in (times[since], times[e]] (all by times[e] if since < 0) wait
        for a phase starting at `start` (>= times[e]); `previous` is the last switch (-1: none)."""
        pick = (self.cls == c) & (self.at <= e) & (self.at > since)
        if pick.any():
            return float((start - self.arrival[pick] + self.init[pick]).sum())
        if previous < 0 or not ((self.cls == c) & (self.at <= previous)).any():
            return np.inf  # no task of class c could be this phase's first
        return min(start - self.times[previous], self.least_init[0] + self.least_init[1])

    def least_cost(self) -> float:
        n, last = len(self.times), len(self.times) - 1
        best = np.full((n, 2, 2), np.inf)
        for e in range(n):
            for c in (0, 1):
                best[e, c, 1] = self.switch(c, -1, e, float(self.times[e]), -1)
            for c in (0, 1):
                start = [max(self.times[e], self.times[b] + self.least_init[1 - c]) for b in range(e + 1)]
                for b in range(e + 1):
                    # Two switches at one instant only help after the first phase (the t=0 batch holds
                    # both classes); later, the class switched back into has no task waiting yet.
                    for was_first in (0, 1) if b < e else (1,):
                        prev = best[b, 1 - c, was_first]
                        if not np.isfinite(prev):
                            continue
                        since = -1 if was_first else b
                        cost = prev + self.joining(1 - c, b, e) + self.switch(c, since, e, start[b], b)
                        best[e, c, 0] = min(best[e, c, 0], cost)
        finals = [np.inf]
        for e in range(n):
            for c in (0, 1):
                for was_first in (0, 1):
                    waiting_since = -1 if was_first else e
                    if (
                        np.isfinite(best[e, c, was_first])
                        and not ((self.cls != c) & (self.at > waiting_since)).any()
                    ):
                        finals.append(best[e, c, was_first] + self.joining(c, e, last))
        return float(min(finals))


def seed_floor(cfg: SimConfig, seed: int, quality_floor: float) -> ResponseFloor:
    """The floor for the first episode an environment seeded with `seed` plays."""
    wait_init, patches = _seed_wait_init(cfg, seed)
    return ResponseFloor(
        tasks=len(patches), wait_init_s=wait_init, run_s=_run_floor(cfg, patches, quality_floor)
    )


@functools.lru_cache(maxsize=8192)
def _seed_wait_init(cfg: SimConfig, seed: int) -> tuple[float, tuple[int, ...]]:
    """The dynamic programme's part, which does not depend on the quality (evaluations ask for the
    same workload at each policy's quality)."""
    if cfg.mode != "paper":
        raise ValueError("the response floor follows the paper-mode reload rule")
    workload = sample_workload(make_rng(seed), cfg)
    arrival, patches = workload.arrival_s[0], workload.patches[0]
    wait_init = wait_init_floor(arrival, patches, cfg.n_servers, cfg.profile.init_s)
    return wait_init, tuple(int(k) for k in patches)


def _run_floor(cfg: SimConfig, patches: Sequence[int], quality_floor: float) -> float:
    speed = max(cfg.speeds)
    step_s = {k: s / speed for k, s in cfg.profile.step_s.items()}
    quality = profile_quality_table(cfg.profile_name, cfg.max_steps)
    return run_floor(np.asarray(patches), step_s, quality, quality_floor, cfg.min_steps)


def setting_floors(cfg: SimConfig, seeds: Sequence[int], quality_floor: float) -> list[ResponseFloor]:
    """The floor of each seed's first episode in one setting."""
    return [seed_floor(cfg, seed, quality_floor) for seed in seeds]
