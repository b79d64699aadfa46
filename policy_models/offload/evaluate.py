"""Evaluation of the offloading policies on fixed seeds: the table, the optimality gap and the decision
time. Every policy of a size plays the same instances (one per seed), so drl-convex's advantage over a
baseline is a paired per-seed difference with its Student-t 95% interval.

"The best fixed-split baseline" of a size is whichever of all-local (s = 0), all-edge (s = T) and
fixed-third (s = T/3) has the highest mean utility there on the evaluation seeds themselves: a choice in
hindsight that favours the baseline.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from policy_models.evaluation import estimate
from policy_models.offload.model import (
    AccuracyCurve,
    Instance,
    OffloadConfig,
    default_config,
    default_curve,
    fit_batch_beta,
    make_instance,
    score,
)
from policy_models.offload.net import WEIGHTS_DIR
from policy_models.offload.optimal import optimal_assignment
from policy_models.offload.policies import FIXED_SPLIT_POLICIES, POLICY_NAMES, make_policy

EVAL_SEEDS = range(1000, 1040)
USERS = (8, 16, 32, 64)
SERVERS = (1, 2, 4, 8)
OPTIMAL_MAX_USERS = 8  # the exact optimum takes about a second per instance at N = 8, K = 8


def instance_config(config: OffloadConfig | None, batch_speedup: Mapping[int, float] | None) -> OffloadConfig:
    """The instance configuration, with beta fitted from a measured speedup table when given."""
    config = config or default_config()
    return replace(config, beta=fit_batch_beta(batch_speedup)) if batch_speedup else config


def instances_of(
    n_users: int, n_servers: int, seeds: Iterable[int], curve: AccuracyCurve, config: OffloadConfig
) -> list[Instance]:
    return [make_instance(seed, n_users, n_servers, curve, config) for seed in seeds]


def per_seed(policy_name: str, instances: Sequence[Instance], weights_dir: Path) -> dict[str, np.ndarray]:
    """Per-seed mean utility, latency and accuracy of a policy."""
    assignments = make_policy(policy_name, weights_dir).solve_many(instances)
    means = [score(inst, a).means() for inst, a in zip(instances, assignments, strict=True)]
    return {key: np.array([m[key] for m in means]) for key in ("utility", "latency_s", "accuracy")}


def _paired(mine: np.ndarray, theirs: np.ndarray, prefix: str) -> dict[str, float]:
    gap = estimate(list(mine - theirs))
    base = float(np.mean(theirs))
    return {
        prefix: gap.mean,
        f"{prefix}_ci95": gap.ci95,
        f"{prefix}_relative": gap.mean / abs(base) if base else float("nan"),
    }


def evaluate(
    policies: Sequence[str] = POLICY_NAMES,
    users: Sequence[int] = USERS,
    servers: Sequence[int] = SERVERS,
    seeds: Iterable[int] = EVAL_SEEDS,
    curve: AccuracyCurve | None = None,
    batch_speedup: Mapping[int, float] | None = None,
    config: OffloadConfig | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    optimal_max_users: int = OPTIMAL_MAX_USERS,
) -> list[dict[str, Any]]:
    """One row per (policy, users, servers): mean per-user utility with its 95% half-width over seeds,
    mean latency and accuracy. The drl-convex rows also carry paired per-seed differences against the
    best fixed-split baseline (`vs_best_fixed`, named in `best_fixed`) and against greedy (`vs_greedy`):
    mean, `_ci95` half-width and `_relative` (mean difference / |baseline mean|). `optimal` is skipped
    above `optimal_max_users` users."""
    seeds = list(seeds)
    curve = curve or default_curve()
    config = instance_config(config, batch_speedup)
    rows: list[dict[str, Any]] = []
    for n in users:
        for k in servers:
            instances = instances_of(n, k, seeds, curve, config)
            names = [p for p in policies if p != "optimal" or n <= optimal_max_users]
            results = {name: per_seed(name, instances, weights_dir) for name in names}
            size_rows = {}
            for name, result in results.items():
                utility = estimate(list(result["utility"]))
                size_rows[name] = {
                    "policy": name,
                    "users": n,
                    "servers": k,
                    "utility": utility.mean,
                    "utility_ci95": utility.ci95,
                    "latency_s": float(result["latency_s"].mean()),
                    "accuracy": float(result["accuracy"].mean()),
                    "seeds": len(seeds),
                }
            if "drl-convex" in results:
                size_rows["drl-convex"].update(_comparisons(results))
            rows.extend(size_rows.values())
    return rows


def _comparisons(results: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    mine = results["drl-convex"]["utility"]
    extra: dict[str, Any] = {}
    fixed = [p for p in FIXED_SPLIT_POLICIES if p in results]
    if fixed:
        best = max(fixed, key=lambda p: float(results[p]["utility"].mean()))
        extra["best_fixed"] = best
        extra.update(_paired(mine, results[best]["utility"], "vs_best_fixed"))
    if "greedy" in results:
        extra.update(_paired(mine, results["greedy"]["utility"], "vs_greedy"))
    return extra


def optimality_gap(
    policy: str = "drl-convex",
    users: Sequence[int] = (4, 6, 8),
    servers: Sequence[int] = (1, 2),
    seeds: Iterable[int] = EVAL_SEEDS,
    curve: AccuracyCurve | None = None,
    config: OffloadConfig | None = None,
    weights_dir: Path = WEIGHTS_DIR,
) -> list[dict[str, Any]]:
    """Per size: the mean over seeds of (optimal total - policy total) / |optimal total|, its 95%
    half-width, the largest gap, and the relative gap of the means."""
    seeds = list(seeds)
    curve = curve or default_curve()
    config = config or default_config()
    chosen = make_policy(policy, weights_dir)
    rows = []
    for n in users:
        for k in servers:
            instances = instances_of(n, k, seeds, curve, config)
            best = np.array([score(inst, optimal_assignment(inst)).total for inst in instances])
            mine = np.array(
                [
                    score(inst, a).total
                    for inst, a in zip(instances, chosen.solve_many(instances), strict=True)
                ]
            )
            gaps = (best - mine) / np.abs(best)
            gap = estimate(list(gaps))
            rows.append(
                {
                    "policy": policy,
                    "users": n,
                    "servers": k,
                    "gap": gap.mean,
                    "gap_ci95": gap.ci95,
                    "gap_max": float(gaps.max()),
                    "gap_of_means": float((best.mean() - mine.mean()) / abs(best.mean())),
                    "optimal_utility": float(best.mean() / n),
                    "utility": float(mine.mean() / n),
                    "seeds": len(seeds),
                }
            )
    return rows


def decision_ms(
    policy: str = "drl-convex",
    users: int = 32,
    servers: int = 4,
    seeds: Iterable[int] = EVAL_SEEDS,
    curve: AccuracyCurve | None = None,
    config: OffloadConfig | None = None,
    weights_dir: Path = WEIGHTS_DIR,
) -> dict[str, float]:
    """Wall time to decide one round (placement and splits), one instance at a time, in the calling
    thread (set torch/BLAS threads to 1 for a one-core figure): median, 95th percentile and max."""
    curve = curve or default_curve()
    config = config or default_config()
    chosen = make_policy(policy, weights_dir)
    instances = instances_of(users, servers, seeds, curve, config)
    chosen.solve(instances[0])  # warm caches
    times = []
    for inst in instances:
        start = time.perf_counter()
        chosen.solve(inst)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "policy": policy,  # type: ignore[dict-item]
        "users": users,
        "servers": servers,
        "median_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
        "max_ms": times[-1],
    }
