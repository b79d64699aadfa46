"""Workloads: skewed model popularity, a ramp and bursts of arrivals, per-server memory settings."""

from __future__ import annotations

import numpy as np
import pytest

from policy_models.config import ArrivalPattern, SimConfig, warm_config
from policy_models.workload import (
    draw_uniforms,
    make_rng,
    rate_grid,
    uniforms_per_episode,
    workload_from_uniforms,
)

PATTERN = ArrivalPattern(
    ramp_s=100.0, ramp_from=0.25, burst_factor=5.0, burst_s=40.0, bursts=2, window_s=300.0
)


def workloads(cfg: SimConfig, episodes: int, seed: int = 0):
    rng = make_rng(seed)
    return workload_from_uniforms(np.stack([draw_uniforms(rng, cfg) for _ in range(episodes)]), cfg)


def test_models_follow_their_weights() -> None:
    weights = (4.0, 2.0, 1.0, 1.0)
    cfg = warm_config(8, 0.1, n_models=4, model_weights=weights)
    models = workloads(cfg, 2000).model.ravel()
    shares = np.bincount(models, minlength=5)[1:] / models.size
    np.testing.assert_allclose(shares, np.array(weights) / sum(weights), atol=0.01)


def test_uniform_models_without_weights_are_drawn_as_before() -> None:
    cfg = warm_config(8, 0.1, n_models=3)
    u = draw_uniforms(make_rng(3), cfg)[None]
    n, n0 = cfg.tasks_per_episode, cfg.initial_tasks
    model_u = u[0, n - n0 + n : n - n0 + 2 * n]
    expected = 1 + np.minimum((model_u * 3).astype(np.int64), 2)
    np.testing.assert_array_equal(workload_from_uniforms(u, cfg).model[0], expected)


def test_the_rate_ramps_up_and_bursts() -> None:
    cfg = warm_config(8, 0.1, arrival_pattern=PATTERN)
    burst_u = np.array([[0.5, 0.9]])  # bursts start at 150 s and 270 s
    rate = rate_grid(burst_u, cfg)[0]
    assert rate[0] == pytest.approx(0.1 * 0.25)
    assert rate[50] == pytest.approx(0.1 * (0.25 + 0.75 * 0.5))
    assert rate[120] == pytest.approx(0.1)
    assert rate[150] == rate[189] == pytest.approx(0.5)
    assert rate[190] == pytest.approx(0.1)
    assert rate[280] == pytest.approx(0.5)
    assert len(rate) == 1024


def test_patterned_arrivals_are_sorted_and_as_many_as_the_cumulative_rate_expects() -> None:
    """An inhomogeneous Poisson process expects Lambda(t) arrivals by t: the count in [0, 100 s), averaged
    over 400 episodes, matches the average of each episode's own cumulative rate (its bursts' draws)."""
    cfg = warm_config(8, 0.1, arrival_pattern=PATTERN, tasks_per_episode=64)
    assert uniforms_per_episode(cfg) == (64 - 10) + 2 * 64 + 2
    rng = make_rng(1)
    u = np.stack([draw_uniforms(rng, cfg) for _ in range(400)])
    wl = workload_from_uniforms(u, cfg)
    assert (np.diff(wl.arrival_s, axis=1) >= 0).all()
    later = wl.arrival_s[:, cfg.initial_tasks :]
    counted = (later < 100.0).sum(1)
    expected = rate_grid(u[:, -2:], cfg)[:, :100].sum(1)  # 1 s cells
    assert counted.mean() == pytest.approx(expected.mean(), abs=0.6)
    assert abs(expected.mean() - 0.1 * 100) > 1.0  # the pattern moves it away from a steady stream's
    steady = workloads(warm_config(8, 0.1, tasks_per_episode=64), 400).arrival_s[:, 10:]
    assert (steady < 100.0).sum(1).mean() == pytest.approx(0.1 * 100, abs=0.6)


def test_slot_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="warm-mode setting"):
        SimConfig(server_slots=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="one slot count"):
        warm_config(4, 0.1, server_slots=(1, 2))
    with pytest.raises(ValueError, match="largest of server_slots"):
        warm_config(4, 0.1, models_per_server=2, server_slots=(1, 3, 1, 1))
    with pytest.raises(ValueError, match="one positive weight"):
        warm_config(4, 0.1, n_models=3, model_weights=(1.0, 0.0, 1.0))
    cfg = warm_config(4, 0.1, models_per_server=3, server_slots=(1, 3, 2, 1))
    assert cfg.slots == (1, 3, 2, 1)
    assert SimConfig.from_dict(cfg.to_dict()) == cfg
    patterned = warm_config(4, 0.1, arrival_pattern=PATTERN, model_weights=(1.0, 2.0, 3.0))
    assert SimConfig.from_dict(patterned.to_dict()) == patterned
