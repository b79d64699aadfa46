"""SLO attainment: standalone times, and the simulators' per-scale counts recomputed launch by launch."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.obs import T_IDX, TASK_FEATURES
from policy_models.sim.env import ClusterEnv
from policy_models.slo import (
    GOODPUT_SCALE,
    SLO_SCALES,
    class_limits,
    reference_steps,
    scale_label,
    standalone_table,
)
from policy_models.suites import hard_suite


def test_reference_steps_reach_the_quality_threshold_on_the_papers_curve() -> None:
    # 0.16 * log6(s) - 0.02 >= 0.25 first at s = 21 (log6(20) = 1.672, log6(21) = 1.699).
    assert reference_steps(paper_config(4, 0.05)) == 21


def test_standalone_time_is_the_reference_run_plus_the_setup_of_a_warm_gang() -> None:
    paper = standalone_table(paper_config(4, 0.05))
    assert paper[1] == pytest.approx(0.315 * 21)
    assert paper[4] == pytest.approx(0.14 * 21)
    assert math.isnan(paper[3])  # no gang of 3 in the profile
    warm = standalone_table(warm_config(8, 0.1))
    assert warm[8] == pytest.approx(0.3 + 0.1 * 21)  # group_setup_s of the reference profile


def test_scale_labels() -> None:
    assert [scale_label(s) for s in SLO_SCALES] == ["1.0x", "1.25x", "1.5x", "2.0x"]


def _episode_with_launches(cfg: SimConfig, seed: int, launch_share: float) -> tuple[object, list[dict]]:
    env = ClusterEnv(cfg)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    launches = []
    while True:
        action = rng.uniform(-1.0, 1.0, cfg.action_dim)
        action[0] = 1.0 if rng.random() < launch_share else -1.0
        _, _, terminated, truncated, info = env.step(action)
        if info["launched"]:
            launches.append(info)
        if terminated or truncated:
            return info["episode"], launches


@pytest.mark.parametrize(
    "cfg",
    [
        paper_config(4, 0.05),
        paper_config(8, 0.1),
        warm_config(8, 0.1),
        paper_config(4, 0.03, time_limit_s=120.0),
    ],
    ids=["paper-4", "paper-8", "warm-8", "paper-4-truncated"],
)
def test_slo_counts_match_the_launches(cfg: SimConfig) -> None:
    standalone = standalone_table(cfg)
    for seed in range(3):
        episode, launches = _episode_with_launches(cfg, seed, launch_share=0.6)
        for scale, met in zip(SLO_SCALES, episode.slo_met, strict=True):
            expected = sum(info["response_s"] <= scale * standalone[len(info["gang"])] for info in launches)
            assert met == expected
        assert list(episode.slo_met) == sorted(episode.slo_met)  # a looser SLO is met at least as often
        assert episode.makespan_s >= episode.end_time_s
        assert 0.0 <= episode.slo_attainment(2.0) <= episode.launched / episode.arrived


def test_a_reload_misses_every_slo() -> None:
    """Paper mode: a reload (24-32 s) exceeds 2x any standalone time (at most 2 x 0.315 x 21 = 13.2 s),
    so only launches on a loaded group count."""
    cfg = paper_config(4, 0.05)
    reloads = 0
    standalone = standalone_table(cfg)
    for seed in range(6):
        episode, launches = _episode_with_launches(cfg, seed, launch_share=0.8)
        assert sum(episode.slo_met) == sum(
            sum(info["response_s"] <= scale * standalone[len(info["gang"])] for scale in SLO_SCALES)
            for info in launches
            if not info["reloaded"]
        )
        reloads += sum(info["reloaded"] for info in launches)
    assert reloads > 0


def test_goodput_counts_tasks_within_the_goodput_scale_per_minute() -> None:
    episode, _ = _episode_with_launches(paper_config(8, 0.1), seed=4, launch_share=0.9)
    met = episode.slo_met[SLO_SCALES.index(GOODPUT_SCALE)]
    assert episode.goodput_per_min == pytest.approx(60.0 * met / episode.makespan_s)


# ----- per-task deadlines in SLO classes ---------------------------------------------------------------
def _hard_pair() -> tuple[SimConfig, SimConfig]:
    """A hard cluster with SLO classes and the same cluster without (same first-episode workloads)."""
    # Without faults: their draws come after the classes', so removing classes would move them.
    with_classes = dataclasses.replace(hard_suite().settings[1], faults=None)
    return with_classes, dataclasses.replace(with_classes, slo_classes=None)


def test_meeting_a_deadline_adds_the_class_bonus_and_nothing_else_changes() -> None:
    with_classes, without = _hard_pair()
    limits, bonus = class_limits(with_classes), with_classes.slo_classes.bonus
    envs = [ClusterEnv(with_classes), ClusterEnv(without)]
    observations = [env.reset(seed=7)[0] for env in envs]
    rng = np.random.default_rng(7)
    met = {0: 0, 1: 0}
    for _ in range(200):
        a, b = observations
        np.testing.assert_array_equal(a["tasks"][..., : len(TASK_FEATURES)], b["tasks"])
        action = rng.uniform(-1.0, 1.0, with_classes.action_dim)
        (obs_a, reward_a, done_a, cut_a, info_a), (obs_b, reward_b, *_rest) = (
            env.step(action) for env in envs
        )
        observations = [obs_a, obs_b]
        if info_a["launched"]:
            c, k = info_a["slo_class"], len(info_a["gang"])
            assert info_a["deadline_met"] == (info_a["response_s"] <= limits[c, k])
            assert reward_a == pytest.approx(reward_b + (bonus[c] if info_a["deadline_met"] else 0.0))
            met[c] += info_a["deadline_met"]
        if done_a or cut_a:
            episode = info_a["episode"]
            assert (episode.class0_met, episode.class1_met) == (met[0], met[1])
            assert episode.class0_arrived + episode.class1_arrived == episode.arrived
            assert episode.class1_arrived > 0 and episode.class0_arrived > 0
            break
    assert met[0] + met[1] > 0  # the bonus was exercised


def test_the_slack_feature_is_the_time_left_to_the_own_deadline() -> None:
    cfg, _ = _hard_pair()
    env = ClusterEnv(cfg)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(40):
        obs, *_rest = env.step(rng.uniform(-1.0, 1.0, cfg.action_dim))
    view = env.view()
    limits = class_limits(cfg)
    for j, (k, c, waited) in enumerate(
        zip(view.task_patches, view.task_class, view.task_waiting_s, strict=False)
    ):
        assert obs["tasks"][j, T_IDX["interactive"]] == (c == 0)
        assert obs["tasks"][j, T_IDX["slack"]] == np.float32((limits[c, k] - waited) / 100.0)


def test_without_slo_classes_no_deadline_counts_and_the_tokens_keep_their_width() -> None:
    cfg = paper_config(4, 0.05)
    episode, _ = _episode_with_launches(cfg, seed=1, launch_share=0.7)
    assert episode.class0_met == episode.class1_met == episode.class1_arrived == 0
    assert episode.class0_arrived == episode.arrived
    assert ClusterEnv(cfg).observation_space["tasks"].shape == (cfg.visible_queue, len(TASK_FEATURES))
