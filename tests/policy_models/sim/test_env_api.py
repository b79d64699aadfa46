"""The single environment follows the gymnasium API and is seeded per environment."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from policy_models.config import ServerFaults, SimConfig, paper_config, warm_config
from policy_models.obs import T_IDX
from policy_models.sim.env import ClusterEnv
from policy_models.suites import hard_suite


@pytest.mark.parametrize(
    "cfg",
    [
        paper_config(4, 0.05),
        paper_config(12, 0.15),
        warm_config(8, 0.1),
        paper_config(4, 0.05, tick_s=0.1),
        hard_suite().settings[0],
    ],
    ids=["paper-4", "paper-12", "warm-8", "paper-4-tick", "hard-8"],
)
def test_passes_gymnasium_env_checker(cfg: SimConfig) -> None:
    check_env(ClusterEnv(cfg), skip_render_check=True)


def test_same_seed_same_episode_and_different_seed_differs() -> None:
    cfg = paper_config(4, 0.05)

    def rollout(seed: int) -> list[float]:
        env = ClusterEnv(cfg)
        env.reset(seed=seed)
        rewards, action = [], np.ones(cfg.action_dim)
        for _ in range(20):
            _, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            if terminated or truncated:
                break
        return rewards

    assert rollout(1) == rollout(1)
    assert rollout(1) != rollout(2)


def test_step_after_episode_end_is_refused() -> None:
    cfg = paper_config(4, 0.5)
    env = ClusterEnv(cfg)
    env.reset(seed=0)
    while True:
        *_, terminated, truncated, _ = env.step(np.ones(cfg.action_dim))
        if terminated or truncated:
            break
    with pytest.raises(RuntimeError):
        env.step(np.ones(cfg.action_dim))


def test_non_finite_action_is_refused() -> None:
    cfg = paper_config(4, 0.05)
    env = ClusterEnv(cfg)
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.full(cfg.action_dim, np.inf))


def test_execute_flag_of_exactly_minus_one_waits() -> None:
    cfg = paper_config(4, 0.05)
    env = ClusterEnv(cfg)
    env.reset(seed=0)
    action = np.ones(cfg.action_dim)
    action[0] = -1.0
    _, reward, _, _, info = env.step(action)
    assert not info["launched"] and reward == 0.0


def test_steps_reach_both_ends_of_the_range() -> None:
    cfg = paper_config(4, 0.05)
    env = ClusterEnv(cfg)
    env.reset(seed=0)
    seen = []
    for value in (-1.0, 1.0):
        action = np.ones(cfg.action_dim)
        action[1] = value
        seen.append(env.step(action)[4]["steps"])
    assert seen == [cfg.min_steps, cfg.max_steps]


def test_observation_carries_time_and_waiting_times() -> None:
    cfg = paper_config(4, 0.05)
    env = ClusterEnv(cfg)
    obs, _ = env.reset(seed=0)
    wait_action = -np.ones(cfg.action_dim)
    obs, *_ = env.step(wait_action)
    assert obs["globals"][0] > 0  # time
    assert obs["tasks"][0, 1] > 0  # the oldest task has waited


def test_observations_stay_in_the_space_with_deadlines_and_faults() -> None:
    """Slack goes negative once a deadline passes; a down server shows as busy: all inside the space."""
    cfg = dataclasses.replace(hard_suite().settings[0], faults=ServerFaults(0.5, 40.0, 0.5, 80.0, 0.5, 200.0))
    env = ClusterEnv(cfg)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    negative = False
    for _ in range(300):
        action = rng.uniform(-1.0, 1.0, cfg.action_dim)
        action[0] = -1.0 if rng.random() < 0.5 else 1.0
        obs, _, terminated, truncated, _ = env.step(action)
        assert env.observation_space.contains(obs)
        negative |= bool((obs["tasks"][:, T_IDX["slack"]] < 0).any())
        if terminated or truncated:
            obs, _ = env.reset()
    assert negative
