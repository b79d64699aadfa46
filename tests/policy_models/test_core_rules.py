"""Quality curve, profiles, reward, action decoding, gang selection and workloads."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy_models.config import RewardConfig, SimConfig, paper_configs
from policy_models.profiles import PROFILES, min_steps_for_quality, quality_of_steps
from policy_models.reward import launch_reward
from policy_models.selector import choose_task, decode_execute, decode_steps, select_gang_paper
from policy_models.workload import make_rng, sample_workload


def test_quality_curve_matches_the_reference_and_is_monotone() -> None:
    assert quality_of_steps(4) == 0.0
    assert quality_of_steps(6) == pytest.approx(0.16 - 0.02)
    assert quality_of_steps(30) == pytest.approx(0.16 * np.log(30) / np.log(6) - 0.02)
    values = [quality_of_steps(s) for s in range(0, 60)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert quality_of_steps(32) == quality_of_steps(30)  # no drop to 0.27 above 30 steps


def test_min_steps_for_quality() -> None:
    s = min_steps_for_quality(0.25, 32)
    assert quality_of_steps(s) >= 0.25 > quality_of_steps(s - 1)


def test_profiles_hold_the_published_constants() -> None:
    ref, table6 = PROFILES["reference"], PROFILES["paper-table-vi"]
    assert ref.step_s == {1: 0.315, 2: 0.15625, 4: 0.14, 8: 0.1}
    assert ref.init_s == {1: 24.0, 2: 24.0, 4: 32.0, 8: 30.0}
    assert (table6.init_s[1], table6.init_s[2], table6.init_s[4]) == (33.5, 31.9, 35.0)
    assert (table6.step_s[1], table6.step_s[2], table6.step_s[4]) == (0.53, 0.29, 0.20)


def test_reward_formula() -> None:
    cfg = RewardConfig()
    # 250 / (1*10 + 20 + 5) = 7.142857..., plus 10 * 0.2
    assert launch_reward(5.0, 20.0, 10.0, 0.2, cfg) == pytest.approx(250 / 35 + 2.0)
    assert launch_reward(0.0, 1.0, 0.0, 0.0, cfg) == 10.0  # the time term is capped
    arrays = launch_reward(np.array([5.0, 0.0]), np.array([20.0, 1.0]), np.zeros(2), np.zeros(2), cfg)
    assert arrays.tolist() == [pytest.approx(250 / 25), 10.0]


def test_quality_penalty_applies_below_threshold_only() -> None:
    cfg = RewardConfig(penalty=3.0, quality_threshold=0.25)
    base = RewardConfig(penalty=0.0, quality_threshold=0.25)
    assert launch_reward(1.0, 30.0, 0.0, 0.2, cfg) == launch_reward(1.0, 30.0, 0.0, 0.2, base) - 3.0
    assert launch_reward(1.0, 30.0, 0.0, 0.26, cfg) == launch_reward(1.0, 30.0, 0.0, 0.26, base)


@given(st.floats(-1.0, 1.0))
def test_decoded_steps_stay_in_range(value: float) -> None:
    assert 1 <= decode_steps(value, 1, 32) <= 32


def test_decoding_rules() -> None:
    assert decode_steps(-1.0, 1, 32) == 1 and decode_steps(1.0, 1, 32) == 32
    assert not decode_execute(-1.0) and not decode_execute(0.0) and decode_execute(1e-9)
    assert choose_task([0.1, 0.9, 0.9], [True, True, True]) == 1  # ties: the lowest slot
    assert choose_task([0.1, 0.9], [True, False]) == 0
    assert choose_task([0.1, 0.9], [False, False]) == -1


def test_paper_selector_reuses_an_exact_idle_group() -> None:
    idle = [True, True, True, True]
    group, gmodel = [0, 0, -1, -1], [1, 1, 0, 0]
    gang = select_gang_paper(2, 1, idle, group, gmodel)
    assert gang is not None and gang.reused and gang.members == (0, 1)


def test_paper_selector_keeps_loaded_groups_whole_when_free_servers_exist() -> None:
    idle = [True, True, True, True]
    group, gmodel = [0, 0, -1, -1], [1, 1, 0, 0]
    gang = select_gang_paper(1, 1, idle, group, gmodel)  # wrong size for the group: reload
    assert gang is not None and not gang.reused and gang.members == (2,)


def test_paper_selector_breaks_as_few_loaded_servers_as_it_can() -> None:
    idle = [True] * 6
    group, gmodel = [0, 0, 0, 3, 3, 5], [2, 2, 2, 2, 2, 2]
    # Model 1 is loaded nowhere. A pair taken whole loses 2 loaded servers; the singleton plus half the
    # pair would lose 3.
    gang = select_gang_paper(2, 1, idle, group, gmodel)
    assert gang is not None and not gang.reused and gang.members == (3, 4)
    # One free server plus the singleton covers 2 at the cost of 1 loaded server.
    gang = select_gang_paper(2, 1, [*idle, True], [*group, -1], [*gmodel, 0])
    assert gang is not None and gang.members == (5, 6)
    # Nothing covers 5 alone: take the largest group whole, then the next largest.
    gang = select_gang_paper(5, 1, idle, group, gmodel)
    assert gang is not None and gang.members == (0, 1, 2, 3, 4)


def test_workloads_follow_the_settings() -> None:
    cfg = SimConfig(n_servers=8, patch_choices=(1, 2, 4, 8), arrival_rate=0.1)
    wl = sample_workload(make_rng(0), cfg)
    arrival = wl.arrival_s[0]
    assert (arrival[: cfg.initial_tasks] == 0).all()
    assert (np.diff(arrival) >= 0).all()
    assert set(wl.patches[0].tolist()) <= set(cfg.patch_choices)
    gaps = np.concatenate(
        [np.diff(sample_workload(make_rng(s), cfg).arrival_s[0][cfg.initial_tasks - 1 :]) for s in range(200)]
    )
    assert gaps.mean() == pytest.approx(1 / cfg.arrival_rate, rel=0.05)


def test_paper_settings_are_the_tables() -> None:
    settings = [(c.n_servers, c.arrival_rate, c.patch_choices) for c in paper_configs()]
    assert len(settings) == 15
    assert settings[0] == (4, 0.01, (1, 2, 4)) and settings[-1] == (12, 0.19, (1, 2, 4, 8))


def test_invalid_config_names_the_problem() -> None:
    with pytest.raises(ValueError, match="patch_choices"):
        SimConfig(n_servers=2, patch_choices=(1, 4))
    with pytest.raises(ValueError, match="mode"):
        SimConfig(mode="hot")  # type: ignore[arg-type]


def test_config_round_trips_through_json() -> None:
    cfg = SimConfig(n_servers=8, patch_choices=(1, 2, 4, 8), server_speeds=(1.0,) * 8)
    assert SimConfig.from_dict(json.loads(cfg.to_json())) == cfg
