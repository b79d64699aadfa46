"""Task workloads: what arrives, when, asking for how many patches and which model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy_models.config import SimConfig


@dataclass(frozen=True)
class Workload:
    """Tasks in arrival order; arrays have a leading batch dimension (one row per episode)."""

    arrival_s: np.ndarray  # (E,T) float, non-decreasing along a row
    patches: np.ndarray  # (E,T) int, servers the task must run on together
    model: np.ndarray  # (E,T) int, model id >= 1
    slo_class: np.ndarray  # (E,T) int, 0 = interactive, 1 = batch (all 0 without SloClasses)
    # (E,N) per server: when it goes down and is back, when it slows down and recovers (inf = never).
    down_start: np.ndarray
    down_end: np.ndarray
    slow_start: np.ndarray
    slow_end: np.ndarray


def make_rng(seed: int | None) -> np.random.Generator:
    """The generator each environment owns (the same stream gymnasium's seeding gives for a seed)."""
    return np.random.Generator(np.random.PCG64(seed))


def uniforms_per_episode(cfg: SimConfig) -> int:
    bursts = cfg.arrival_pattern.bursts if cfg.arrival_pattern is not None else 0
    classes = cfg.tasks_per_episode if cfg.slo_classes is not None else 0
    faults = 4 * cfg.n_servers if cfg.faults is not None else 0
    return (cfg.tasks_per_episode - cfg.initial_tasks) + 2 * cfg.tasks_per_episode + bursts + classes + faults


def draw_uniforms(rng: np.random.Generator, cfg: SimConfig) -> np.ndarray:
    """One episode's randomness: a single draw, so batched resets cost one generator call per env."""
    return rng.random(uniforms_per_episode(cfg))


def workload_from_uniforms(u: np.ndarray, cfg: SimConfig) -> Workload:
    """`initial_tasks` wait at t=0, the rest arrive as a Poisson process of rate `arrival_rate`
    (exponential gaps by inverse transform), or shaped by `arrival_pattern`; patches are uniform over
    their choices, models uniform or by `model_weights`."""
    n, n0 = cfg.tasks_per_episode, cfg.initial_tasks
    bursts = cfg.arrival_pattern.bursts if cfg.arrival_pattern is not None else 0
    classes = n if cfg.slo_classes is not None else 0
    cuts = np.cumsum([n - n0, n, n, bursts, classes])
    gap_u, patch_u, model_u, burst_u, class_u, fault_u = np.split(u, cuts, axis=1)
    if cfg.arrival_pattern is None:
        gaps = -np.log1p(-gap_u) / cfg.arrival_rate
        later = np.cumsum(gaps, axis=1)
    else:  # unit-rate Poisson points mapped through the inverse cumulative rate
        later = patterned_arrivals(np.cumsum(-np.log1p(-gap_u), axis=1), burst_u, cfg)
    arrival = np.concatenate([np.zeros((u.shape[0], n0)), later], axis=1)
    choices = np.asarray(cfg.patch_choices, dtype=np.int64)
    patches = choices[np.minimum((patch_u * len(choices)).astype(np.int64), len(choices) - 1)]
    if cfg.model_weights is None:
        model = 1 + np.minimum((model_u * cfg.n_models).astype(np.int64), cfg.n_models - 1)
    else:
        cdf = np.cumsum(cfg.model_weights) / np.sum(cfg.model_weights)
        model = 1 + np.minimum(np.searchsorted(cdf, model_u, side="right"), cfg.n_models - 1)
    slo_class = np.zeros_like(model)
    if cfg.slo_classes is not None:
        slo_class = (class_u >= cfg.slo_classes.shares[0]).astype(np.int64)
    return Workload(arrival, patches, model, slo_class, *server_faults(fault_u, cfg))


def server_faults(fault_u: np.ndarray, cfg: SimConfig) -> tuple[np.ndarray, ...]:
    """(down_start, down_end, slow_start, slow_end), each (E, N), from 4 uniforms per server: whether it
    goes down, when, whether it slows down, when (inf where it does not)."""
    never = np.full((fault_u.shape[0], cfg.n_servers), np.inf)
    faults = cfg.faults
    if faults is None:
        return never, never, never, never
    down_u, down_at_u, slow_u, slow_at_u = np.split(fault_u, 4, axis=1)
    down_start = np.where(down_u < faults.down_share, down_at_u * faults.window_s, np.inf)
    slow_start = np.where(slow_u < faults.slow_share, slow_at_u * faults.window_s, np.inf)
    return down_start, down_start + faults.down_s, slow_start, slow_start + faults.slow_s


def rate_grid(burst_u: np.ndarray, cfg: SimConfig) -> np.ndarray:
    """(E, cells) arrival rate on each `grid_s` step up to the time limit, per episode."""
    pattern = cfg.arrival_pattern
    assert pattern is not None
    cells = int(np.ceil(cfg.time_limit_s / pattern.grid_s))
    start = np.arange(cells) * pattern.grid_s
    ramp = np.ones(cells)
    if pattern.ramp_s > 0:
        ramp = pattern.ramp_from + (1.0 - pattern.ramp_from) * np.minimum(start / pattern.ramp_s, 1.0)
    burst_start = burst_u * pattern.window_s  # (E, bursts)
    inside = (start >= burst_start[..., None]) & (start < burst_start[..., None] + pattern.burst_s)
    factor = np.where(inside.any(1), pattern.burst_factor, 1.0)
    return cfg.arrival_rate * ramp * factor


def patterned_arrivals(unit_points: np.ndarray, burst_u: np.ndarray, cfg: SimConfig) -> np.ndarray:
    """Arrival times whose cumulative rate reaches each unit-rate Poisson point (E, K); past the grid
    the last cell's rate goes on."""
    pattern = cfg.arrival_pattern
    assert pattern is not None
    rate = rate_grid(burst_u, cfg)
    cumulative = np.concatenate([np.zeros((rate.shape[0], 1)), np.cumsum(rate * pattern.grid_s, axis=1)], 1)
    cells = rate.shape[1]
    arrival = np.empty_like(unit_points)
    for e in range(unit_points.shape[0]):
        cell = np.minimum(np.searchsorted(cumulative[e], unit_points[e], side="right") - 1, cells - 1)
        arrival[e] = cell * pattern.grid_s + (unit_points[e] - cumulative[e, cell]) / rate[e, cell]
    return arrival


def sample_workload(rng: np.random.Generator, cfg: SimConfig) -> Workload:
    """One episode's workload (a batch of one row)."""
    return workload_from_uniforms(draw_uniforms(rng, cfg)[None], cfg)
