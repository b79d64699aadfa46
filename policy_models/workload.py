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


def make_rng(seed: int | None) -> np.random.Generator:
    """The generator each environment owns (the same stream gymnasium's seeding gives for a seed)."""
    return np.random.Generator(np.random.PCG64(seed))


def uniforms_per_episode(cfg: SimConfig) -> int:
    return (cfg.tasks_per_episode - cfg.initial_tasks) + 2 * cfg.tasks_per_episode


def draw_uniforms(rng: np.random.Generator, cfg: SimConfig) -> np.ndarray:
    """One episode's randomness: a single draw, so batched resets cost one generator call per env."""
    return rng.random(uniforms_per_episode(cfg))


def workload_from_uniforms(u: np.ndarray, cfg: SimConfig) -> Workload:
    """`initial_tasks` wait at t=0, the rest arrive as a Poisson process of rate `arrival_rate`
    (exponential gaps by inverse transform); patches and models are uniform over their choices."""
    n, n0 = cfg.tasks_per_episode, cfg.initial_tasks
    gap_u, patch_u, model_u = np.split(u, [n - n0, n - n0 + n], axis=1)
    gaps = -np.log1p(-gap_u) / cfg.arrival_rate
    arrival = np.concatenate([np.zeros((u.shape[0], n0)), np.cumsum(gaps, axis=1)], axis=1)
    choices = np.asarray(cfg.patch_choices, dtype=np.int64)
    patches = choices[np.minimum((patch_u * len(choices)).astype(np.int64), len(choices) - 1)]
    model = 1 + np.minimum((model_u * cfg.n_models).astype(np.int64), cfg.n_models - 1)
    return Workload(arrival_s=arrival, patches=patches, model=model)


def sample_workload(rng: np.random.Generator, cfg: SimConfig) -> Workload:
    """One episode's workload (a batch of one row)."""
    return workload_from_uniforms(draw_uniforms(rng, cfg)[None], cfg)
