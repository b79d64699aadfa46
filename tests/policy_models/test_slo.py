"""SLO attainment: standalone times, and the simulators' per-scale counts recomputed launch by launch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.sim.env import ClusterEnv
from policy_models.slo import GOODPUT_SCALE, SLO_SCALES, reference_steps, scale_label, standalone_table


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
