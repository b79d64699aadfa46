"""Simulator throughput: decisions per second of the single gymnasium env and of the batched simulator.

For each cluster size N the setting is paper mode with the arrival rate scaled as 0.05 * N / 4 (the
load per server of the paper's N=4, lambda=0.05 setting) and the paper's patch choices. Actions are
uniform random in [-1, 1], drawn before timing from a fixed seed, so the clock sees only the simulator.
Speed is reported as a ratio against the single environment at the same N measured in the same run
(DESIGN section 5), with the machine stated.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from policy_models.config import SimConfig, paper_config
from policy_models.sim.batched import BatchedClusterSim
from policy_models.sim.env import ClusterEnv
from tinyworld.weights import cpu_model

DEFAULT_NODES = (4, 8, 12, 64, 256)
DEFAULT_BATCHES = (1, 64, 1024)
DEFAULT_SECONDS = 1.5
QUICK_SECONDS = 0.2
ACTION_SEED = 0
# Actions are drawn ahead of timing into a pool of this many decision rows and cycled, so every batch
# size sees many distinct actions while the clock measures only the simulator.
ACTION_POOL_ROWS = 1 << 16
BASE_RATE_PER_4_NODES = 0.05


@dataclass(frozen=True)
class BenchResult:
    nodes: int
    batch: int
    kind: str  # "single" (ClusterEnv) or "batched" (BatchedClusterSim)
    decisions_per_s: float
    us_per_decision: float
    speedup_vs_single: float


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def bench_config(nodes: int) -> SimConfig:
    return paper_config(nodes, BASE_RATE_PER_4_NODES * nodes / 4)


def action_pool(cfg: SimConfig, batch: int, seed: int) -> np.ndarray:
    """(steps, batch, action_dim) uniform actions; at least one step, about ACTION_POOL_ROWS rows."""
    steps = max(1, ACTION_POOL_ROWS // batch)
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(steps, batch, cfg.action_dim))


def calls_per_second(step: Callable[[], None], seconds: float, warmup_s: float) -> float:
    """Call `step` for `warmup_s` untimed, then for `seconds`; calls per second of the timed part."""
    _run_for(step, warmup_s)
    calls, elapsed = _run_for(step, seconds)
    return calls / elapsed


def _run_for(step: Callable[[], None], seconds: float) -> tuple[int, float]:
    clock = time.perf_counter
    start = clock()
    calls = 0
    # At least one call, so a zero warm-up still touches every code path once.
    while True:
        step()
        calls += 1
        elapsed = clock() - start
        if elapsed >= seconds:
            return calls, elapsed


def single_stepper(cfg: SimConfig, seed: int) -> Callable[[], None]:
    env = ClusterEnv(cfg)
    env.reset(seed=seed)
    pool = action_pool(cfg, 1, seed)[:, 0]
    index = 0

    def step() -> None:
        nonlocal index
        _, _, terminated, truncated, _ = env.step(pool[index % len(pool)])
        index += 1
        if terminated or truncated:
            env.reset()  # the env's own generator continues: a fresh episode, as the batched sim does

    return step


def batched_stepper(cfg: SimConfig, batch: int, seed: int) -> Callable[[], None]:
    sim = BatchedClusterSim(cfg, [seed + i for i in range(batch)])
    sim.reset()
    pool = action_pool(cfg, batch, seed)
    index = 0

    def step() -> None:
        nonlocal index
        sim.step(pool[index % len(pool)])  # finished environments reset themselves
        index += 1

    return step


def bench_nodes(
    nodes: int, batches: Sequence[int], seconds: float, warmup_s: float, seed: int
) -> list[BenchResult]:
    cfg = bench_config(nodes)
    single = calls_per_second(single_stepper(cfg, seed), seconds, warmup_s)
    results = [_result(nodes, 1, "single", single, single)]
    for batch in batches:
        rate = batch * calls_per_second(batched_stepper(cfg, batch, seed), seconds, warmup_s)
        results.append(_result(nodes, batch, "batched", rate, single))
    return results


def _result(nodes: int, batch: int, kind: str, rate: float, single_rate: float) -> BenchResult:
    return BenchResult(nodes, batch, kind, rate, 1e6 / rate, rate / single_rate)


def run_sim_bench(
    nodes: Sequence[int] = DEFAULT_NODES,
    batches: Sequence[int] = DEFAULT_BATCHES,
    seconds: float = DEFAULT_SECONDS,
    warmup_s: float | None = None,
    seed: int = ACTION_SEED,
) -> dict[str, Any]:
    """The full report: machine, method and one result per (N, kind, batch)."""
    warmup = seconds / 5 if warmup_s is None else warmup_s
    results = [r for n in nodes for r in bench_nodes(n, batches, seconds, warmup, seed)]
    return {
        "machine": machine_info(),
        "method": {
            "setting": "paper mode, arrival rate 0.05*N/4, patch choices as paper_config",
            "action_seed": seed,
            "env_seeds": "seed + i for batched environment i; seed for the single environment",
            "action_distribution": (
                "uniform on [-1, 1] per component of each 2+Q action, numpy default_rng(seed), "
                f"drawn before timing into a pool of ~{ACTION_POOL_ROWS} decision rows, cycled"
            ),
            "seconds_per_measurement": seconds,
            "warmup_s": warmup,
            "baseline": "speedup_vs_single = decisions/s over the single ClusterEnv at the same N, same run",
        },
        "results": [asdict(r) for r in results],
    }


def format_table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"machine: {machine['cpu_model']}, {machine['cores']} cores, python {machine['python']}, "
        f"numpy {machine['numpy']}",
        f"{'N':>5} {'kind':>8} {'batch':>6} {'decisions/s':>13} {'us/decision':>12} {'vs single':>10}",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['nodes']:>5} {r['kind']:>8} {r['batch']:>6} {r['decisions_per_s']:>13,.0f} "
            f"{r['us_per_decision']:>12.2f} {r['speedup_vs_single']:>9.2f}x"
        )
    return "\n".join(lines)
