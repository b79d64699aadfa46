"""The batched simulator follows exactly the trajectories of B single environments on the same seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_models.config import ArrivalPattern, ServerFaults, SimConfig, paper_config, warm_config
from policy_models.sim.batched import BatchedClusterSim
from policy_models.sim.env import ClusterEnv
from policy_models.suites import hard_suite

CONFIGS = {
    "paper-4": paper_config(4, 0.05),
    "paper-12": paper_config(12, 0.15),
    "paper-8-table-vi": paper_config(8, 0.1, profile_name="paper-table-vi"),
    "warm-8": warm_config(8, 0.1),
    "warm-4-one-slot": warm_config(4, 0.2, models_per_server=1),
    "paper-4-tick": paper_config(4, 0.05, tick_s=0.1, max_decisions=150),
    "warm-4-tick": warm_config(4, 0.3, tick_s=0.5, max_decisions=150),
    # The batched simulator's other paths: group-state tables with two models, group arrays past the
    # pairwise ranks (N > 16), reusable keys in a table instead of bits, episodes without initial tasks.
    "paper-4-two-models": paper_config(4, 0.1, n_models=2),
    "paper-32": paper_config(32, 0.4),
    "paper-8-seven-models": paper_config(8, 0.1, n_models=7),
    "paper-4-no-initial": paper_config(4, 0.05, initial_tasks=0),
    # The hard suite's clusters: servers with different memory, skewed model popularity, bursts.
    "warm-8-uneven-slots": warm_config(8, 0.15, models_per_server=3, server_slots=(1, 3, 2, 1, 3, 2, 1, 2)),
    "warm-6-zipf-bursty": warm_config(
        6,
        0.1,
        n_models=5,
        model_weights=(1.0, 0.5, 0.33, 0.25, 0.2),
        arrival_pattern=ArrivalPattern(ramp_s=60.0, ramp_from=0.3, burst_factor=4.0, burst_s=30.0, bursts=2),
    ),
    "hard-32": hard_suite().settings[-1],
    # Servers that go down and come back, and slow down, often: every path of the fault rules.
    "warm-8-faults": warm_config(8, 0.15, faults=ServerFaults(0.6, 40.0, 0.6, 80.0, 0.5, 200.0)),
    "warm-24-faults": warm_config(24, 0.4, faults=ServerFaults(0.5, 30.0, 0.5, 60.0, 0.25, 150.0)),
}


def assert_same_trajectories(cfg: SimConfig, seeds: list[int], n_steps: int, action_seed: int) -> int:
    """Steps both with the same random actions; returns how many episodes ended (and auto-reset)."""
    sim = BatchedClusterSim(cfg, seeds)
    batched_obs = sim.reset()
    envs = [ClusterEnv(cfg) for _ in seeds]
    single_obs = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
    rng = np.random.default_rng(action_seed)
    finished = 0
    for _ in range(n_steps):
        for key, value in batched_obs.items():
            np.testing.assert_allclose(value, np.stack([o[key] for o in single_obs]), atol=1e-6, err_msg=key)
        actions = rng.uniform(-1, 1, (len(seeds), cfg.action_dim))
        actions[:, 0] = np.where(rng.random(len(seeds)) < 0.7, 0.5, -0.5)
        result = sim.step(actions)
        batched_done = dict(result.finished)
        for j, env in enumerate(envs):
            obs, reward, terminated, truncated, info = env.step(actions[j])
            assert reward == pytest.approx(result.reward[j], rel=1e-12, abs=1e-12)
            assert (terminated, truncated) == (result.terminated[j], result.truncated[j])
            assert env.now == sim.now[j] or terminated or truncated
            if terminated or truncated:
                finished += 1
                expected, got = info["episode"].as_dict(), batched_done[j].as_dict()
                assert got == pytest.approx(expected, rel=1e-9)
                obs, _ = env.reset()
            single_obs[j] = obs
        batched_obs = result.obs
    return finished


@pytest.mark.parametrize("name", list(CONFIGS))
def test_batched_matches_single_environments(name: str) -> None:
    finished = assert_same_trajectories(CONFIGS[name], seeds=list(range(12)), n_steps=250, action_seed=7)
    assert finished > 0, "the comparison should cover episode ends and auto-resets"


@settings(max_examples=10, deadline=None)
@given(
    name=st.sampled_from(list(CONFIGS)),
    seeds=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=6),
    action_seed=st.integers(0, 1000),
)
def test_batched_matches_single_environments_on_drawn_seeds(
    name: str, seeds: list[int], action_seed: int
) -> None:
    assert_same_trajectories(CONFIGS[name], seeds, n_steps=120, action_seed=action_seed)


def test_each_environment_has_its_own_generator() -> None:
    """Env 0's episode does not depend on which other envs share the batch."""
    cfg = paper_config(4, 0.05)
    alone = BatchedClusterSim(cfg, [5]).reset()
    together = BatchedClusterSim(cfg, [5, 6, 7]).reset()
    for key in alone:
        np.testing.assert_array_equal(alone[key][0], together[key][0])


def test_invalid_actions_are_refused() -> None:
    cfg = paper_config(4, 0.05)
    sim = BatchedClusterSim(cfg, [0, 1])
    sim.reset()
    with pytest.raises(ValueError):
        sim.step(np.full((2, cfg.action_dim), np.nan))
    with pytest.raises(ValueError):
        sim.step(np.zeros((3, cfg.action_dim)))
