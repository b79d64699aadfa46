"""The rollout teacher: candidates, lockstep rollouts over sampled futures, and the z test."""

from __future__ import annotations

import numpy as np
import pytest

from policy_models.config import paper_config
from policy_models.learning.rollout import (
    RolloutSettings,
    candidate_actions,
    decide,
    rollout_returns,
)
from policy_models.obs import batch_of_one
from policy_models.policies.base import TaskFeatures
from policy_models.policies.heuristics import ReuseAwarePolicy
from policy_models.selector import decode_steps
from policy_models.sim.env import ClusterEnv

CFG = paper_config(4, 0.07)


def state_with_choices(seed: int = 1000) -> tuple[ClusterEnv, dict[str, np.ndarray], ReuseAwarePolicy]:
    """The first state of an episode where the base launches and two or more tasks are feasible."""
    env, base = ClusterEnv(CFG), ReuseAwarePolicy(CFG)
    obs, _ = env.reset(seed=seed)
    while True:
        action = base.act(batch_of_one(obs))[0]
        if action[0] > 0 and TaskFeatures(batch_of_one(obs), CFG).feasible[0].sum() >= 2:
            return env, obs, base
        obs, *_ = env.step(action)


def decision_of(action: np.ndarray) -> tuple[bool, int, int]:
    launches = bool(action[0] > 0)
    return launches, int(np.argmax(action[2:])), decode_steps(float(action[1]), CFG.min_steps, CFG.max_steps)


def test_candidates_start_with_the_base_action_and_are_distinct_feasible_decisions() -> None:
    _, obs, base = state_with_choices()
    base_action = np.clip(base.act(batch_of_one(obs))[0], -1, 1)
    candidates = candidate_actions(base_action, obs, CFG, (-4, 4))
    np.testing.assert_array_equal(candidates[0], base_action)
    decisions = [decision_of(c) if c[0] > 0 else (False, -1, -1) for c in candidates]
    assert len(set(decisions)) == len(decisions)
    assert (False, -1, -1) in decisions  # waiting is a candidate when the base launches
    feasible = set(np.flatnonzero(TaskFeatures(batch_of_one(obs), CFG).feasible[0]).tolist())
    assert {slot for launches, slot, _ in decisions if launches} == feasible
    _, base_slot, base_steps = decision_of(base_action)
    moved = {steps for launches, slot, steps in decisions if launches and slot == base_slot}
    in_range = set(range(CFG.min_steps, CFG.max_steps + 1))
    assert moved == {base_steps - 4, base_steps, base_steps + 4} & in_range


def test_a_steps_only_search_moves_only_the_base_decisions_step_count() -> None:
    _, obs, base = state_with_choices()
    base_action = np.clip(base.act(batch_of_one(obs))[0], -1, 1)
    candidates = candidate_actions(base_action, obs, CFG, (-4, 4), task_changes=False)
    _, base_slot, base_steps = decision_of(base_action)
    assert [decision_of(c) for c in candidates] == [
        (True, base_slot, base_steps + delta) for delta in (0, -4, 4) if 1 <= base_steps + delta <= 32
    ]
    waits = base_action.copy()
    waits[0] = -1.0
    assert len(candidate_actions(waits, obs, CFG, (-4, 4), task_changes=False)) == 1


def test_lockstep_returns_equal_the_base_policy_run_on_each_future_alone() -> None:
    env, obs, base = state_with_choices()
    base_action = np.clip(base.act(batch_of_one(obs))[0], -1, 1)
    candidates = candidate_actions(base_action, obs, CFG, (-4, 4))
    before = (env.now, env.episode_stats())
    returns = rollout_returns(env, candidates, base, 3, np.random.default_rng(7))
    assert (env.now, env.episode_stats()) == before  # the forks moved, the env did not
    assert returns.shape == (len(candidates), 3)
    futures = np.random.default_rng(7).integers(0, 2**63 - 1, size=3)
    for s, future in enumerate(futures):
        fork = env.fork(np.random.default_rng(int(future)))
        total, done, action = 0.0, False, candidates[1]
        while not done:
            step_obs, reward, terminated, truncated, _ = fork.step(action)
            total += reward
            done = terminated or truncated
            action = base.act(batch_of_one(step_obs))[0]
        assert returns[1, s] == pytest.approx(total, rel=1e-12)


def test_without_evidence_the_teacher_keeps_the_base_action() -> None:
    env, obs, base = state_with_choices()
    decision = decide(env, obs, base, RolloutSettings(samples=4, z=1e9), np.random.default_rng(0))
    np.testing.assert_array_equal(decision.action, decision.base_action)
    assert decision.gain == 0.0 and decision.candidates > 2


@pytest.mark.slow
def test_the_teacher_improves_on_the_reuse_heuristic_over_whole_episodes() -> None:
    """Seeds 1000-1001 at N=4, rate 0.07, 8 futures per candidate: the teacher's episodes earn more."""
    from policy_models.learning.demos import base_episode_utility, teacher_episode

    base = ReuseAwarePolicy(CFG)
    settings = RolloutSettings(samples=8, z=2.0)
    gains = []
    for seed in (1000, 1001):
        _, utility = teacher_episode(CFG, seed, base, settings, np.random.default_rng(seed))
        gains.append(utility - base_episode_utility(CFG, seed, base))
    assert np.mean(gains) > 0.0


def test_settings_refuse_too_few_samples() -> None:
    with pytest.raises(ValueError, match="samples"):
        RolloutSettings(samples=1)


@pytest.mark.slow
def test_label_and_lookahead_commands(tmp_path, capsys: pytest.CaptureFixture) -> None:
    import json

    from policy_models.learning.demos import load_directory
    from services.cli import main

    small = ["--nodes", "4", "--samples", "2", "--z", "0"]
    assert main(["label", *small, "--rate", "0.07", "--episodes", "1", "--out", str(tmp_path / "d")]) == 0
    (found,) = load_directory(tmp_path / "d")
    assert found.config == CFG and found.meta["seeds"] == [100_000]
    out = tmp_path / "lookahead.json"
    assert main(["lookahead", *small, "--rates", "0.07", "--seeds", "2", "--json", str(out)]) == 0
    assert "| 4 | 0.07 |" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())["rows"]
    assert row["seeds"] == [1000, 1001] and len(row["teacher_utility"]) == len(row["base_utility"]) == 2
