"""The SLO-aware earliest-deadline-first rule: who goes first, with how many steps, and its SLO counts."""

from __future__ import annotations

import numpy as np
import pytest

from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.evaluation import evaluate_policy
from policy_models.policies.base import TaskFeatures
from policy_models.policies.deadline import EarliestDeadlinePolicy
from policy_models.selector import decode_steps
from policy_models.sim.batched import BatchedClusterSim
from policy_models.slo import reference_steps, standalone_table

CONFIGS = {"paper-4": paper_config(4, 0.05), "paper-8": paper_config(8, 0.1), "warm-8": warm_config(8, 0.1)}


def observations(cfg: SimConfig, n: int = 40) -> list[dict[str, np.ndarray]]:
    """Observations along random trajectories of 4 seeds (varied queues, groups and waits)."""
    sim = BatchedClusterSim(cfg, [0, 1, 2, 3])
    obs = sim.reset()
    rng = np.random.default_rng(0)
    seen = [obs]
    for _ in range(n):
        obs = sim.step(rng.uniform(-1.0, 1.0, (4, cfg.action_dim))).obs
        seen.append(obs)
    return seen


def decode(cfg: SimConfig, action: np.ndarray) -> tuple[bool, int, int]:
    steps = decode_steps(float(action[1]), cfg.min_steps, cfg.max_steps)
    return bool(action[0] > 0), int(np.argmax(action[2:])), steps


@pytest.mark.parametrize("name", list(CONFIGS))
def test_with_no_slack_it_starts_the_oldest_feasible_task_at_the_reference_steps(name: str) -> None:
    cfg = CONFIGS[name]
    policy = EarliestDeadlinePolicy(cfg, scale=1e-9)
    for obs in observations(cfg):
        tasks = TaskFeatures(obs, cfg)
        for b, action in enumerate(policy.act(obs)):
            launch, slot, steps = decode(cfg, action)
            assert launch == tasks.feasible[b].any()
            if launch:
                assert tasks.feasible[b, slot]
                assert tasks.waiting_s[b, slot] == tasks.waiting_s[b][tasks.feasible[b]].max()
                assert steps == reference_steps(cfg)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_with_ample_slack_the_earliest_deadline_goes_first_at_the_most_steps(name: str) -> None:
    cfg = CONFIGS[name]
    scale = 1e6
    standalone = standalone_table(cfg)
    policy = EarliestDeadlinePolicy(cfg, scale=scale)
    for obs in observations(cfg):
        tasks = TaskFeatures(obs, cfg)
        time_left = scale * standalone[np.maximum(tasks.patches, 1)] - tasks.waiting_s
        for b, action in enumerate(policy.act(obs)):
            launch, slot, steps = decode(cfg, action)
            if launch:
                assert time_left[b, slot] == pytest.approx(time_left[b][tasks.feasible[b]].min())
                assert steps == cfg.max_steps


def test_it_meets_more_slos_than_fifo_at_max_steps() -> None:
    """Seeds 0-19, warm N=8: spending the slack rather than always the most steps meets more SLOs."""
    cfg = CONFIGS["warm-8"]
    seeds = tuple(range(20))
    edf, fifo = (evaluate_policy(name, cfg, seeds) for name in ("edf", "fifo"))
    assert edf.slo_at(1.5).mean > fifo.slo_at(1.5).mean
