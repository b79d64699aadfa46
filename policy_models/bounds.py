"""A hindsight floor on mean response time in paper mode: no policy, even one that knows every
arrival in advance, can respond faster on average while serving every task at a given mean quality.

Response = wait + init + run. The floor adds two parts, each a lower bound for every schedule:

* **run**: the least total run time over step counts whose mean quality reaches the floor
  (`run_floor`, a Lagrangian bound of that knapsack: valid for every multiplier, we keep the best).
* **wait + init** (`wait_init_floor`), from three facts of the paper-mode rules:
  1. Nothing is loaded at t=0, and a group of k servers exists only once a task that loaded it has
     finished, so task j pays at least `init[k_j] - arrival_j` in wait or init.
  2. Where a task may span the whole cluster (k = N), call tasks of size N class F and the rest
     class R. Right after an F task starts, its group covers every server, so the next task to start,
     if of class R, finds no group of its size and must load; right after an R task starts, no
     intact N-group exists, so the next F task must load. Hence, in start order, the first task after
     every change of class loads (and so does the very first task).
  3. Tasks start no earlier than they arrive.
  Everything else (server capacity, loads inside a class) is relaxed away, so a schedule is just an
  alternation of class phases: a task of the running class starts on arrival, one of the other class
  waits for the next switch, and one task per switch pays its init. The best such alternation is a
  small dynamic programme over switch times, which only need to be arrival times.

Capacity is ignored, so the floor is loose where queues build up (high rates, the t=0 batch); it is
tightest where arrivals are sparse and the cost is the reloads that alternating sizes force.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policy_models.config import SimConfig
from policy_models.profiles import profile_quality_table
from policy_models.workload import Workload, make_rng, sample_workload

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
    own_floor = np.maximum(init - arrival, 0.0)  # fact 1
    full = size == n_servers
    times = np.unique(arrival)
    if full.all() or not full.any():  # one class: every task may start on arrival, fact 1 remains
        return float(own_floor.sum())
    return _alternation_floor(arrival, full, init, own_floor, times)


def _alternation_floor(
    arrival: np.ndarray, full: np.ndarray, init: np.ndarray, own_floor: np.ndarray, times: np.ndarray
) -> float:
    """The dynamic programme over class phases (fact 2). best[e, c]: least cost of every task of class
    c arrived by times[e] and of class 1-c arrived by the previous switch, given a switch into class c
    at times[e] (the first phase has no previous switch: all earlier tasks of the other class wait)."""
    n_times = len(times)
    cls = full.astype(int)  # 1 = F (whole cluster), 0 = R
    at = np.searchsorted(times, arrival)  # index of each task's arrival time

    def switch_cost(c: int, after: int, e: int) -> float:
        """Tasks of class c arrived in (times[after], times[e]] (all up to times[e] if after < 0) start
        at times[e]; the cheapest of them to load pays its init (inf if there are none)."""
        pick = (cls == c) & (at <= e) & (at > after)
        if not pick.any():
            return np.inf
        wait = times[e] - arrival[pick]
        floor = own_floor[pick]
        base = np.maximum(floor, wait)
        extra = np.maximum(floor, wait + init[pick]) - base
        return float(base.sum() + extra.min())

    def immediate_cost(c: int, after: int, until: int) -> float:
        """Tasks of class c arriving in (times[after], times[until]] start on arrival."""
        pick = (cls == c) & (at > after) & (at <= until)
        return float(own_floor[pick].sum())

    last = n_times - 1
    # best[e, c, f]: f = 1 when the phase switched into at times[e] is the first one.
    best = np.full((n_times, 2, 2), np.inf)
    for e in range(n_times):
        for c in (0, 1):
            best[e, c, 1] = switch_cost(c, -1, e)
        for c in (0, 1):
            for b in range(e + 1):
                # Two switches at one instant only help after the first phase (the t=0 batch holds both
                # classes): later, the class switched back into has no task waiting yet.
                for was_first in (0, 1) if b < e else (1,):
                    prev = best[b, 1 - c, was_first]
                    if not np.isfinite(prev):
                        continue
                    # The previous phase ran class 1-c from times[b]: its own arrivals started at once;
                    # ours waited since the switch before it (since the start, if it was the first).
                    since = -1 if was_first else b
                    cost = prev + immediate_cost(1 - c, b, e) + switch_cost(c, since, e)
                    best[e, c, 0] = min(best[e, c, 0], cost)
    # The last phase leaves no task of the other class waiting; its own later arrivals start at once.
    finals = [np.inf]
    for e in range(n_times):
        for c in (0, 1):
            for was_first in (0, 1):
                waiting_since = -1 if was_first else e
                if np.isfinite(best[e, c, was_first]) and not ((cls != c) & (at > waiting_since)).any():
                    finals.append(best[e, c, was_first] + immediate_cost(c, e, last))
    return float(min(finals))


def episode_floor(workload: Workload, cfg: SimConfig, quality_floor: float) -> ResponseFloor:
    """The floor for the first row of `workload` in paper mode."""
    if cfg.mode != "paper":
        raise ValueError("the response floor follows the paper-mode reload rule")
    arrival, patches = workload.arrival_s[0], workload.patches[0]
    return ResponseFloor(
        tasks=len(arrival),
        wait_init_s=wait_init_floor(arrival, patches, cfg.n_servers, cfg.profile.init_s),
        run_s=_run_floor(cfg, patches, quality_floor),
    )


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
