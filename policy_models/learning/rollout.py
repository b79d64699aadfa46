"""A rollout teacher: one step of policy improvement over a heuristic, by simulated lookahead.

Rollout (Bertsekas, "Rollout, Policy Iteration, and Distributed Reinforcement Learning", 2020): at a
decision, try a few candidate actions (the base policy's own, waiting, the base task with fewer or
more steps, each other feasible task); follow each with the base policy to the end of the episode in
`samples` simulated futures (the tasks that have not arrived yet are redrawn: `ClusterEnv.fork`), and
take the candidate whose return beats the base action's by more than `z` standard errors of the paired
difference. Every candidate sees the same futures, so most of the future's noise cancels in the
difference; the z test keeps the noise that is left from passing for an improvement (with a dozen
candidates, the best of a dozen noisy estimates is biased upwards).

The teacher improves on the base policy in expectation but costs hundreds of simulated episodes per
decision, far too slow to serve. `demonstrate` records its decisions as transitions that the EAT actor
learns from (`eat label`, then `eat train --demos`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from policy_models.config import SimConfig
from policy_models.obs import Observation, batch_of_one, stack
from policy_models.policies import Policy
from policy_models.policies.base import TaskFeatures
from policy_models.selector import decode_steps
from policy_models.sim.env import ClusterEnv


@dataclass(frozen=True)
class RolloutSettings:
    """How the teacher searches: futures per candidate, the evidence a deviation needs, step changes."""

    samples: int = 16
    z: float = 3.0
    step_deltas: tuple[int, ...] = (-4, 4)
    # False: only the base decision's step count is searched (no waiting instead, no other task), so
    # that more futures per candidate buy a steadier verdict for the same simulation cost.
    task_changes: bool = True

    def __post_init__(self) -> None:
        if self.samples < 2 or self.z < 0:
            raise ValueError("need samples >= 2 (a standard error) and z >= 0")

    def to_dict(self) -> dict[str, object]:
        """As JSON holds it (the step deltas as a list)."""
        return {**asdict(self), "step_deltas": list(self.step_deltas)}


@dataclass(frozen=True)
class Decision:
    """The teacher's choice at one state: its action, the base policy's, and the evidence."""

    action: np.ndarray  # (A,) in [-1, 1]
    base_action: np.ndarray
    gain: float  # mean return over the base action's, 0 when the base action is kept
    candidates: int


def candidate_actions(
    base_action: np.ndarray,
    obs: Observation,
    cfg: SimConfig,
    deltas: tuple[int, ...],
    task_changes: bool = True,
) -> np.ndarray:
    """(C, A) distinct alternatives, the base action first: wait (or launch, if the base waits), the
    base task with its steps moved by each of `deltas`, and each other feasible task at the base steps."""
    feasible = np.flatnonzero(TaskFeatures(batch_of_one(obs), cfg).feasible[0])
    if feasible.size == 0:
        return base_action[None].copy()
    launches = base_action[0] > 0.0
    scores = base_action[2:]
    base_slot = int(feasible[np.argmax(scores[feasible])])
    step_unit = 2.0 / max(cfg.max_steps - cfg.min_steps, 1)
    out = [base_action]
    if launches and task_changes:
        out.append(_with(base_action, execute=-1.0))
    for slot in feasible if task_changes else [base_slot] * int(launches):
        moves = deltas if (slot == base_slot and launches) else (0,)
        for delta in moves:
            steps = float(np.clip(base_action[1] + delta * step_unit, -1.0, 1.0))
            out.append(_launch(base_action, int(slot), steps))
    return _distinct(np.stack(out), cfg)


def _with(action: np.ndarray, execute: float) -> np.ndarray:
    changed = action.copy()
    changed[0] = execute
    return changed


def _launch(action: np.ndarray, slot: int, steps: float) -> np.ndarray:
    launch = np.full_like(action, -1.0)
    launch[0], launch[1], launch[2 + slot] = 1.0, steps, 1.0
    return launch


def _distinct(actions: np.ndarray, cfg: SimConfig) -> np.ndarray:
    """Drop candidates that decode to the same decision as an earlier one (the base stays first)."""
    seen: set[tuple[int, int, int]] = set()
    keep = []
    for row, action in enumerate(actions):
        launches = action[0] > 0.0
        key = (
            int(launches),
            int(np.argmax(action[2:])) if launches else -1,
            decode_steps(float(action[1]), cfg.min_steps, cfg.max_steps) if launches else -1,
        )
        if key not in seen:
            seen.add(key)
            keep.append(row)
    return actions[keep]


def rollout_returns(
    env: ClusterEnv, candidates: np.ndarray, base: Policy, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """(C, samples) return from this state to the episode's end: candidate c first, then `base`, in
    future s (the same s for every candidate). All C * samples forks are stepped in lockstep so that the
    base policy acts on one batch per step."""
    futures = rng.integers(0, 2**63 - 1, size=samples)
    forks = [env.fork(np.random.default_rng(int(f))) for _ in candidates for f in futures]
    returns = np.zeros(len(forks))
    live: list[int] = []
    pending: list[Observation] = []
    for index, fork in enumerate(forks):
        obs, reward, terminated, truncated, _ = fork.step(candidates[index // samples])
        returns[index] += reward
        if not (terminated or truncated):
            live.append(index)
            pending.append(obs)
    while live:
        actions = base.act(stack(pending))
        still, observations = [], []
        for index, action in zip(live, actions, strict=True):
            obs, reward, terminated, truncated, _ = forks[index].step(action)
            returns[index] += reward
            if not (terminated or truncated):
                still.append(index)
                observations.append(obs)
        live, pending = still, observations
    return returns.reshape(len(candidates), samples)


def decide(
    env: ClusterEnv, obs: Observation, base: Policy, settings: RolloutSettings, rng: np.random.Generator
) -> Decision:
    """The teacher's action at the env's current state (`obs` is its observation)."""
    base_action = np.clip(base.act(batch_of_one(obs))[0], -1.0, 1.0)
    candidates = candidate_actions(base_action, obs, env.cfg, settings.step_deltas, settings.task_changes)
    if len(candidates) == 1:
        return Decision(base_action, base_action, 0.0, 1)
    returns = rollout_returns(env, candidates, base, settings.samples, rng)
    gain = returns - returns[0]
    mean = gain.mean(1)
    stderr = gain.std(1, ddof=1) / np.sqrt(settings.samples)
    significant = (mean > settings.z * stderr) & (mean > 0.0)
    if not significant.any():
        return Decision(base_action, base_action, 0.0, len(candidates))
    best = int(np.argmax(np.where(significant, mean, -np.inf)))
    return Decision(candidates[best], base_action, float(mean[best]), len(candidates))
