"""The simulators' fast observations equal the plain definitions, bit for bit, along trajectories.

The batched simulator builds its observation from token tables; `encode(raw_view())` is the plain
route. The single environment does the same; `encode_one(view())` is its plain route (the one the
live aggregator takes). Every step of random trajectories must give identical arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

from policy_models.config import ServerFaults, SimConfig, paper_config, warm_config
from policy_models.obs import Observation
from policy_models.sim.batched import BatchedClusterSim
from policy_models.sim.env import ClusterEnv
from policy_models.suites import hard_suite

CONFIGS = {
    "paper-4": paper_config(4, 0.05),  # group state stepped by tables
    "paper-4-two-models": paper_config(4, 0.1, n_models=2),
    "paper-12": paper_config(12, 0.15),  # group state as arrays
    "paper-8-seven-models": paper_config(8, 0.1, n_models=7),  # reusable keys in a table, not bits
    "paper-4-tick": paper_config(4, 0.05, tick_s=0.1, max_decisions=150),
    "paper-4-no-initial": paper_config(4, 0.05, initial_tasks=0),
    "warm-8": warm_config(8, 0.1),
    "warm-4-one-slot": warm_config(4, 0.2, models_per_server=1),
    # Servers with different memory: the slots enter each server's token row.
    "hard-8": hard_suite().settings[1],
    "hard-16": hard_suite().settings[4],
    # Slowed-down servers show their slowed class's row; servers that are down show as busy.
    "warm-8-faults": warm_config(8, 0.15, faults=ServerFaults(0.6, 40.0, 0.6, 80.0, 0.5, 200.0)),
}


def random_actions(rng: np.random.Generator, cfg: SimConfig, n: int) -> np.ndarray:
    actions = rng.uniform(-1.2, 1.2, (n, cfg.action_dim))  # some out of range: clipping matters
    actions[:, 0] = np.where(rng.random(n) < 0.6, 0.5, -0.5)
    return actions


def assert_identical(got: Observation, expected: Observation) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_batched_observation_is_encode_of_the_raw_view(name: str) -> None:
    cfg = CONFIGS[name]
    sim = BatchedClusterSim(cfg, list(range(16)))
    obs = sim.reset()
    rng = np.random.default_rng(3)
    finished = 0
    for _ in range(200):
        assert_identical(obs, sim.reference_observation())
        result = sim.step(random_actions(rng, cfg, sim.batch))
        finished += result.finished_envs.size
        obs = result.obs
    assert finished > 0, "the check should cover resets"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_single_observation_is_encode_one_of_the_view(name: str) -> None:
    cfg = CONFIGS[name]
    env = ClusterEnv(cfg)
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(4)
    for action in random_actions(rng, cfg, 600):
        assert_identical(obs, env.reference_observation())
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()


def test_observations_are_fresh_arrays() -> None:
    """Callers keep observations (replay buffers): a later step must not change an earlier one."""
    cfg = paper_config(4, 0.05)
    sim = BatchedClusterSim(cfg, [0, 1, 2])
    first = sim.reset()
    kept = {key: value.copy() for key, value in first.items()}
    env = ClusterEnv(cfg)
    single, _ = env.reset(seed=0)
    kept_single = {key: value.copy() for key, value in single.items()}
    rng = np.random.default_rng(0)
    for action in random_actions(rng, cfg, 20):
        sim.step(np.tile(action, (3, 1)))
        env.step(action)
    assert_identical(first, kept)
    assert_identical(single, kept_single)
