"""A calibrated profile's quality curve replaces the paper's wherever the simulators turn steps into quality.

The calibrated profiles here copy the reference timings, so an episode under them follows the reference
profile's trajectory step for step: only quality, reward and the lower bound's step count may differ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.obs import T_IDX, ObservationSpec
from policy_models.policies.heuristics import GreedyPolicy, LaunchOutlook, ReuseAwarePolicy
from policy_models.profiles import (
    PROFILES,
    QUALITY_CURVES,
    REFERENCE,
    QualityCurve,
    TimingProfile,
    min_steps_for_quality,
    profile_min_steps,
    profile_quality,
    profile_quality_table,
    quality_of_steps,
    quality_table,
    register_profile,
)
from policy_models.sim.batched import BatchedClusterSim
from policy_models.sim.env import ClusterEnv
from policy_models.sim.stats import EpisodeStats
from tests.policy_models.sim.test_batched_equivalence import assert_same_trajectories

CALIBRATED = "calibrated-quality-test"
FLAT = "calibrated-quality-test-flat"
# Clearly not the paper's: starts at 2 steps, flat from 12, and reaches the 0.25 threshold at 8 steps
# (the paper's curve needs 21).
CURVE = QualityCurve(a=0.05, b=0.15, min_steps=2, flat_from=12)
# Quality that does not grow with steps: every extra step only costs time.
FLAT_CURVE = QualityCurve(a=0.0, b=0.3, min_steps=1, flat_from=1)
SEEDS = [3, 4, 5]
STEPS = 10
Build = Callable[..., SimConfig]  # paper_config or warm_config


def reference_timings(name: str) -> TimingProfile:
    return TimingProfile(name=name, step_s=dict(REFERENCE.step_s), init_s=dict(REFERENCE.init_s))


@pytest.fixture
def calibrated() -> Iterator[str]:
    """Registers the calibrated profiles for one test and removes them afterwards."""
    register_profile(reference_timings(CALIBRATED), CURVE)
    register_profile(reference_timings(FLAT), FLAT_CURVE)
    try:
        yield CALIBRATED
    finally:
        for name in (CALIBRATED, FLAT):
            PROFILES.pop(name, None)
            QUALITY_CURVES.pop(name, None)


def launch_at(cfg: SimConfig, steps: int, n: int) -> np.ndarray:
    """(n, action_dim) actions that always try to launch the first visible task with `steps` steps."""
    action = np.full(cfg.action_dim, -1.0)
    action[0] = 1.0
    action[1] = GreedyPolicy(cfg).steps_to_action(np.array(steps))
    action[2] = 1.0
    return np.tile(action, (n, 1))


def single_episodes(cfg: SimConfig, steps: int) -> tuple[list[EpisodeStats], list[list[float]]]:
    """One episode per seed in SEEDS, always launching at `steps`: stats and the reward of each decision."""
    stats, rewards = [], []
    for seed in SEEDS:
        env = ClusterEnv(cfg)
        env.reset(seed=seed)
        action, got, done, info = launch_at(cfg, steps, 1)[0], [], False, {}
        while not done:
            _, reward, terminated, truncated, info = env.step(action)
            got.append(reward)
            done = terminated or truncated
        stats.append(info["episode"])
        rewards.append(got)
    return stats, rewards


def batched_episodes(cfg: SimConfig, steps: int) -> dict[int, EpisodeStats]:
    """The first finished episode of each env of the batched simulator under the same fixed actions."""
    sim = BatchedClusterSim(cfg, SEEDS)
    sim.reset()
    actions, first = launch_at(cfg, steps, len(SEEDS)), {}
    while len(first) < len(SEEDS):
        for j, episode in sim.step(actions).finished:
            first.setdefault(j, episode)
    return first


# ----- the lookup functions ---------------------------------------------------------------------------
def test_profiles_without_a_curve_keep_the_papers_numbers_exactly(calibrated: str) -> None:
    for name in ("reference", "paper-table-vi", "no-such-profile"):
        assert profile_quality_table(name, 32).tobytes() == quality_table(32).tobytes()
        assert profile_min_steps(name, 0.25, 32) == min_steps_for_quality(0.25, 32) == 21
        assert profile_quality(name)(17) == quality_of_steps(17)


def test_a_registered_curve_replaces_the_papers(calibrated: str) -> None:
    np.testing.assert_array_equal(profile_quality_table(calibrated, 32), CURVE.table(32))
    assert profile_min_steps(calibrated, 0.25, 32) == 8
    assert profile_min_steps(calibrated, 0.99, 32) == 32  # never reached: max_steps, as for the paper
    assert profile_quality(calibrated)(STEPS) == CURVE(STEPS)


# ----- the simulators ---------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [paper_config, warm_config], ids=["paper", "warm"])
def test_both_simulators_score_launches_with_the_calibrated_curve(calibrated: str, build: Build) -> None:
    paper_cfg = build(4, 0.2)
    cfg = build(4, 0.2, profile_name=calibrated)
    expected_q, paper_q = CURVE(STEPS), quality_of_steps(STEPS)
    assert abs(expected_q - paper_q) > 0.05, "the test curve must differ clearly from the paper's"
    stats, rewards = single_episodes(cfg, STEPS)
    paper_stats, paper_rewards = single_episodes(paper_cfg, STEPS)
    for episode, paper_episode, got, paper_got in zip(
        stats, paper_stats, rewards, paper_rewards, strict=True
    ):
        assert episode.launched > 0
        assert episode.mean_quality == pytest.approx(expected_q, rel=1e-12)
        assert paper_episode.mean_quality == pytest.approx(paper_q, rel=1e-12)
        # Same timings, same trajectory: each launch's reward moves by 10 * the quality difference.
        launches = np.asarray(paper_got) != 0.0
        np.testing.assert_allclose(
            np.asarray(got)[launches] - np.asarray(paper_got)[launches], 10.0 * (expected_q - paper_q)
        )
        assert episode.below_threshold == 0 and paper_episode.below_threshold == episode.launched
        # The lower bound runs every task at the fewest steps meeting the threshold: 8 here, 21 for the paper.
        assert episode.lower_bound_s == pytest.approx(paper_episode.lower_bound_s * 8 / 21, rel=1e-12)
    for j, episode in batched_episodes(cfg, STEPS).items():
        assert episode.as_dict() == pytest.approx(stats[j].as_dict(), rel=1e-9)


@pytest.mark.parametrize("build", [paper_config, warm_config], ids=["paper", "warm"])
def test_single_and_batched_simulators_agree_under_a_calibrated_profile(
    calibrated: str, build: Build
) -> None:
    finished = assert_same_trajectories(
        build(4, 0.1, profile_name=calibrated), seeds=list(range(6)), n_steps=200, action_seed=3
    )
    assert finished > 0


# ----- the heuristics ---------------------------------------------------------------------------------
def test_launch_outlook_rewards_follow_the_calibrated_curve(calibrated: str) -> None:
    """LaunchOutlook predicts exactly the reward the simulator pays (all 10 waiting tasks are visible)."""
    cfg = paper_config(4, 0.05, profile_name=calibrated)
    env = ClusterEnv(cfg)
    obs, _ = env.reset(seed=1)
    outlook = LaunchOutlook({k: v[None] for k, v in obs.items()}, cfg, ObservationSpec.from_config(cfg))
    steps = np.arange(cfg.min_steps, cfg.max_steps + 1)
    predicted = outlook.rewards(steps)[0]
    feasible = np.flatnonzero(obs["tasks"][:, T_IDX["feasible"]] > 0.5)
    assert feasible.size > 0
    for slot in feasible[:3]:
        for s in (1, 2, 5, STEPS, 20, 32):
            action = np.full(cfg.action_dim, -1.0)
            action[[0, 1, 2 + slot]] = 1.0, GreedyPolicy(cfg).steps_to_action(np.array(s)), 1.0
            _, reward, *_ = copy.deepcopy(env).step(action)
            assert predicted[slot, s - cfg.min_steps] == pytest.approx(reward, rel=1e-12, abs=1e-12)


def test_reuse_heuristic_spends_no_steps_a_flat_curve_does_not_pay_for(calibrated: str) -> None:
    """With quality flat in steps the fewest steps are best; under the paper's curve (0 below 5) never."""
    for name, low in ((FLAT, True), ("reference", False)):
        cfg = paper_config(4, 0.05, profile_name=name)
        policy = ReuseAwarePolicy(cfg)
        sim = BatchedClusterSim(cfg, SEEDS)
        obs, launches = sim.reset(), 0
        for _ in range(40):
            actions = policy.act(obs)
            launching = actions[:, 0] > 0
            launches += launching.sum()
            at_min = actions[launching, 1] == GreedyPolicy(cfg).steps_to_action(np.array(cfg.min_steps))
            assert at_min.all() if low else not at_min.any()
            obs = sim.step(actions).obs
        assert launches > 0
