"""Offloading policies behind one interface: `solve(instance) -> Assignment` (splits included), and
`solve_many` for instances of one size at once.

- drl-convex: the trained scorer places users one at a time; the exact split solver sets every split.
- pure-drl: the trained scorer places users and picks each new batch's split from a fixed set; no
  solver.
- all-edge: every request runs all T steps on an edge server with the user's own adapter, so no
  cross-user batching (batches of one) and accuracy a(0); users, latency weight first, go to the
  server that would finish them earliest.
- all-local: every request runs on its device (s = 0).
- fixed-third: split round(T/3) for everyone; users, latency weight first, are packed into batches of
  max_batch, each batch sent to the server that would finish it earliest.
- greedy: each user in turn takes the placement best for its own utility given those placed before
  (splits re-solved after each placement), ignoring the delay it imposes on others.
- greedy-social: each user in turn takes the placement that raises the total utility most.
- optimal: the exact optimum (small instances only, see `optimal`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from policy_models.offload.env import Candidates, OffloadEnvs, SplitMode, placement_order
from policy_models.offload.model import Assignment, Batch, Instance
from policy_models.offload.net import WEIGHTS_DIR, NumpyScorer, load_numpy_scorer
from policy_models.offload.optimal import optimal_assignment

Chooser = Callable[[Candidates], np.ndarray]  # candidate index per instance


class OffloadPolicy:
    """Decides a whole round: who runs locally, each server's batches in order, and their splits."""

    name = "policy"

    def solve(self, instance: Instance) -> Assignment:
        return self.solve_many([instance])[0]

    def solve_many(self, instances: Sequence[Instance]) -> list[Assignment]:
        return [self.solve(inst) for inst in instances]


def run_sequential(
    instances: Sequence[Instance], choose: Chooser, mode: SplitMode = "convex"
) -> list[Assignment]:
    """Place every user of instances of one size with `choose`."""
    envs = OffloadEnvs(instances, mode)
    while not envs.done:
        envs.step(choose(envs.observe()))
    return envs.assignments()


def best_valid(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.argmax(np.where(valid, scores, -np.inf), axis=1)


class SequentialPolicy(OffloadPolicy):
    """A rule applied to the candidates of the placement process (env.OffloadEnvs)."""

    mode: SplitMode = "convex"

    def choose(self, candidates: Candidates) -> np.ndarray:
        raise NotImplementedError

    def solve(self, instance: Instance) -> Assignment:
        return run_sequential([instance], self.choose, self.mode)[0]

    def solve_many(self, instances: Sequence[Instance]) -> list[Assignment]:
        return run_sequential(instances, self.choose, self.mode) if instances else []


class GreedySelfish(SequentialPolicy):
    name = "greedy"

    def choose(self, candidates: Candidates) -> np.ndarray:
        return best_valid(candidates.own, candidates.valid)


class GreedySocial(SequentialPolicy):
    name = "greedy-social"

    def choose(self, candidates: Candidates) -> np.ndarray:
        return best_valid(candidates.delta, candidates.valid)


class NetworkPolicy(SequentialPolicy):
    """The trained scorer, argmax over valid candidates."""

    def __init__(self, name: str, scorer: NumpyScorer, mode: SplitMode) -> None:
        self.name, self.scorer, self.mode = name, scorer, mode

    def choose(self, candidates: Candidates) -> np.ndarray:
        return np.argmax(self.scorer(candidates.features, candidates.valid), axis=1)

    @classmethod
    def load(cls, name: str, weights_dir: Path = WEIGHTS_DIR) -> NetworkPolicy:
        scorer, config = load_numpy_scorer(weights_dir / name)
        return cls(name, scorer, config.mode)  # type: ignore[arg-type]


def _earliest(busy: np.ndarray, seconds: np.ndarray) -> int:
    """The server that would finish a job of `seconds` (per server) first; ties to the lowest index."""
    return int(np.argmin(busy + seconds))


class AllLocal(OffloadPolicy):
    name = "all-local"

    def solve(self, instance: Instance) -> Assignment:
        return Assignment(tuple(range(instance.n_users)), tuple(() for _ in range(instance.n_servers)))


class AllEdge(OffloadPolicy):
    name = "all-edge"

    def solve(self, instance: Instance) -> Assignment:
        steps = instance.steps
        busy = np.zeros(instance.n_servers)
        servers: list[list[Batch]] = [[] for _ in range(instance.n_servers)]
        seconds = steps * instance.step_times()[:, 1] + instance.adapter_times()
        for user in placement_order(instance.latency_weight):
            k = _earliest(busy, seconds)
            busy[k] += seconds[k]
            servers[k].append(Batch((int(user),), steps))
        return Assignment((), tuple(tuple(s) for s in servers))


class FixedThird(OffloadPolicy):
    name = "fixed-third"

    def solve(self, instance: Instance) -> Assignment:
        split = max(1, round(instance.steps / 3))
        order = placement_order(instance.latency_weight)
        busy = np.zeros(instance.n_servers)
        servers: list[list[Batch]] = [[] for _ in range(instance.n_servers)]
        for start in range(0, instance.n_users, instance.max_batch):
            members = tuple(int(u) for u in order[start : start + instance.max_batch])
            seconds = split * instance.step_times()[:, len(members)]
            k = _earliest(busy, seconds)
            busy[k] += seconds[k]
            servers[k].append(Batch(members, split))
        return Assignment((), tuple(tuple(s) for s in servers))


class Optimal(OffloadPolicy):
    name = "optimal"

    def solve(self, instance: Instance) -> Assignment:
        return optimal_assignment(instance)


BASELINES: dict[str, type[OffloadPolicy]] = {
    "all-edge": AllEdge,
    "all-local": AllLocal,
    "fixed-third": FixedThird,
    "greedy": GreedySelfish,
    "greedy-social": GreedySocial,
    "optimal": Optimal,
}
NETWORK_POLICIES = ("drl-convex", "pure-drl")
POLICY_NAMES = (*NETWORK_POLICIES, *BASELINES)
FIXED_SPLIT_POLICIES = ("all-local", "all-edge", "fixed-third")  # one split for everyone: 0, T, T/3


def make_policy(name: str, weights_dir: Path = WEIGHTS_DIR) -> OffloadPolicy:
    """A policy by name; the network policies load their shipped weights."""
    if name in NETWORK_POLICIES:
        return NetworkPolicy.load(name, weights_dir)
    if name not in BASELINES:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")
    return BASELINES[name]()
