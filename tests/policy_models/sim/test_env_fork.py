"""`ClusterEnv.fork`: an independent copy for lookahead, with the real or a redrawn future."""

from __future__ import annotations

import numpy as np
import pytest

from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.obs import batch_of_one
from policy_models.policies.heuristics import ReuseAwarePolicy
from policy_models.sim.env import ClusterEnv

CONFIGS = [paper_config(4, 0.07), paper_config(8, 0.1), warm_config(8, 0.1)]


def run_to_end(env: ClusterEnv, obs: dict[str, np.ndarray], policy: ReuseAwarePolicy) -> list[float]:
    rewards, done = [], False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.act(batch_of_one(obs))[0])
        rewards.append(reward)
        done = terminated or truncated
    return rewards


def midway(cfg: SimConfig, decisions: int = 6) -> tuple[ClusterEnv, dict[str, np.ndarray], ReuseAwarePolicy]:
    env, policy = ClusterEnv(cfg), ReuseAwarePolicy(cfg)
    obs, _ = env.reset(seed=3)
    for _ in range(decisions):
        obs, *_ = env.step(policy.act(batch_of_one(obs))[0])
    return env, obs, policy


@pytest.mark.parametrize("cfg", CONFIGS, ids=["paper-4", "paper-8", "warm-8"])
def test_a_fork_with_the_real_future_follows_the_original_and_leaves_it_alone(cfg: SimConfig) -> None:
    env, obs, policy = midway(cfg)
    twin = env.fork()
    twin_rewards = run_to_end(twin, obs, policy)
    assert env.now < twin.now  # the fork moved on, the original did not
    assert run_to_end(env, obs, policy) == twin_rewards
    assert env.episode_stats() == twin.episode_stats()


@pytest.mark.parametrize("cfg", CONFIGS, ids=["paper-4", "paper-8", "warm-8"])
def test_a_redrawn_future_keeps_the_arrived_tasks_and_draws_later_arrivals(cfg: SimConfig) -> None:
    env, _, _ = midway(cfg)
    twin = env.fork(np.random.default_rng(0))
    arrived = env._arrived
    assert twin._arrival[:arrived] == env._arrival[:arrived]
    assert twin._patches[:arrived] == env._patches[:arrived]
    assert twin._arrival[arrived:] != env._arrival[arrived:]
    assert all(t >= env.now for t in twin._arrival[arrived:])
    assert twin._arrival[arrived:] == sorted(twin._arrival[arrived:])
    assert set(twin._patches[arrived:]) <= set(cfg.patch_choices)
    assert all(1 <= m <= cfg.n_models for m in twin._model[arrived:])
    # The same generator seed draws the same future; the observation now is the same either way.
    again = env.fork(np.random.default_rng(0))
    assert again._arrival == twin._arrival and again._patches == twin._patches
    for key, value in env._observation().items():
        np.testing.assert_array_equal(value, twin._observation()[key])
