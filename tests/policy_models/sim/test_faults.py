"""Servers that go down and come back, and slow down (ServerFaults), in the single environment; the
batched simulator is held to it by test_batched_equivalence and test_observation_paths."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from policy_models.config import ServerFaults, warm_config
from policy_models.obs import S_IDX
from policy_models.sim.env import ClusterEnv

FAULTS = ServerFaults(
    down_share=0.5, down_s=40.0, slow_share=0.5, slow_s=80.0, slow_factor=0.5, window_s=200.0
)
CFG = warm_config(8, 0.15, faults=FAULTS)


def walk(seed: int, steps: int = 400) -> Iterator[tuple[float, ClusterEnv, dict[str, Any]]]:
    """(time, env, record) along a random trajectory: each decision's observation at its time, and each
    launch's info at the time it started."""
    env = ClusterEnv(CFG)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield env.now, env, obs
        obs, _, terminated, truncated, info = env.step(rng.uniform(-1.0, 1.0, CFG.action_dim))
        if info["launched"]:
            yield info["start_s"], env, info
        if terminated or truncated:
            return


def windows(env: ClusterEnv, now: float, starts: list[float], ends: list[float]) -> list[bool]:
    return [start <= now < end for start, end in zip(starts, ends, strict=True)]


def test_a_down_server_is_never_idle_nor_given_a_task_and_comes_back() -> None:
    seen_down = seen_back = 0
    for seed in range(4):
        for now, env, record in walk(seed):
            down = windows(env, now, env._down_start, env._down_end)
            if "servers" in record:
                idle = record["servers"][:, S_IDX["idle"]] > 0.5
                assert not (idle & np.array(down)).any()
                seen_down += sum(down)
                back = np.array([end <= now for end in env._down_end])
                seen_back += int((idle & back).any())
            else:
                assert not any(down[n] for n in record["gang"])
    assert seen_down > 0 and seen_back > 0


def test_a_gang_runs_at_its_slowest_member_s_speed_now() -> None:
    slowed_launches = 0
    for seed in range(4):
        for now, env, record in walk(seed):
            slowed = windows(env, now, env._slow_start, env._slow_end)
            speeds = [
                base * (FAULTS.slow_factor if s else 1.0) for base, s in zip(CFG.speeds, slowed, strict=True)
            ]
            if "servers" in record:
                np.testing.assert_allclose(record["servers"][:, S_IDX["speed"]], speeds, rtol=1e-6)
            else:
                k, slowest = len(record["gang"]), min(speeds[n] for n in record["gang"])
                assert record["run_s"] == pytest.approx(CFG.profile.step_s[k] * record["steps"] / slowest)
                slowed_launches += any(slowed[n] for n in record["gang"])
    assert slowed_launches > 0


def test_faults_need_warm_event_driven_episodes_with_initial_tasks() -> None:
    with pytest.raises(ValueError, match="faults need"):
        warm_config(8, 0.1, faults=FAULTS, tick_s=0.5)
    with pytest.raises(ValueError, match="slow factor"):
        ServerFaults(slow_factor=0.0)
